//! Waking the ring's readers when it changes.
//!
//! Owns: [`Wakeup`], the list of readers waiting for the ring to change, and each
//! reader's registration in it ([`Waiter`]).
//!
//! Promises:
//! - No lost wake-up: a reader registers ([`Wakeup::register`]) and then looks at
//!   the ring again; the writer changes the ring and then wakes
//!   ([`Wakeup::wake_all`]). Either the reader's second look sees the change, or
//!   the wake-up that follows the change wakes the task the reader registered
//!   with last.
//! - A reader is listed at most once, however often it registers between two
//!   wake-ups (a stream polled by its heartbeat timer registers each time).
//! - Bounded: a dropped reader's entry is forgotten at the next wake-up, or
//!   before the list grows, so the list holds at most about twice the live
//!   readers, however many come and go while the ring is quiet; and a dropped
//!   reader lets go of its task at once ([`Wakeup::forget`]), so an entry left
//!   in the list holds a few bytes, not the task.
//! - Readers are woken in the order they registered, so that readers that wait
//!   together (the streams of one HTTP/2 connection) are woken together, and
//!   their connection writes for them at once.
//! - The writer holds the list's lock only to take the list; it wakes outside it.
//!
//! - Readers that wait together can share one entry ([`WaitGroup`]): the
//!   streams of one HTTP/2 connection, which its task polls together. A member
//!   joins its group once and stays until it is gone; to wait, it registers its
//!   task, and the group is listed in the ring's list once for all of them; the
//!   ring's wake-up wakes the group, which wakes each member that registered
//!   since its last wake-up. No lost wake-up either way: a member registers its
//!   task, then looks at whether the group is listed in the ring (and lists it
//!   if not), then looks at the ring again; the group's wake-up takes the
//!   members' tasks after the group is unlisted from the ring, so a member that
//!   registers too late for that wake-up finds the group unlisted and lists it
//!   again.
//! - A group may have a host ([`WaitGroup::hosted`]): the task that polls its
//!   members. Then the ring's writer only notes the wake-up and wakes the host;
//!   the host, at the start of each of its polls ([`WaitGroup::host_poll`]),
//!   registers itself and then, if the group was woken, wakes the members
//!   itself, on its own thread, where their registrations were made. No lost
//!   wake-up: the writer notes the wake-up before it wakes the host, and the host
//!   registers before it looks at the note. (With the writer waking 100,000
//!   members itself, each member's waker, and each connection's queue of woken
//!   streams, passed between the writer's thread and the connection's, twice an
//!   event.)
//!
//! Why not tokio's `Notify`: with 100,000 readers, each event had each reader
//! take the `Notify`'s lock about three times (to register, to see it was woken,
//! and when its wait ended), against the writer waking them 32 at a time under
//! that lock; `perf` put 8% of the server's time in it. Here a reader takes the
//! lock once an event, to be listed. Why one list and not several: readers spread
//! over 16 lists were woken list by list, so each HTTP/2 connection was woken
//! 16 times an event, and p99 at 100,000 streams went up by half
//! (docs/benchmarks-history.md, "100,000 streams over HTTP/2"). Why groups: with
//! 100,000 HTTP/2 streams, each of them took the one list's lock once an event,
//! from both workers; in groups of a connection's streams, the ring's list takes
//! one entry a connection, and a member registers only its task (a group's list
//! changes when a member joins, and is read once an event by the writer).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::task::{Context, Wake, Waker};

use atomic_waker::AtomicWaker;
use parking_lot::Mutex;

use crate::block::Block;

/// One reader's registration: the task to wake, and whether it is listed.
#[derive(Debug, Default)]
pub(crate) struct Waiter {
    waker: AtomicWaker,
    /// In the list (or in a list being woken, until its wake-up).
    queued: AtomicBool,
    /// A waker that never changes, woken instead of `waker` (a group's: it is
    /// listed without registering a task, see [`Wakeup::register_in`]).
    fixed: Option<Waker>,
}

