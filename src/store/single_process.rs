//! A SQLite store serves one process on one machine: what says so when it is shared
//! wrongly. The process holds a lock on `<store file>.lock` for as long as the store is open; a
//! second process finds it taken and is told to use a PostgreSQL store. A store on a
//! network file system gets the same advice, since SQLite's own locks are unreliable there.

use std::collections::HashMap;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, Weak};

/// The lock this process holds on a SQLite store (none when another process has it).
#[derive(Debug)]
pub(super) struct StoreLock {
    _file: Option<Arc<File>>,
    /// Whether another process holds the store.
    pub(super) contended: bool,
}

/// The store locks this process holds, by lock file: stores opened twice in one process
/// (two engines on one data dir) share one.
static HELD: LazyLock<Mutex<HashMap<PathBuf, Weak<File>>>> = LazyLock::new(Mutex::default);

/// Takes the lock beside the store file `path`, and warns when the store is shared wrongly.
pub(super) fn claim(path: &Path) -> StoreLock {
    if let Some(kind) = network_file_system(path) {
        tracing::warn!(
            store = %path.display(),
            file_system = kind,
            "the metadata store is on a network file system, where SQLite's locks are not reliable: \
             use it from one process on one machine, or share a PostgreSQL store between processes \
             (--store postgres://…)"
        );
    }
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let key = std::fs::canonicalize(lock_path.parent().unwrap_or(Path::new(".")))
        .map(|dir| dir.join(lock_path.file_name().unwrap_or_default()))
        .unwrap_or_else(|_| lock_path.clone());
    let mut held = HELD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(file) = held.get(&key).and_then(Weak::upgrade) {
        return StoreLock {
            _file: Some(file),
            contended: false,
        };
    }
    let uncontended = || StoreLock {
        _file: None,
        contended: false,
    };
    let file = match File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
    {
        Ok(file) => file,
        Err(e) => {
            tracing::debug!(path = %lock_path.display(), error = %e, "cannot open the store's lock file");
            return uncontended();
        }
    };
    match file.try_lock() {
        Ok(()) => {
            let file = Arc::new(file);
            held.insert(key, Arc::downgrade(&file));
            StoreLock {
                _file: Some(file),
                contended: false,
            }
        }
        Err(TryLockError::WouldBlock) => {
            tracing::warn!(
                store = %path.display(),
                "another Quarry process is using this metadata store. A SQLite store serves one \
                 process: tables may be fetched twice and changes made there are not seen here \
                 until a restart. Versions are kept for a grace period so neither deletes what \
                 the other reads. To run several processes, share a PostgreSQL store \
                 (--store postgres://…)"
            );
            StoreLock {
                _file: None,
                contended: true,
            }
        }
        Err(TryLockError::Error(e)) => {
            tracing::debug!(path = %lock_path.display(), error = %e, "cannot lock the store's lock file");
            uncontended()
        }
    }
}

/// The kind of network file system `path` is on, if it is on one.
#[cfg(target_os = "linux")]
fn network_file_system(path: &Path) -> Option<&'static str> {
    use std::os::unix::ffi::OsStrExt;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty())?;
    let c_path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a zeroed struct the call fills.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    // Magic numbers from statfs(2).
    match stat.f_type as u32 {
        0x6969 => Some("nfs"),
        0x517B => Some("smb"),
        0xFF53_4D42 => Some("cifs"),
        0xFE53_4D42 => Some("smb2"),
        0x0102_1997 => Some("9p"),
        0x00C3_6400 => Some("ceph"),
        0x5346_414F => Some("afs"),
        0x6573_5546 => Some("fuse"),
        _ => None,
    }
}

#[cfg(not(target_os = "linux"))]
fn network_file_system(_path: &Path) -> Option<&'static str> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_another_process_holds_is_contended_until_it_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("quarry.db");
        // Another process's lock: an open file description of its own.
        let other = File::create(dir.path().join("quarry.db.lock")).unwrap();
        other.lock().unwrap();
        assert!(claim(&store).contended);
        drop(other);
        let first = claim(&store);
        assert!(!first.contended);
        // A second engine in this process shares the claim.
        assert!(!claim(&store).contended);
        drop(first);
        assert!(!claim(&store).contended);
    }

    #[test]
    fn a_local_disk_is_not_a_network_file_system() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(network_file_system(&dir.path().join("quarry.db")), None);
    }
}
