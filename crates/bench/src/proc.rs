//! Server processes and the machine they run on.
//!
//! Owns: starting a server as a child process ([`Child`]) in a temporary
//! directory, on loopback, with its output in a log file there; stopping it (kill on
//! drop, and the kernel kills it if the harness dies: `PR_SET_PDEATHSIG`); the
//! run-wide deadline ([`Watchdog`]); reading a process's RSS; raising the open-file
//! limit; and describing the machine (CPU model, cores, memory, load).
//!
//! Promises: no child outlives the harness — dropping a [`Child`] kills it, the
//! watchdog kills every child and exits when the run's time is up, and a child
//! whose parent dies gets SIGKILL from the kernel. Each child leads a process group
//! of its own, and every signal goes to the whole group: a server started under a
//! wrapper (`--wrap-master-events "perf stat ..."`) is the wrapper's child, and
//! killing only the wrapper left it running. (If the harness itself is killed, the
//! kernel's SIGKILL reaches only the direct child: a wrapper that does not pass it
//! on can still leave its server behind.)
//!
//! A process group is signalled only while its leader is not reaped: the leader's
//! pid (the group's id) cannot be given to another process before that, so a signal
//! never reaches a group that a recycled id names. Stopping waits for the leader to
//! exit *without reaping it* (a zombie still holds its pid), kills what is left of
//! its group, and only then reaps it; once reaped, a [`Child`] sends nothing.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// Children's pids, for the watchdog.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// A server running as a child process; killed when dropped.
pub struct Child {
    inner: tokio::process::Child,
    pid: u32,
    /// Where the child's standard error (and output, when not read) goes.
    pub log: PathBuf,
    /// What it is, for messages.
    pub name: String,
    /// How long [`Child::stop`] waits after SIGTERM before SIGKILL (zero: SIGKILL
    /// at once).
    pub grace: Duration,
    /// The child was waited for: its pid (and group id) may now belong to another
    /// process, so nothing is signalled any more.
    reaped: bool,
}

