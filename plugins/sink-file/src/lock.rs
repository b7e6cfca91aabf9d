//! The lock that keeps one log to one writer: `<file_name>.lock` in the log's
//! directory, held with an OS advisory lock (`flock`) for as long as a sink (or a
//! warm load) uses the log.
//!
//! Owns: [`LogLock`] and the lock file's content (the holder's pid and a newline).
//!
//! Promises:
//! - A second holder of the same log is refused at once (never blocked), whether it
//!   is another process or another sink of this process; the refusal names the lock
//!   file and the pid written there by the holder.
//! - The lock goes with the process: it is released when the [`LogLock`] is dropped
//!   or the process dies (even by SIGKILL), so a stale lock file never blocks a
//!   restart. The file itself is left in place (removing it would race with the
//!   next holder); its pid is rewritten by each holder.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use fs4::TryLockError;

/// The lock file of the log `name` in `dir`.
pub fn lock_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.lock"))
}

/// Why a log could not be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process (or another sink of this one) holds the lock.
    #[error(
        "the log is in use: {path} is locked by pid {holder} (one server per log: \
         stop the other one, or give this one another `dir` or `file_name`)"
    )]
    Held {
        /// The lock file.
        path: PathBuf,
        /// What the lock file says of its holder (its pid, or `unknown`).
        holder: String,
    },
    /// The lock file could not be opened, locked or written.
    #[error("cannot lock the log with {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
}

/// A held lock on a log (released on drop).
#[derive(Debug)]
pub struct LogLock {
    path: PathBuf,
    // Held open: closing it releases the lock.
    _file: File,
}

impl LogLock {
    /// Takes the lock of the log `name` in `dir` (which must exist), writing this
    /// process's pid into the lock file; refuses at once if it is held.
    pub fn acquire(dir: &Path, name: &str) -> Result<LogLock, LockError> {
        let path = lock_path(dir, name);
        let io_error = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_error)?;
        match fs4::FileExt::try_lock(&file) {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let holder = match file.read_to_string(&mut text) {
                    Ok(_) if !text.trim().is_empty() => text.trim().to_owned(),
                    _ => "unknown".to_owned(),
                };
                return Err(LockError::Held { path, holder });
            }
            Err(TryLockError::Error(e)) => return Err(io_error(e)),
        }
        file.set_len(0).map_err(io_error)?;
        file.seek(SeekFrom::Start(0)).map_err(io_error)?;
        writeln!(file, "{}", std::process::id()).map_err(io_error)?;
        Ok(LogLock { path, _file: file })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_and_released_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = LogLock::acquire(dir.path(), "x.log").expect("first");
        let err = LogLock::acquire(dir.path(), "x.log").expect_err("refused");
        let text = err.to_string();
        assert!(
            text.contains(&std::process::id().to_string()),
            "names the pid: {text}"
        );
        assert!(text.contains("x.log.lock"), "names the lock file: {text}");
        // Another log in the same directory has its own lock.
        LogLock::acquire(dir.path(), "y.log").expect("another log");
        drop(first);
        LogLock::acquire(dir.path(), "x.log").expect("released");
    }
}