/// The readers waiting for the ring to change.
#[derive(Default)]
pub(crate) struct Wakeup {
    list: Mutex<Vec<Arc<Waiter>>>,
}

impl Wakeup {
    /// No reader waiting.
    pub(crate) fn new() -> Wakeup {
        Wakeup::default()
    }

    /// A new reader's registration.
    pub(crate) fn waiter(&self) -> Arc<Waiter> {
        Arc::new(Waiter::default())
    }

    /// Wakes `waker` at the next [`Wakeup::wake_all`]. The caller looks at the ring
    /// again afterwards (see the module's promises).
    pub(crate) fn register(&self, waiter: &Arc<Waiter>, waker: &Waker) {
        waiter.waker.register(waker);
        self.list_once(waiter);
    }

    /// Lists `waiter` unless it is listed.
    fn list_once(&self, waiter: &Arc<Waiter>) {
        if waiter.queued.swap(true, Ordering::AcqRel) {
            // Listed already: the wake-up that takes it wakes the waker just
            // registered.
            return;
        }
        let mut list = self.list.lock();
        if list.len() == list.capacity() && !list.is_empty() {
            // About to grow: forget the readers dropped since the last wake-up
            // (only the list holds them), so that comings and goings in a quiet
            // ring do not grow it.
            list.retain(|w| Arc::strong_count(w) > 1);
        }
        list.push(Arc::clone(waiter));
    }

    /// A reader is gone: its entry, if listed, stays until the next wake-up (or
    /// until the list grows), but no longer holds the task it last registered
    /// (a waker keeps its task's memory alive, and a finished connection's task
    /// can be large).
    pub(crate) fn forget(&self, waiter: &Waiter) {
        drop(waiter.waker.take());
    }

    /// Wakes every registered reader (after the ring changed), in the order they
    /// registered.
    pub(crate) fn wake_all(&self) {
        let mut taken = {
            let mut list = self.list.lock();
            if list.is_empty() {
                return;
            }
            std::mem::take(&mut *list)
        };
        for waiter in taken.drain(..) {
            waiter.queued.store(false, Ordering::Release);
            match &waiter.fixed {
                Some(waker) => waker.wake_by_ref(),
                None => waiter.waker.wake(),
            }
        }
        // Give the list its room back, unless readers registered meanwhile.
        let mut list = self.list.lock();
        if list.is_empty() && list.capacity() < taken.capacity() {
            *list = taken;
        }
    }

    /// Registers a reader of `group` (a member: [`Group::join`]): its task, and
    /// the group listed here (see the module's promises). The caller looks at
    /// the ring again afterwards.
    pub(crate) fn register_in(&self, group: &Group, waiter: &Arc<Waiter>, waker: &Waker) {
        waiter.waker.register(waker);
        // Listed already, the group is unlisted before its wake-up takes its
        // members' tasks, this one's among them (the module's promises). The
        // group's waker never changes, so nothing is registered for it.
        if !group.waiter.queued.load(Ordering::Acquire) {
            self.list_once(&group.waiter);
        }
    }

    /// How many entries the list holds (live and dropped readers).
    #[cfg(test)]
    pub(crate) fn listed(&self) -> usize {
        self.list.lock().len()
    }
}

/// Readers that wait together, listed in the ring's wake-up list once for all of
/// them: the streams of one HTTP/2 connection, which its task polls together (see
/// the module's promises). Join a subscription to it with
/// [`crate::Subscription::join`]; a group belongs to the ring of its first member.
/// Cheap to clone.
#[derive(Clone)]
pub struct WaitGroup {
    pub(crate) inner: Arc<Group>,
}

impl WaitGroup {
    /// A group with no member yet, whose members the ring's writer wakes.
    pub fn new() -> WaitGroup {
        WaitGroup::with_host(None)
    }

