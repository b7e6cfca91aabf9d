//! A FIFO in place of a file, for sinks that write files: what the sink writes is
//! read back as it comes, and a stall is a reader that stops reading, so the
//! sink's writes really block, as on a hung disk.
//!
//! Owns: the FIFO (in its own temp dir), the reader thread and what it read.
//!
//! Promises: the reader waits for the sink to open the FIFO; dropping the [`Fifo`]
//! ends a stall and releases a reader still waiting for a writer, so no thread is
//! left blocked.

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct State {
    bytes: Vec<u8>,
    stalled: bool,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// A FIFO named `name` in a fresh temp dir, with a reader.
pub struct Fifo {
    dir: tempfile::TempDir,
    path: PathBuf,
    state: Shared,
}

impl Fifo {
    /// Creates the FIFO `name` in a fresh temp dir and starts its reader.
    pub fn new(name: &str) -> io::Result<Fifo> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join(name);
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        // SAFETY: mkfifo(3) with a valid NUL-terminated path.
        if unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let state: Shared = Arc::new((Mutex::new(State::default()), Condvar::new()));
        let (reader_path, shared) = (path.clone(), Arc::clone(&state));
        std::thread::spawn(move || {
            // Blocks until the sink opens the FIFO (or the Fifo is dropped).
            let Ok(mut reader) = File::open(&reader_path) else {
                return;
            };
            let mut buf = vec![0; 4096];
            loop {
                {
                    let mut st = lock(&shared);
                    while st.stalled {
                        st = shared.1.wait(st).unwrap_or_else(|e| e.into_inner());
                    }
                }
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => lock(&shared).bytes.extend_from_slice(&buf[..n]),
                }
            }
        });
        Ok(Fifo { dir, path, state })
    }

    /// The temp dir holding the FIFO.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The FIFO's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Everything read so far.
    pub fn bytes(&self) -> Vec<u8> {
        lock(&self.state).bytes.clone()
    }

    /// Stops reading: once the pipe's buffer is full, the writer blocks.
    pub fn stall(&self) {
        lock(&self.state).stalled = true;
    }

    /// Reads again.
    pub fn resume(&self) {
        lock(&self.state).stalled = false;
        self.state.1.notify_all();
    }
}

impl Drop for Fifo {
    fn drop(&mut self) {
        self.resume();
        // Releases a reader still waiting for a writer (when no sink opened it).
        let _ = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&self.path);
    }
}