impl Child {
    /// Starts `program` with `args` in `dir`; standard error goes to `dir/NAME.log`,
    /// standard output too unless `pipe_stdout`.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        dir: &Path,
        pipe_stdout: bool,
    ) -> Result<(Child, Option<tokio::process::ChildStdout>)> {
        let log = dir.join(format!("{name}.log"));
        let file = std::fs::File::create(&log)
            .with_context(|| format!("cannot create {}", log.display()))?;
        let err = file.try_clone().context("cannot duplicate the log file")?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .current_dir(dir)
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stderr(Stdio::from(err))
            .process_group(0)
            .kill_on_drop(true);
        if pipe_stdout {
            cmd.stdout(Stdio::piped());
        } else {
            cmd.stdout(Stdio::from(file));
        }
        // SAFETY: the closure only calls prctl and signal, which are
        // async-signal-safe.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // SIGINT is how a child with a grace period is stopped: it must not
                // inherit it ignored (a harness started as a shell's background job
                // has it ignored, and a shell cannot trap a signal ignored on entry).
                if libc::signal(libc::SIGINT, libc::SIG_DFL) == libc::SIG_ERR {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut inner = cmd
            .spawn()
            .with_context(|| format!("cannot start {} ({name})", program.display()))?;
        let Some(pid) = inner.id() else {
            bail!("{name} exited at once; see {}", log.display());
        };
        if let Ok(mut list) = CHILDREN.lock() {
            list.push(pid);
        }
        let stdout = inner.stdout.take();
        Ok((
            Child {
                inner,
                pid,
                log,
                name: name.to_owned(),
                grace: Duration::ZERO,
                reaped: false,
            },
            stdout,
        ))
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Fails (with the tail of its log) if the child has exited. An exited child's
    /// group is killed before the child is reaped (see the module docs).
    pub fn check_running(&mut self) -> Result<()> {
        if self.reaped {
            bail!("{} was already stopped", self.name);
        }
        if !has_exited(self.pid) {
            return Ok(());
        }
        signal_group(self.pid, libc::SIGKILL);
        let status = self.inner.try_wait();
        self.reaped = true;
        forget_child(self.pid);
        match status {
            Ok(Some(status)) => bail!(
                "{} exited ({status}); its log ends with:\n{}",
                self.name,
                log_tail(&self.log)
            ),
            Ok(None) => bail!(
                "{} exited; its log ends with:\n{}",
                self.name,
                log_tail(&self.log)
            ),
            Err(e) => bail!("cannot query {}: {e}", self.name),
        }
    }

    /// The child's resident set size, bytes.
    pub fn rss_bytes(&self) -> Result<u64> {
        rss_bytes(self.pid)
    }

    /// Stops the child's process group and waits for the child: SIGINT first when
    /// it has a grace period, SIGKILL otherwise or after it. SIGINT, as Ctrl-C in a
    /// terminal would: the server shuts down cleanly, `perf record` stops and writes
    /// its data, and `perf stat` waits for its workload to end and prints its counts
    /// (SIGTERM kills `perf stat` before it prints anything).
    pub async fn stop(mut self) {
        if self.reaped {
            return;
        }
        if !self.grace.is_zero() {
            signal_group(self.pid, libc::SIGINT);
            // Wait for the leader to exit without reaping it: its pid stays its own.
            let deadline = Instant::now() + self.grace;
            while !has_exited(self.pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // Whatever is left in the group (the server under a wrapper) goes too.
        signal_group(self.pid, libc::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_secs(5), self.inner.wait()).await;
        self.reaped = true;
        forget_child(self.pid);
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.reaped {
            return;
        }
        // The child itself is in the group; tokio reaps it (`kill_on_drop`).
        signal_group(self.pid, libc::SIGKILL);
        forget_child(self.pid);
    }
}

/// Whether `pid` has exited: gone, or a zombie not reaped yet (`/proc/PID/stat`).
fn has_exited(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // The state follows the command, which is in parentheses.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Sends `signal` to the process group that the child `pid` leads (every child
/// leads one: `process_group(0)` in [`Child::spawn`]).
fn signal_group(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on the process group of a child we started. Its pid is not
    // reused while the child is unreaped, and the group keeps the id while any
    // member lives.
    unsafe {
        libc::kill(-(pid as libc::pid_t), signal);
    }
}

fn forget_child(pid: u32) {
    if let Ok(mut list) = CHILDREN.lock() {
        list.retain(|p| *p != pid);
    }
}

/// The last lines of a log file, for error messages.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Reads the first line of a child's output, within `timeout`.
pub async fn first_line(
    stdout: tokio::process::ChildStdout,
    timeout: Duration,
) -> Result<(String, BufReader<tokio::process::ChildStdout>)> {
    let mut reader = BufReader::new(stdout);
    let mut line = String::new();
    let n = tokio::time::timeout(timeout, reader.read_line(&mut line))
        .await
        .context("no first line of output in time")?
        .context("reading the first line of output")?;
    if n == 0 {
        bail!("the output ended before its first line");
    }
    Ok((line.trim_end().to_owned(), reader))
}

/// A free TCP port on 127.0.0.1 (bound and released; a server started right after
/// gets it unless something else grabs it first).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a probe port")?;
    Ok(listener.local_addr().context("probe port address")?.port())
}

/// The loopback address with `port`.
pub fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from((Ipv4Addr::LOCALHOST, port))
}

/// Retries `probe` until it succeeds or `timeout` passes.
pub async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let err = match probe().await {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(err.context(format!("{what} not ready within {timeout:?}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A process's `VmRSS`, bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("VmRSS:") {
            let kib: u64 = rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .with_context(|| format!("bad VmRSS line {line:?}"))?;
            return Ok(kib * 1024);
        }
    }
    bail!("no VmRSS in {path}")
}

/// Raises the soft open-file limit to the hard one, and both to `at_least` when
/// the hard one is lower (which needs root: CAP_SYS_RESOURCE); returns the new soft
/// limit. Children inherit it.
pub fn raise_nofile(at_least: u64) -> Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit write/read the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return Err(std::io::Error::last_os_error()).context("getrlimit(NOFILE)");
        }
        if lim.rlim_max < at_least {
            let raised = libc::rlimit {
                rlim_cur: at_least,
                rlim_max: at_least,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return Ok(at_least);
            }
        }
        lim.rlim_cur = lim.rlim_max;
        if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
            return Err(std::io::Error::last_os_error()).context("setrlimit(NOFILE)");
        }
    }
    Ok(lim.rlim_cur)
}