    /// A group with no member yet, whose members are woken by its host: the task
    /// that polls them, which calls [`WaitGroup::host_poll`] at the start of each
    /// of its polls (see the module's promises). A hosted group whose host never
    /// calls it never wakes its members.
    pub fn hosted() -> WaitGroup {
        WaitGroup::with_host(Some(Host::default()))
    }

    fn with_host(host: Option<Host>) -> WaitGroup {
        let inner = Arc::new_cyclic(|group: &Weak<Group>| Group {
            members: Mutex::new(Vec::new()),
            waiter: Arc::new(Waiter {
                fixed: Some(Waker::from(Arc::new(WakeMembers(group.clone())))),
                ..Waiter::default()
            }),
            ring: OnceLock::new(),
            host,
            copy: Mutex::new(None),
        });
        WaitGroup { inner }
    }

    /// For the host of a [`WaitGroup::hosted`] group, at the start of each of
    /// its polls, before it polls the members: registers the task of `cx` for
    /// the group's next wake-up, and, if the ring woke the group since the last
    /// call, wakes the members that registered (their tasks are woken now, on
    /// this thread). Does nothing for a group without a host.
    pub fn host_poll(&self, cx: &Context<'_>) {
        let Some(host) = &self.inner.host else {
            return;
        };
        host.task.register(cx.waker());
        if host.woken.swap(false, Ordering::AcqRel) {
            self.inner.wake_members();
        }
    }
}

impl Default for WaitGroup {
    fn default() -> WaitGroup {
        WaitGroup::new()
    }
}

impl std::fmt::Debug for WaitGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WaitGroup").finish_non_exhaustive()
    }
}

/// What a [`WaitGroup`]'s clones and members share.
pub(crate) struct Group {
    /// Its members, from when they join until they are gone (an entry is
    /// dropped when the list is about to grow, as the ring's list does): a
    /// wake-up of the group wakes each member that registered a task since the
    /// last one, so a member is not listed again for each event.
    members: Mutex<Vec<Arc<Waiter>>>,
    /// The group's entry in the ring's list. Its waker, fixed, wakes the
    /// members; it holds the group weakly, so that the ring's list (which holds
    /// the entry while the group is listed) does not keep a group alive.
    waiter: Arc<Waiter>,
    /// The address of the ring the group belongs to (its first member's).
    ring: OnceLock<usize>,
    /// The task that wakes the members, if the group has one
    /// ([`WaitGroup::hosted`]).
    host: Option<Host>,
    /// The ring's copy of a block for the members to read
    /// (`Ring::copy_for_group`): the last one made, if any.
    pub(crate) copy: Mutex<Option<Arc<Block>>>,
}

/// A hosted group's host: its task, and whether the ring woke the group since
/// the host last looked.
#[derive(Default)]
struct Host {
    task: AtomicWaker,
    woken: AtomicBool,
}

impl Group {
    /// Binds the group to the ring at `ring` if it has none; whether it is that
    /// ring's.
    pub(crate) fn belongs_to(&self, ring: usize) -> bool {
        *self.ring.get_or_init(|| ring) == ring
    }

    /// Makes `waiter` a member, woken at the group's wake-ups when it has
    /// registered ([`Wakeup::register_in`]).
    pub(crate) fn join(&self, waiter: &Arc<Waiter>) {
        let mut list = self.members.lock();
        if list.len() == list.capacity() && !list.is_empty() {
            // About to grow: the members gone (only the list holds them) leave.
            list.retain(|w| Arc::strong_count(w) > 1);
        }
        list.push(Arc::clone(waiter));
    }

    /// Wakes the members that registered since the last wake-up, in the order
    /// they joined (under the list's lock: a member's task must not join the
    /// group as it is woken).
    fn wake_members(&self) {
        for member in self.members.lock().iter() {
            member.waker.wake();
        }
    }

    /// How many members the list holds (live and gone).
    pub(crate) fn members(&self) -> usize {
        self.members.lock().len()
    }
}

