//! Files of the PKI directory: atomic replacement of a batch of files ([`Staged`]: a reader never
//! sees half a file) with each file's mode set before any byte is written, and the directory's
//! lock ([`DirLock`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Mode of private keys.
pub const PRIVATE: u32 = 0o600;
/// Mode of everything else.
pub const PUBLIC: u32 = 0o644;

/// Files replaced together, each atomically: [`Staged::write`] writes temporary files beside
/// their targets, [`Staged::commit`] flushes them all to disk, then renames each over its target
/// in the order written, then flushes again. A crash leaves each target old or new, never torn.
/// Temporary files of a batch that is dropped uncommitted are removed.
#[derive(Debug, Default)]
pub struct Staged {
    /// (temporary file, target), in the order written.
    files: Vec<(PathBuf, PathBuf)>,
}

impl Staged {
    /// Writes `bytes` to a temporary file for `path`, created with `mode`.
    pub fn write(&mut self, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let name = path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
        let tmp = path.with_file_name(format!(
            ".{name}.tmp.{}.{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let mut f = OpenOptions::new().write(true).create_new(true).mode(mode).open(&tmp)?;
        // Recorded before writing, so that a failed write is cleaned up too.
        self.files.push((tmp, path.to_path_buf()));
        f.write_all(bytes)
    }

    /// Flushes every temporary file, renames each over its target, and flushes the renames.
    pub fn commit(mut self) -> io::Result<()> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (_, target) in &self.files {
            let dir = match target.parent() {
                Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
                _ => PathBuf::from("."),
            };
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        sync_filesystems(&dirs)?;
        let mut files = std::mem::take(&mut self.files).into_iter();
        while let Some((tmp, target)) = files.next() {
            if let Err(e) = fs::rename(&tmp, &target) {
                let _ = fs::remove_file(&tmp);
                // The rest are removed on drop.
                self.files = files.collect();
                return Err(e);
            }
        }
        sync_filesystems(&dirs)
    }
}

/// Flushes the filesystems that hold `dirs` (`syncfs(2)`): one flush for every file written,
/// where an `fsync` per file costs a device flush each (seconds for a thousand certificates).
fn sync_filesystems(dirs: &[PathBuf]) -> io::Result<()> {
    for d in dirs {
        nix::unistd::syncfs(File::open(d)?).map_err(io::Error::from)?;
    }
    Ok(())
}

impl Drop for Staged {
    fn drop(&mut self) {
        for (tmp, _) in &self.files {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// An exclusive lock on a PKI directory, held while it is changed, so that two `wuos pki`
/// commands do not lose each other's index entries. Released when dropped.
#[derive(Debug)]
pub struct DirLock {
    file: File,
}

impl DirLock {
    /// Waits for and takes the lock file `path`.
    pub fn take(path: &Path) -> io::Result<DirLock> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(PRIVATE)
            .open(path)?;
        file.lock()?;
        Ok(DirLock { file })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
        let mut s = Staged::default();
        s.write(path, bytes, mode)?;
        s.commit()
    }

    #[test]
    fn atomic_writes_replace_whole_files_with_their_mode() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        write_atomic(&p, b"one", PRIVATE).unwrap();
        write_atomic(&p, b"two", PRIVATE).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "no temporary file is left behind: {names:?}");
    }

    #[test]
    fn a_failed_write_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a non-empty directory fails.
        let target = dir.path().join("d");
        fs::create_dir(&target).unwrap();
        fs::write(target.join("x"), b"").unwrap();
        assert!(write_atomic(&target, b"x", PUBLIC).is_err());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_batch_replaces_its_files_on_commit_only() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        fs::write(&a, b"old").unwrap();
        let mut s = Staged::default();
        s.write(&a, b"new a", PUBLIC).unwrap();
        s.write(&b, b"new b", PRIVATE).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"old", "nothing changes before commit");
        s.commit().unwrap();
        assert_eq!(
            (fs::read(&a).unwrap(), fs::read(&b).unwrap()),
            (b"new a".to_vec(), b"new b".to_vec())
        );
        assert_eq!(fs::metadata(&b).unwrap().permissions().mode() & 0o777, 0o600);

        let mut s = Staged::default();
        s.write(&a, b"dropped", PUBLIC).unwrap();
        drop(s);
        assert_eq!(fs::read(&a).unwrap(), b"new a", "a dropped batch changes nothing");
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            2,
            "and leaves no temporary file"
        );
    }

    #[test]
    fn the_lock_is_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".lock");
        let held = DirLock::take(&p).unwrap();
        let other = File::open(&p).unwrap();
        assert!(
            other.try_lock().is_err(),
            "a second lock must wait while the first is held"
        );
        drop(held);
        other.try_lock().expect("the lock is free once dropped");
    }
}