/// Kills every child and exits when the run's time is up.
pub struct Watchdog;

impl Watchdog {
    /// Arms the watchdog: after `limit`, every child still running is killed and the
    /// process exits with status 3.
    pub fn arm(limit: Duration) {
        std::thread::spawn(move || {
            std::thread::sleep(limit);
            eprintln!("master-events-bench: the run's time limit ({limit:?}) is up; stopping");
            kill_children();
            std::process::exit(3);
        });
    }
}

/// SIGKILLs every child still registered, with its process group.
pub fn kill_children() {
    let pids = CHILDREN.lock().map(|l| l.clone()).unwrap_or_default();
    for pid in pids {
        signal_group(pid, libc::SIGKILL);
    }
}

/// The machine the run is on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    /// `nproc`.
    pub cpus: usize,
    /// The CPU model from /proc/cpuinfo.
    pub cpu_model: String,
    /// Total memory, GiB.
    pub mem_gib: f64,
    /// The kernel release.
    pub kernel: String,
    /// Versions of the peers, as they report them.
    pub redis_version: Option<String>,
    /// NATS server version.
    pub nats_version: Option<String>,
}

impl Machine {
    /// Describes this machine.
    pub fn describe(redis: &Path, nats: &Path) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, m)| m.trim().to_owned())
            .unwrap_or_else(|| "unknown".into());
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|l| l.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        Machine {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
            cpu_model,
            mem_gib: mem_kib / 1024.0 / 1024.0,
            kernel,
            redis_version: version_of(redis, "--version"),
            nats_version: version_of(nats, "--version"),
        }
    }
}

fn version_of(program: &Path, flag: &str) -> Option<String> {
    let out = std::process::Command::new(program)
        .arg(flag)
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim().to_owned();
    (!line.is_empty()).then_some(line)
}

/// The 1-minute load average and the number of runnable tasks, from /proc/loadavg.
pub fn load() -> (f64, String) {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut parts = text.split_whitespace();
    let one = parts.next().and_then(|s| s.parse().ok()).unwrap_or(0.0);
    (one, text.trim().to_owned())
}

/// CPU seconds (user + system) a process has used so far.
pub fn cpu_secs(pid: u32) -> f64 {
    let path = format!("/proc/{pid}/stat");
    let Ok(text) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    let Some((_, rest)) = text.rsplit_once(')') else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // Fields after ')': state(0) ... utime(11) stime(12).
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i).and_then(|s| s.parse::<u64>().ok()))
        .sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    ticks as f64 / hz
}