/// The group's waker: wakes the members.
struct WakeMembers(Weak<Group>);

impl Wake for WakeMembers {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let Some(group) = self.0.upgrade() else {
            return;
        };
        match &group.host {
            None => group.wake_members(),
            Some(host) => {
                // Noted before the host is woken, which registers before it
                // looks (the module's promises).
                host.woken.store(true, Ordering::Release);
                host.task.wake();
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod test_wakers {
    //! Wakers for the crate's tests.

    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    /// A waker's count of its wake-ups.
    #[derive(Default)]
    pub(crate) struct Count(pub(crate) AtomicU64);

    impl Count {
        /// The wake-ups so far.
        pub(crate) fn get(&self) -> u64 {
            self.0.load(Ordering::Relaxed)
        }
    }

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// A waker that counts its wake-ups, and its count.
    pub(crate) fn counted() -> (Arc<Count>, Waker) {
        let count = Arc::new(Count::default());
        (Arc::clone(&count), Waker::from(count))
    }
}

#[cfg(test)]
mod tests {
    use std::task::Wake;

    use super::test_wakers::counted;
    use super::*;

    #[test]
    fn a_reader_registered_many_times_is_listed_and_woken_once() {
        let wakeup = Wakeup::new();
        let waiter = wakeup.waiter();
        let (count, waker) = counted();
        for _ in 0..100 {
            wakeup.register(&waiter, &waker);
        }
        assert_eq!(wakeup.listed(), 1);
        wakeup.wake_all();
        assert_eq!(count.0.load(Ordering::Relaxed), 1);
        assert_eq!(wakeup.listed(), 0);
        wakeup.wake_all();
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "not listed any more");
        // Registered again after its wake-up: listed again.
        wakeup.register(&waiter, &waker);
        wakeup.wake_all();
        assert_eq!(count.0.load(Ordering::Relaxed), 2);
    }

    /// A waker that notes its name in a shared log when woken.
    struct Named(usize, Arc<Mutex<Vec<usize>>>);

    impl Wake for Named {
        fn wake(self: Arc<Self>) {
            self.1.lock().push(self.0);
        }
    }

    #[test]
    fn readers_are_woken_in_the_order_they_registered() {
        let wakeup = Wakeup::new();
        let log = Arc::new(Mutex::new(Vec::new()));
        let waiters: Vec<Arc<Waiter>> = (0..5).map(|_| wakeup.waiter()).collect();
        for i in [3, 0, 4, 1, 2] {
            let waker = Waker::from(Arc::new(Named(i, Arc::clone(&log))));
            wakeup.register(&waiters[i], &waker);
        }
        wakeup.wake_all();
        assert_eq!(*log.lock(), vec![3, 0, 4, 1, 2]);
    }

    #[test]
    fn the_task_registered_last_is_the_one_woken() {
        let wakeup = Wakeup::new();
        let waiter = wakeup.waiter();
        let (first, first_waker) = counted();
        let (second, second_waker) = counted();
        wakeup.register(&waiter, &first_waker);
        wakeup.register(&waiter, &second_waker);
        wakeup.wake_all();
        assert_eq!(first.0.load(Ordering::Relaxed), 0);
        assert_eq!(second.0.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_forgotten_reader_no_longer_holds_its_task() {
        let wakeup = Wakeup::new();
        let waiter = wakeup.waiter();
        let (count, waker) = counted();
        wakeup.register(&waiter, &waker);
        drop(waker);
        assert_eq!(
            Arc::strong_count(&count),
            2,
            "the registration holds the task"
        );
        wakeup.forget(&waiter);
        assert_eq!(Arc::strong_count(&count), 1, "forgotten, it does not");
        wakeup.wake_all();
        assert_eq!(count.0.load(Ordering::Relaxed), 0, "and it is not woken");
    }

    #[test]
    fn readers_that_come_and_go_in_a_quiet_ring_do_not_grow_the_lists() {
        let wakeup = Wakeup::new();
        let (_, waker) = counted();
        let live: Vec<Arc<Waiter>> = (0..50).map(|_| wakeup.waiter()).collect();
        for w in &live {
            wakeup.register(w, &waker);
        }
        for _ in 0..100_000 {
            let gone = wakeup.waiter();
            wakeup.register(&gone, &waker);
        }
        // The list holds at most about twice its live readers (and a few).
        let bound = 2 * live.len() + 8;
        assert!(
            wakeup.listed() <= bound,
            "{} listed, bound {bound}",
            wakeup.listed()
        );
    }

    /// A member of `group`, as `Subscription::join` makes one.
    fn member(ring: &Wakeup, group: &WaitGroup) -> Arc<Waiter> {
        let waiter = ring.waiter();
        group.inner.join(&waiter);
        waiter
    }

    #[test]
    fn a_group_is_listed_once_for_all_its_members_and_wakes_each_that_registered() {
        let ring = Wakeup::new();
        let group = WaitGroup::new();
        let members: Vec<Arc<Waiter>> = (0..3).map(|_| member(&ring, &group)).collect();
        let counts: Vec<_> = members
            .iter()
            .map(|m| {
                let (count, waker) = counted();
                ring.register_in(&group.inner, m, &waker);
                ring.register_in(&group.inner, m, &waker);
                count
            })
            .collect();
        assert_eq!(ring.listed(), 1, "the group, once");
        ring.wake_all();
        for count in &counts {
            assert_eq!(count.0.load(Ordering::Relaxed), 1);
        }
        assert_eq!(ring.listed(), 0);
        assert_eq!(group.inner.members(), 3, "members stay members");
        // One registers again after the wake-up: the group is listed again,
        // and only that member is woken.
        let (again, waker) = counted();
        ring.register_in(&group.inner, &members[0], &waker);
        assert_eq!(ring.listed(), 1);
        ring.wake_all();
        assert_eq!(again.0.load(Ordering::Relaxed), 1);
        for count in &counts[1..] {
            assert_eq!(
                count.0.load(Ordering::Relaxed),
                1,
                "not registered: not woken"
            );
        }
    }

    /// A waker that, when woken, registers another member of the group (as a
    /// member registering while its group is being woken, on another thread).
    struct RegistersOther {
        ring: Arc<Wakeup>,
        group: WaitGroup,
        other: Arc<Waiter>,
        other_waker: Waker,
    }

    impl Wake for RegistersOther {
        fn wake(self: Arc<Self>) {
            self.ring
                .register_in(&self.group.inner, &self.other, &self.other_waker);
        }
    }

    #[test]
    fn a_member_registered_while_its_group_is_woken_is_woken_by_the_next_wake_up() {
        let ring = Arc::new(Wakeup::new());
        let group = WaitGroup::new();
        let (late, late_waker) = counted();
        // The late member joined first, so that the wake-up has passed it when
        // the first member's task registers it.
        let other = member(&ring, &group);
        let first = member(&ring, &group);
        let registers = Waker::from(Arc::new(RegistersOther {
            ring: Arc::clone(&ring),
            group: group.clone(),
            other,
            other_waker: late_waker,
        }));
        ring.register_in(&group.inner, &first, &registers);
        // The wake-up unlists the group and, while it wakes the first member,
        // the other registers: too late for this wake-up, so it lists the
        // group again.
        ring.wake_all();
        assert_eq!(late.0.load(Ordering::Relaxed), 0);
        assert_eq!(ring.listed(), 1, "the group is listed again");
        ring.wake_all();
        assert_eq!(late.0.load(Ordering::Relaxed), 1, "and the next wakes it");
    }

    #[test]
    fn a_hosted_groups_members_are_woken_by_its_host_and_the_ring_wakes_only_the_host() {
        let ring = Wakeup::new();
        let group = WaitGroup::hosted();
        let (host, host_waker) = counted();
        let host_cx = Context::from_waker(&host_waker);
        group.host_poll(&host_cx);
        let members: Vec<Arc<Waiter>> = (0..3).map(|_| member(&ring, &group)).collect();
        let counts: Vec<_> = members[..2]
            .iter()
            .map(|m| {
                let (count, waker) = counted();
                ring.register_in(&group.inner, m, &waker);
                count
            })
            .collect();
        assert_eq!(ring.listed(), 1, "the group, once");
        ring.wake_all();
        assert_eq!(host.get(), 1, "the host is woken");
        for count in &counts {
            assert_eq!(count.get(), 0, "the members are not, yet");
        }
        group.host_poll(&host_cx);
        for count in &counts {
            assert_eq!(count.get(), 1, "the host woke each member that registered");
        }
        // Nothing new: the host's next poll wakes no one, and a wake-up of the
        // ring with the group unlisted does not wake the host.
        group.host_poll(&host_cx);
        ring.wake_all();
        assert_eq!(host.get(), 1);
        for count in &counts {
            assert_eq!(count.get(), 1);
        }
    }

    #[test]
    fn a_hosted_group_woken_before_its_host_registers_wakes_its_members_at_the_hosts_poll() {
        let ring = Wakeup::new();
        let group = WaitGroup::hosted();
        let first = member(&ring, &group);
        let (count, waker) = counted();
        ring.register_in(&group.inner, &first, &waker);
        // The ring wakes the group before its host ever polled: no task to
        // wake, but the wake-up is noted.
        ring.wake_all();
        assert_eq!(count.get(), 0);
        let (host, host_waker) = counted();
        group.host_poll(&Context::from_waker(&host_waker));
        assert_eq!(count.get(), 1, "woken at the host's first poll");
        assert_eq!(host.get(), 0);
        // A member that registers again after the ring's wake-up, before the
        // host's poll, lists the group again, and the host's poll wakes it.
        ring.register_in(&group.inner, &first, &waker);
        ring.wake_all();
        ring.register_in(&group.inner, &first, &waker);
        assert_eq!(ring.listed(), 1, "listed again");
        group.host_poll(&Context::from_waker(&host_waker));
        assert_eq!(count.get(), 2);
        assert_eq!(
            host.get(),
            1,
            "the second wake-up of the ring woke the host"
        );
    }

    #[test]
    fn a_group_without_a_host_ignores_host_polls() {
        let ring = Wakeup::new();
        let group = WaitGroup::new();
        let first = member(&ring, &group);
        let (count, waker) = counted();
        let (host, host_waker) = counted();
        group.host_poll(&Context::from_waker(&host_waker));
        ring.register_in(&group.inner, &first, &waker);
        ring.wake_all();
        assert_eq!(count.get(), 1, "the ring's writer woke the member");
        assert_eq!(host.get(), 0);
    }

    #[test]
    fn groups_and_members_that_go_are_not_kept_and_do_not_grow_the_lists() {
        let ring = Wakeup::new();
        let (_, waker) = counted();
        let live = WaitGroup::new();
        let stays = member(&ring, &live);
        ring.register_in(&live.inner, &stays, &waker);
        let weak = {
            let gone = WaitGroup::new();
            ring.register_in(&gone.inner, &member(&ring, &gone), &waker);
            Arc::downgrade(&gone.inner)
        };
        assert!(weak.upgrade().is_none(), "the list does not keep the group");
        for _ in 0..10_000 {
            let gone = WaitGroup::new();
            ring.register_in(&gone.inner, &member(&ring, &gone), &waker);
            // And members that come and go in a group that stays.
            drop(member(&ring, &live));
        }
        assert!(ring.listed() <= 2 * 2 + 8, "{} listed", ring.listed());
        assert!(
            live.inner.members() <= 2 * 2 + 8,
            "{} members",
            live.inner.members()
        );
        ring.wake_all();
        ring.register_in(&live.inner, &stays, &waker);
        assert_eq!(ring.listed(), 1);
    }
}
