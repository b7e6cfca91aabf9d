//! Threads that help a request's task parse a long ingest body.
//!
//! Owns: one helper thread for each CPU the process may use but one
//! (`ingest-parse-N`), started on first use and kept for the life of the process,
//! each with its queue of jobs; and, on Linux, the CPUs each helper may run on.
//!
//! Promises:
//! - [`ask`] never blocks on a helper and never waits for one to start: it queues
//!   the job and unparks the helper. A job is run once by each helper asked, in the
//!   order asked, after the jobs queued before it; a job that panics is caught and
//!   the helper goes on with the next.
//! - On Linux, before a helper is woken, its CPU affinity is set to every CPU the
//!   process may use except the one the asking thread is running on (when that
//!   leaves any), so that the helper starts on another core instead of preempting
//!   the task that asked, which holds the request's critical path. Why: with
//!   tokio's blocking pool, in about one request in ten the woken helper took the
//!   asking task's own core, stalling it for hundreds of microseconds; waking a
//!   helper cost the task 34–94 µs on average and the helper started 71–152 µs
//!   later; kept off that core, 8–10 µs and 14–19 µs, and K=1 ingest went from
//!   1.07–1.28 M to 1.28–1.41 M events/s (docs/benchmarks-history.md). If the affinity
//!   cannot be set (a refused system call), the helper runs wherever the
//!   scheduler puts it, as before, and that is said once as a WARN: it costs
//!   speed, never an event. With one CPU there are no helpers.
//! - When helper threads cannot be started at all, [`ask`] says so (it asks none),
//!   and the caller uses tokio's blocking pool instead.

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::Thread;

/// A job for helpers: run once by each helper asked.
pub(crate) type Job = Arc<dyn Fn() + Send + Sync>;

/// One helper thread and its queue.
struct Helper {
    queue: Mutex<VecDeque<Job>>,
    thread: Thread,
    #[cfg(target_os = "linux")]
    place: affinity::Placement,
}

impl Helper {
    /// Runs the queued jobs, and parks when there is none.
    fn serve(&self) {
        loop {
            let job = self
                .queue
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            match job {
                Some(job) => {
                    // A panic is the job's to report (the parse catches its own);
                    // the helper stays for the next one.
                    let _ = catch_unwind(AssertUnwindSafe(|| job()));
                }
                None => std::thread::park(),
            }
        }
    }
}

/// The helper threads, started on first use (`None` when none could be).
fn helpers() -> Option<&'static [Arc<Helper>]> {
    static HELPERS: OnceLock<Option<Vec<Arc<Helper>>>> = OnceLock::new();
    HELPERS.get_or_init(start).as_deref()
}

/// Starts one helper for each CPU the process may use but one.
fn start() -> Option<Vec<Arc<Helper>>> {
    let cpus = std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(1);
    let mut started = Vec::new();
    for i in 1..cpus {
        // The helper says who it is before it serves (its thread id, to place it).
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let spawned = std::thread::Builder::new()
            .name(format!("ingest-parse-{i}"))
            .spawn(move || {
                let me: Result<Arc<Helper>, _> = rx.recv();
                if let Ok(helper) = me {
                    #[cfg(target_os = "linux")]
                    helper.place.note_self();
                    helper.serve();
                }
            });
        let handle = match spawned {
            Ok(handle) => handle,
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    "cannot start an ingest parse helper thread; long bodies use tokio's blocking pool"
                );
                break;
            }
        };
        let helper = Arc::new(Helper {
            queue: Mutex::new(VecDeque::new()),
            thread: handle.thread().clone(),
            #[cfg(target_os = "linux")]
            place: affinity::Placement::new(),
        });
        if tx.send(Arc::clone(&helper)).is_err() {
            break;
        }
        started.push(helper);
    }
    (!started.is_empty()).then_some(started)
}

/// Queues `job` for up to `n` helpers and wakes them (each kept off the caller's
/// CPU, on Linux); returns how many were asked (fewer than `n` when there are fewer
/// helpers, none when none could be started).
pub(crate) fn ask(n: usize, job: &Job) -> usize {
    let Some(all) = helpers() else {
        return 0;
    };
    #[cfg(target_os = "linux")]
    let cpu = rustix::thread::sched_getcpu();
    let asked = &all[..n.min(all.len())];
    for helper in asked {
        #[cfg(target_os = "linux")]
        helper.place.avoid(cpu);
        helper
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(Arc::clone(job));
        helper.thread.unpark();
    }
    asked.len()
}

#[cfg(target_os = "linux")]
mod affinity {
    //! Where a helper may run: every CPU the process may use but the asker's.

