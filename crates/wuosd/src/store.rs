//! The daemon's embedded store (redb) in its data directory: what must survive a restart.
//!
//! Today that is the boot counter (every start gets a larger boot id, so neighbors can tell a
//! restart from a late packet) and the last own advert. Domains and intents join it later.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("blobs");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create data directory {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("store {path}: {message}")]
    Db { path: PathBuf, message: String },
}

pub struct Store {
    db: Database,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

/// The store's page cache.
const CACHE_BYTES: usize = 1 << 20;

impl Store {
    /// Opens (or creates) `data_dir/wuosd.redb`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Dir {
            path: data_dir.to_owned(),
            source,
        })?;
        let path = data_dir.join("wuosd.redb");
        // A small cache: the store holds little that is read twice (intents, pieces, decisions),
        // and redb's default (1 GiB) lets the daemon's RSS grow with everything ever written.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|e| StoreError::Db {
                path: path.clone(),
                message: e.to_string(),
            })?;
        Ok(Self { db, path })
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// A boot id larger than any this store handed out before, and larger than `floor` (the
    /// caller passes the wall clock in ms, so a wiped store still gets a fresh id).
    pub fn next_boot_id(&self, floor: u64) -> Result<u64, StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        let id = {
            let mut t = tx.open_table(META).map_err(|e| self.err(e))?;
            let last = t.get("boot_id").map_err(|e| self.err(e))?.map_or(0, |v| v.value());
            let id = last.max(floor) + 1;
            t.insert("boot_id", id).map_err(|e| self.err(e))?;
            id
        };
        tx.commit().map_err(|e| self.err(e))?;
        Ok(id)
    }

    pub fn put_blob(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
            t.insert(key, value).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Writes `puts` and removes `deletes` in one transaction (one commit to disk).
    pub fn update(&self, puts: &[(&str, &[u8])], deletes: &[&str]) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
            for (k, v) in puts {
                t.insert(*k, *v).map_err(|e| self.err(e))?;
            }
            for k in deletes {
                t.remove(*k).map_err(|e| self.err(e))?;
            }
        }
        tx.commit().map_err(|e| self.err(e))
    }

    pub fn delete_blob(&self, key: &str) -> Result<(), StoreError> {
        let tx = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut t = tx.open_table(BLOBS).map_err(|e| self.err(e))?;
            t.remove(key).map_err(|e| self.err(e))?;
        }
        tx.commit().map_err(|e| self.err(e))
    }

    /// Every blob whose key starts with `prefix`, in key order.
    pub fn blobs_with_prefix(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = match tx.open_table(BLOBS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(self.err(e)),
        };
        let mut out = Vec::new();
        for item in t.range(prefix..).map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    pub fn get_blob(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| self.err(e))?;
        let t = match tx.open_table(BLOBS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(self.err(e)),
        };
        Ok(t.get(key).map_err(|e| self.err(e))?.map(|v| v.value().to_vec()))
    }
}

impl wuos_model::Classify for StoreError {
    fn class(&self) -> wuos_model::ErrorClass {
        wuos_model::ErrorClass::Internal
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_ids_grow_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let a = Store::open(dir.path()).unwrap().next_boot_id(0).unwrap();
        let b = Store::open(dir.path()).unwrap().next_boot_id(0).unwrap();
        assert!(b > a, "a restart must get a larger boot id ({a} then {b})");
        let c = Store::open(dir.path()).unwrap().next_boot_id(1_000_000).unwrap();
        assert!(c > 1_000_000, "the floor wins when it is larger");
    }

    #[test]
    fn blobs_are_listed_by_prefix_and_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        for k in ["domain/b", "domain/a", "other", "domainz"] {
            s.put_blob(k, k.as_bytes()).unwrap();
        }
        let keys: Vec<String> = s
            .blobs_with_prefix("domain/")
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec!["domain/a", "domain/b"]);
        s.delete_blob("domain/a").unwrap();
        assert_eq!(s.blobs_with_prefix("domain/").unwrap().len(), 1);
        s.delete_blob("missing").unwrap();
    }

    #[test]
    fn an_update_puts_and_deletes_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        s.put_blob("pool/pool-0", b"p").unwrap();
        s.update(&[("domain/a", b"a")], &["pool/pool-0"]).unwrap();
        assert_eq!(s.get_blob("pool/pool-0").unwrap(), None);
        assert_eq!(s.get_blob("domain/a").unwrap().as_deref(), Some(&b"a"[..]));
    }

    #[test]
    fn blobs_persist() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path()).unwrap();
        assert_eq!(s.get_blob("own").unwrap(), None);
        s.put_blob("own", b"advert").unwrap();
        drop(s);
        assert_eq!(
            Store::open(dir.path()).unwrap().get_blob("own").unwrap().as_deref(),
            Some(&b"advert"[..])
        );
    }
}