/// The busy share (0..=1 per core, summed: up to `cpus`) of processes other than
/// this one and `exclude` over `window`, from /proc/stat and /proc/PID/stat.
pub fn other_cpu_load(window: Duration, exclude: &[u32]) -> f64 {
    let total_busy = || -> Option<u64> {
        let text = std::fs::read_to_string("/proc/stat").ok()?;
        let line = text.lines().next()?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .filter_map(|s| s.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        Some(v.iter().take(8).sum::<u64>() - v.get(3)? - v.get(4)?)
    };
    let own = |pids: &[u32]| -> u64 {
        let mut sum = 0;
        for pid in pids {
            let path = format!("/proc/{pid}/stat");
            if let Ok(text) = std::fs::read_to_string(path) {
                if let Some((_, rest)) = text.rsplit_once(')') {
                    let f: Vec<&str> = rest.split_whitespace().collect();
                    // fields after ')': state(0) ... utime(11) stime(12) cutime(13) cstime(14)
                    for i in [11, 12] {
                        sum += f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
                    }
                }
            }
        }
        sum
    };
    let mut pids = exclude.to_vec();
    pids.push(std::process::id());
    let (Some(b0), o0) = (total_busy(), own(&pids)) else {
        return 0.0;
    };
    std::thread::sleep(window);
    let (Some(b1), o1) = (total_busy(), own(&pids)) else {
        return 0.0;
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let other = (b1.saturating_sub(b0)).saturating_sub(o1.saturating_sub(o0)) as f64;
    other / hz / window.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exited(pid: u32) -> bool {
        has_exited(pid)
    }

    async fn wait_for_exit(pid: u32) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if exited(pid) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        false
    }

    /// Starts `sh -c script`, which must print a pid first, in a temp dir.
    async fn spawn_sh(script: &str, dir: &Path) -> (Child, u32) {
        let args = vec!["-c".to_owned(), script.to_owned()];
        let (child, stdout) =
            Child::spawn("sh", Path::new("/bin/sh"), &args, dir, true).expect("sh starts");
        let (line, _rest) = first_line(stdout.expect("piped"), Duration::from_secs(10))
            .await
            .expect("sh prints the pid it started");
        (child, line.trim().parse().expect("a pid"))
    }

    #[tokio::test]
    async fn stopping_a_child_kills_what_it_started_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        // A wrapper that starts the real process and waits, as `perf stat` does.
        let (child, grandchild) = spawn_sh("sleep 600 & echo $!; wait", dir.path()).await;
        assert!(!exited(grandchild), "the grandchild runs");
        child.stop().await;
        assert!(wait_for_exit(grandchild).await, "the grandchild was killed");
    }

    #[tokio::test]
    async fn dropping_a_child_kills_what_it_started_too() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (child, grandchild) = spawn_sh("sleep 600 & echo $!; wait", dir.path()).await;
        drop(child);
        assert!(wait_for_exit(grandchild).await, "the grandchild was killed");
    }

    #[tokio::test]
    async fn an_exited_childs_group_is_killed_before_it_is_reaped_and_never_signalled_after() {
        let dir = tempfile::tempdir().expect("temp dir");
        // The shell exits at once and leaves a member in its group.
        let (mut child, grandchild) = spawn_sh("sleep 600 & echo $!; exit 0", dir.path()).await;
        let pid = child.pid();
        assert!(wait_for_exit(pid).await, "the shell exits");
        assert!(!exited(grandchild), "its group still has a member");
        let err = child.check_running().expect_err("it exited").to_string();
        assert!(err.contains("exited"), "{err}");
        assert!(
            wait_for_exit(grandchild).await,
            "the group was killed with it"
        );
        assert!(child.reaped, "reaped once its group was killed");
        // Stopping (and dropping) a reaped child sends nothing: its pid may be another's.
        child.stop().await;
    }

    #[tokio::test]
    async fn a_child_with_a_grace_period_is_interrupted_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let marker = dir.path().join("interrupted");
        let script = format!(
            "trap 'echo yes > {}; exit 0' INT; sleep 600 & echo $!; wait",
            marker.display()
        );
        let (mut child, grandchild) = spawn_sh(&script, dir.path()).await;
        child.grace = Duration::from_secs(10);
        child.stop().await;
        assert_eq!(
            std::fs::read_to_string(&marker).ok().as_deref(),
            Some("yes\n"),
            "the wrapper got SIGINT and could finish its work"
        );
        assert!(wait_for_exit(grandchild).await, "the grandchild is gone");
    }
}