    use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering};
    use std::sync::OnceLock;

    use rustix::thread::{sched_getaffinity, sched_setaffinity, CpuSet};

    /// No CPU avoided yet.
    const NONE: usize = usize::MAX;

    /// A helper's placement: the CPU it is kept off, and its thread id.
    pub(super) struct Placement {
        /// The CPU the helper's affinity leaves out now ([`NONE`] at first).
        avoiding: AtomicUsize,
        /// The helper's thread id, once it has said it (0 until then).
        tid: AtomicI32,
    }

    /// The CPUs the process may use (its main thread's affinity, which is what
    /// `taskset` or a cpuset sets; not whichever thread asks first), read once
    /// (`None` if they cannot be).
    fn allowed() -> Option<CpuSet> {
        static ALLOWED: OnceLock<Option<CpuSet>> = OnceLock::new();
        *ALLOWED.get_or_init(|| sched_getaffinity(Some(rustix::process::getpid())).ok())
    }

    /// Set once affinity could not be set: placing is given up.
    static GIVEN_UP: AtomicBool = AtomicBool::new(false);

    impl Placement {
        pub(super) fn new() -> Placement {
            Placement {
                avoiding: AtomicUsize::new(NONE),
                tid: AtomicI32::new(0),
            }
        }

        /// The helper notes its own thread id (called on the helper's thread).
        pub(super) fn note_self(&self) {
            self.tid.store(
                rustix::thread::gettid().as_raw_nonzero().get(),
                Ordering::Release,
            );
        }

        /// Keeps the helper off `cpu` (unless it already is, or that would leave
        /// it nowhere to run).
        pub(super) fn avoid(&self, cpu: usize) {
            if GIVEN_UP.load(Ordering::Relaxed) || self.avoiding.load(Ordering::Relaxed) == cpu {
                return;
            }
            let Some(tid) = rustix::process::Pid::from_raw(self.tid.load(Ordering::Acquire)) else {
                // The helper has not said who it is yet: placed next time.
                return;
            };
            let Some(mut set) = allowed() else {
                give_up("the process's CPUs cannot be read");
                return;
            };
            if cpu < CpuSet::MAX_CPU {
                set.unset(cpu);
            }
            if set.count() == 0 {
                return;
            }
            match sched_setaffinity(Some(tid), &set) {
                Ok(()) => self.avoiding.store(cpu, Ordering::Relaxed),
                Err(e) => give_up(&e.to_string()),
            }
        }
    }

    fn give_up(why: &str) {
        if !GIVEN_UP.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                why,
                "ingest parse helpers cannot be kept off the asking task's CPU: \
                 long bodies may be parsed more slowly (no event is affected)"
            );
        }
    }

    /// The CPUs `tid`'s affinity allows (for tests).
    #[cfg(test)]
    pub(super) fn of(tid: i32) -> Option<CpuSet> {
        sched_getaffinity(rustix::process::Pid::from_raw(tid)).ok()
    }

    impl Placement {
        /// The helper's thread id, once noted (for tests).
        #[cfg(test)]
        pub(super) fn tid(&self) -> i32 {
            self.tid.load(Ordering::Acquire)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::mpsc;
    use std::time::Duration;

    /// Waits (bounded) for `n` messages.
    fn collect<T>(rx: &mpsc::Receiver<T>, n: usize) -> Vec<T> {
        (0..n)
            .map(|_| {
                rx.recv_timeout(Duration::from_secs(10))
                    .expect("a helper ran the job")
            })
            .collect()
    }

    #[test]
    fn each_helper_asked_runs_the_job_once_on_a_thread_of_its_own() {
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let job: Job = Arc::new(move || {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            let _ = tx.lock().unwrap_or_else(PoisonError::into_inner).send(name);
        });
        let asked = ask(usize::MAX, &job);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(asked, cpus - 1, "one helper for each CPU but one");
        let mut names = collect(&rx, asked);
        names.sort();
        names.dedup();
        assert_eq!(names.len(), asked, "each helper ran it once: {names:?}");
        assert!(
            names.iter().all(|n| n.starts_with("ingest-parse-")),
            "{names:?}"
        );
        assert!(
            rx.recv_timeout(Duration::from_millis(200)).is_err(),
            "run once"
        );
    }

    #[test]
    fn a_job_that_panics_leaves_the_helper_serving_the_next() {
        if helpers().is_none() {
            eprintln!("one CPU: no helpers to test");
            return;
        }
        let panicking: Job = Arc::new(|| panic!("a job that fails"));
        assert_eq!(ask(1, &panicking), 1);
        let ran = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let counted = Arc::clone(&ran);
        let next: Job = Arc::new(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let _ = tx.lock().unwrap_or_else(PoisonError::into_inner).send(());
        });
        assert_eq!(ask(1, &next), 1);
        collect(&rx, 1);
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_helper_is_kept_off_the_cpu_it_is_asked_from_and_only_that_one() {
        use rustix::thread::{sched_getaffinity, CpuSet};
        // A thread of this test's own, placed as a helper is (the shared helpers
        // are asked by other tests at the same time).
        let place = Arc::new(affinity::Placement::new());
        let (tx, rx) = mpsc::channel();
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let theirs = Arc::clone(&place);
        let thread = std::thread::spawn(move || {
            theirs.note_self();
            let _ = tx.send(());
            let _ = stop_rx.recv_timeout(Duration::from_secs(30));
        });
        collect(&rx, 1);
        let allowed = sched_getaffinity(None).expect("this thread's CPUs");
        let cpus: Vec<usize> = (0..CpuSet::MAX_CPU)
            .filter(|c| allowed.is_set(*c))
            .collect();
        if cpus.len() < 2 {
            eprintln!("one CPU: nowhere else to keep a helper");
        }
        for &cpu in cpus.iter().take(4).filter(|_| cpus.len() >= 2) {
            place.avoid(cpu);
            let now = affinity::of(place.tid()).expect("the thread's CPUs");
            assert!(!now.is_set(cpu), "kept off CPU {cpu}");
            for &other in cpus.iter().filter(|c| **c != cpu) {
                assert!(now.is_set(other), "may still run on CPU {other}");
            }
        }
        let _ = stop_tx.send(());
        thread.join().expect("the placed thread");
    }
}
