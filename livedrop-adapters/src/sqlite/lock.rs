//! The exclusive lock on a database's sidecar lock file: SQLite is one node, so one
//! store per file, across processes.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fs4::fs_std::FileExt;
use livedrop_core::{StoreError, StoreResult};

/// An exclusive OS lock (`flock`/`LockFileEx`) on `<database>.lock`, released when
/// dropped or when the process ends, however it ends.
#[derive(Debug)]
pub(crate) struct FileLock {
    _file: File,
}

/// The sidecar lock file of a database file.
pub(crate) fn lock_path(database: &Path) -> PathBuf {
    let mut name = database.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

impl FileLock {
    /// Takes the lock of `database`, or fails with one sentence saying who holds it.
    pub(crate) fn acquire(database: &Path) -> StoreResult<Self> {
        let path = lock_path(database);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| {
                StoreError::unavailable(
                    "database",
                    format!("cannot open the lock file {}: {e}", path.display()),
                )
            })?;
        let locked = FileExt::try_lock_exclusive(&file).map_err(|e| {
            StoreError::unavailable("database", format!("cannot lock {}: {e}", path.display()))
        })?;
        if !locked {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            let holder = holder.trim();
            let by = if holder.is_empty() {
                "another process".to_owned()
            } else {
                format!("another process (pid {holder})")
            };
            return Err(StoreError::unavailable(
                "database",
                format!(
                    "{} is already in use by {by}, which holds {}; SQLite serves one \
                     process at a time (use PostgreSQL to run several)",
                    database.display(),
                    path.display()
                ),
            ));
        }
        // Who holds it, for the message above; the lock itself is what counts.
        let written = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| write!(file, "{}", std::process::id()));
        if let Err(e) = written {
            tracing::debug!(error = %e, path = %path.display(), "cannot note the pid in the lock file");
        }
        Ok(Self { _file: file })
    }
}
