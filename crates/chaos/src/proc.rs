//! Child processes and the signals the suite sends them.
//!
//! Owns: starting a child (etcd or a `serve` node) in a process group of its own,
//! with its output in a log file; sending a signal to that whole group (SIGKILL,
//! SIGSTOP, SIGCONT, SIGTERM); and the registry of live children that
//! [`kill_all`] empties on every exit path (panic hook, Ctrl-C, the run's time
//! limit).
//!
//! Promises: no child outlives the suite. Dropping a [`Child`] SIGKILLs its group
//! and reaps it; [`kill_all`] SIGKILLs every registered group; a child whose parent
//! dies gets SIGKILL from the kernel (`PR_SET_PDEATHSIG`). This is the only module
//! with `unsafe` code (kill(2) and prctl(2)).
#![allow(unsafe_code)]

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use thiserror::Error;

/// The process groups of the children alive now.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A child could not be started.
#[derive(Debug, Error)]
pub enum SpawnError {
    /// The log file could not be created.
    #[error("cannot create the log file {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The program did not start.
    #[error("cannot start {program}: {source}")]
    Start {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A signal the suite sends to a child's process group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Signal {
    /// SIGKILL: the process dies at once.
    Kill,
    /// SIGSTOP: the process is frozen (its sockets stay open).
    Stop,
    /// SIGCONT: a frozen process runs again.
    Cont,
    /// SIGTERM: a clean shutdown.
    Term,
}

impl Signal {
    fn number(self) -> libc::c_int {
        match self {
            Signal::Kill => libc::SIGKILL,
            Signal::Stop => libc::SIGSTOP,
            Signal::Cont => libc::SIGCONT,
            Signal::Term => libc::SIGTERM,
        }
    }
}

/// A child process leading its own process group; killed (the whole group) when
/// dropped.
#[derive(Debug)]
pub struct Child {
    inner: std::process::Child,
    pid: u32,
    /// Where its standard output and error go.
    pub log: PathBuf,
}

impl Child {
    /// Starts `program` with `args`; its output goes to `log` (appended, so a
    /// restarted child keeps its earlier log).
    ///
    /// Start children from a thread that lives as long as the run, such as the one
    /// running `block_on` (the kernel's parent-death signal follows the thread
    /// that forked, and tokio's blocking-pool threads come and go).
    pub fn spawn(program: &Path, args: &[String], log: &Path) -> Result<Child, SpawnError> {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|source| SpawnError::Log {
                    path: log.to_owned(),
                    source,
                })
        };
        let (out, err) = (open()?, open()?);
        let mut cmd = Command::new(program);
        cmd.args(args)
            .env("RUST_LOG", "warn")
            .env_remove("MASTER_EVENTS_USERS")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // prctl(2), which is async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let inner = cmd.spawn().map_err(|source| SpawnError::Start {
            program: program.display().to_string(),
            source,
        })?;
        let pid = inner.id();
        if let Ok(mut list) = CHILDREN.lock() {
            list.push(pid);
        }
        Ok(Child {
            inner,
            pid,
            log: log.to_owned(),
        })
    }

    /// The child's pid (and its process group's id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Sends `signal` to the child's whole process group.
    pub fn signal(&self, signal: Signal) {
        signal_group(self.pid, signal.number());
    }

    /// Whether the child has exited: gone, or a zombie. It is not reaped here
    /// (`try_wait` would): its pid, the group's id, stays its own until Drop has sent
    /// its last signal, so a signal never reaches a group a recycled id names.
    pub fn exited(&mut self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Err(_) => true,
            // The state follows the command, which is in parentheses.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        }
    }

    /// SIGTERM, then SIGKILL if the child has not exited within `grace`; reaps it.
    pub async fn terminate(mut self, grace: Duration) {
        self.signal(Signal::Term);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline && !self.exited() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Drop SIGKILLs whatever is left and reaps.
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        signal_group(self.pid, libc::SIGKILL);
        let _ = self.inner.wait();
        if let Ok(mut list) = CHILDREN.lock() {
            list.retain(|p| *p != self.pid);
        }
    }
}

fn signal_group(pid: u32, signal: libc::c_int) {
    let Ok(pgid) = libc::pid_t::try_from(pid) else {
        return;
    };
    // SAFETY: kill(2) on the process group our child leads; the id is not reused
    // while the child is unreaped (we reap only in Drop, after the last signal).
    unsafe {
        libc::kill(-pgid, signal);
    }
}

/// SIGKILLs every live child's process group (stopped ones included: SIGKILL
/// ends a stopped process too).
pub fn kill_all() {
    let pids = CHILDREN.lock().map(|l| l.clone()).unwrap_or_default();
    for pid in pids {
        signal_group(pid, libc::SIGKILL);
    }
}

/// Makes a panic anywhere kill every child first (then the default hook runs).
pub fn kill_children_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        kill_all();
        default(info);
    }));
}

/// The last `n` lines of a log file, for error messages.
pub fn log_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A loopback port free now (bound and released).
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits (up to 30 s) until `f` holds.
    fn until(what: &str, mut f: impl FnMut() -> bool) {
        let start = Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{what}: not within 30 s"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn state(pid: u32) -> Option<char> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        stat.rsplit_once(')')?.1.trim_start().chars().next()
    }

    #[test]
    fn an_exited_child_stays_unreaped_until_drop_so_its_pid_cannot_be_recycled() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Child::spawn(
            Path::new("/bin/sh"),
            &["-c".into(), "exit 0".into()],
            &dir.path().join("log"),
        )
        .expect("sh starts");
        let pid = child.pid();
        until("the child has exited", || child.exited());
        // Seen as exited, and still a zombie: the pid (and group id) is still ours.
        assert_eq!(state(pid), Some('Z'), "exited() must not reap the child");
        // A signal now reaches nobody else's group.
        child.signal(Signal::Kill);
        assert_eq!(state(pid), Some('Z'));
        assert!(CHILDREN.lock().expect("registry").contains(&pid));
        drop(child);
        // Reaped, and out of the registry of live children.
        assert_ne!(state(pid), Some('Z'), "drop reaps the child");
        assert!(!CHILDREN.lock().expect("registry").contains(&pid));
    }

    #[test]
    fn a_running_child_is_not_exited_until_its_group_is_killed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Child::spawn(
            Path::new("/bin/sh"),
            &["-c".into(), "sleep 30".into()],
            &dir.path().join("log"),
        )
        .expect("sh starts");
        assert!(!child.exited(), "a sleeping child is running");
        child.signal(Signal::Kill);
        until("the killed child has exited", || child.exited());
        assert_eq!(state(child.pid()), Some('Z'), "exited, not reaped");
    }
}
