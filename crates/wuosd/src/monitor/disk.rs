//! Disk: bytes read and written, from `/proc/diskstats` (whole machine),
//! `blkio.throttle.io_service_bytes[_recursive]` (cgroup v1) or `io.stat` (cgroup v2).
//!
//! `/proc/diskstats` counts each I/O at every layer of the block stack it goes through, so the
//! whole-machine figure sums only the devices at the bottom of it, the whole physical disks:
//! - partitions are skipped: the kernel lists a disk's partitions right after the disk, named
//!   `<disk><n>`, or `<disk>p<n>` when the disk's name ends in a digit (`sda1`, `nvme0n1p1`,
//!   `mmcblk0p1`), and their I/O is already in the disk's line;
//! - `dm-*` (device mapper: LVM, dm-crypt) and `md*` (software RAID) are skipped: they sit on top
//!   of disks that count the same I/O (RAID 1 even twice on purpose, as the disks really do it);
//! - `loop*` is skipped: its I/O goes to a file, hence to a disk that counts it too;
//! - `ram*` and `zram*` are skipped: they are memory, not disks.
//!
//! Sectors in `/proc/diskstats` are always 512 bytes, whatever the device's sector size.
//!
//! The cgroup files list per-device totals of what the cgroup's tasks issued; they are summed
//! over devices without that filtering (they only name devices by number), so a cgroup doing
//! I/O through device mapper is counted at both layers.

/// Bytes read and written since boot (or since the cgroup was created).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoBytes {
    pub read: u64,
    pub write: u64,
}

/// Block devices that are not at the bottom of the block stack or are not disks.
const NOT_PHYSICAL: [&str; 5] = ["dm-", "md", "loop", "ram", "zram"];

/// Whether `name` is the name the kernel gives a partition of disk `disk`.
pub fn is_partition_of(name: &str, disk: &str) -> bool {
    let Some(rest) = name.strip_prefix(disk) else {
        return false;
    };
    let rest = if disk.ends_with(|c: char| c.is_ascii_digit()) {
        match rest.strip_prefix('p') {
            Some(r) => r,
            None => return false,
        }
    } else {
        rest
    };
    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_digit())
}

/// Sums the bytes read and written by whole physical disks (see the module documentation).
pub fn parse_diskstats(text: &str) -> Result<IoBytes, &'static str> {
    let mut io = IoBytes::default();
    let mut disk = "";
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let Some(name) = fields.nth(2) else { continue };
        if !disk.is_empty() && is_partition_of(name, disk) {
            continue;
        }
        disk = name;
        if NOT_PHYSICAL.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        // After the name: reads, reads merged, sectors read, ms reading, writes, writes merged,
        // sectors written.
        let mut sectors = |n| -> Result<u64, &'static str> {
            fields
                .nth(n)
                .ok_or("a device line is too short")?
                .parse::<u64>()
                .map_err(|_| "a sector count is not a number")
        };
        let read = sectors(2)?;
        let written = sectors(3)?;
        io.read = io.read.wrapping_add(read.wrapping_mul(512));
        io.write = io.write.wrapping_add(written.wrapping_mul(512));
    }
    Ok(io)
}

/// Sums the `Read` and `Write` lines of `blkio.throttle.io_service_bytes` (cgroup v1); an
/// empty file (no I/O yet) is all zeros.
pub fn parse_blkio_service_bytes(text: &str) -> Result<IoBytes, &'static str> {
    let mut io = IoBytes::default();
    for line in text.lines() {
        let mut fields = line.split_ascii_whitespace();
        let (Some(_device), Some(op), Some(value)) = (fields.next(), fields.next(), fields.next()) else {
            continue;
        };
        let slot = match op {
            "Read" => &mut io.read,
            "Write" => &mut io.write,
            _ => continue,
        };
        *slot = slot.wrapping_add(value.parse::<u64>().map_err(|_| "a byte count is not a number")?);
    }
    Ok(io)
}

/// Sums `rbytes=` and `wbytes=` over the devices of `io.stat` (cgroup v2).
pub fn parse_io_stat(text: &str) -> Result<IoBytes, &'static str> {
    let mut io = IoBytes::default();
    for line in text.lines() {
        for field in line.split_ascii_whitespace().skip(1) {
            let (slot, value) = if let Some(v) = field.strip_prefix("rbytes=") {
                (&mut io.read, v)
            } else if let Some(v) = field.strip_prefix("wbytes=") {
                (&mut io.write, v)
            } else {
                continue;
            };
            *slot = slot.wrapping_add(value.parse::<u64>().map_err(|_| "a byte count is not a number")?);
        }
    }
    Ok(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diskstats_counts_whole_physical_disks_only() {
        let io = parse_diskstats(include_str!("fixtures/diskstats")).unwrap();
        // sda + sdb + nvme0n1 + mmcblk0; not loop0, the partitions, dm-0, md0, zram0, ram0.
        assert_eq!(io.read, (10_000 + 80 + 30_000 + 400) * 512);
        assert_eq!(io.write, (2_000 + 50_000) * 512);
    }

    #[test]
    fn diskstats_of_a_virtual_machine() {
        let text = "   7       0 loop0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n \
                    254       0 vda 220004 9838 9508610 372920 17958 38460 15662744 41801 0 33024 417019 13732 25 8522864 2261 845 36\n \
                    254       1 vda1 219000 9838 9500000 372000 17958 38460 15662744 41801 0 33000 417000 0 0 0 0 0 0\n";
        let io = parse_diskstats(text).unwrap();
        assert_eq!(
            io,
            IoBytes {
                read: 9_508_610 * 512,
                write: 15_662_744 * 512
            }
        );
        assert_eq!(parse_diskstats(""), Ok(IoBytes::default()));
        assert!(parse_diskstats("8 0 sda 1 2\n").is_err());
    }

    #[test]
    fn partition_names() {
        assert!(is_partition_of("sda1", "sda"));
        assert!(is_partition_of("sda15", "sda"));
        assert!(is_partition_of("nvme0n1p1", "nvme0n1"));
        assert!(is_partition_of("mmcblk0p2", "mmcblk0"));
        assert!(!is_partition_of("sdb", "sda"));
        assert!(!is_partition_of("sdaa", "sda"), "the 27th SCSI disk");
        assert!(!is_partition_of("nvme0n10", "nvme0n1"), "namespace 10, not a partition");
        assert!(!is_partition_of("sda", "sda"));
    }

    #[test]
    fn blkio_v1() {
        let io = parse_blkio_service_bytes(include_str!("fixtures/blkio.throttle.io_service_bytes")).unwrap();
        assert_eq!(
            io,
            IoBytes {
                read: 1_048_576 + 512,
                write: 4096 + 2048
            }
        );
        assert_eq!(parse_blkio_service_bytes(""), Ok(IoBytes::default()));
        assert_eq!(parse_blkio_service_bytes("Total 0\n"), Ok(IoBytes::default()));
        assert!(parse_blkio_service_bytes("8:0 Read x\n").is_err());
    }

    #[test]
    fn io_stat_v2() {
        let io = parse_io_stat(include_str!("fixtures/io.stat")).unwrap();
        assert_eq!(
            io,
            IoBytes {
                read: 1_459_200 + 90_430_464,
                write: 314_773_504 + 299_008_000
            }
        );
        assert_eq!(parse_io_stat(""), Ok(IoBytes::default()));
    }
}
