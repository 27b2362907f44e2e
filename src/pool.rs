//! The bounded worker pool: a fixed set of named threads fed by a bounded queue.
//!
//! Submitting never blocks and never grows anything: when every worker is busy and the queue
//! is full, [`Pool::try_submit`] hands the job back and the caller answers 503. Thread count
//! and queued work are therefore fixed at start, whatever the load. A job that waited too long
//! is taken back out ([`Pool::take_expired`]) for the caller to refuse, so nothing waits in the
//! queue without end while slow clients hold every worker. The pool knows nothing of what a
//! job is; the HTTP layer submits connections.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Live counts of the pool's load, for metrics.
#[derive(Debug, Default)]
pub struct PoolGauges {
    /// Workers currently running a job.
    pub busy: AtomicUsize,
    /// Jobs waiting in the queue.
    pub queued: AtomicUsize,
    /// Jobs refused because the pool and queue were full (a counter).
    pub rejected: AtomicUsize,
    /// Number of worker threads.
    pub workers: AtomicUsize,
    /// Most jobs the queue holds.
    pub capacity: AtomicUsize,
}

impl PoolGauges {
    /// True when a job submitted now would be taken ([`admits`], on the gauges' last values).
    pub fn has_room(&self) -> bool {
        admits(
            self.queued.load(Ordering::Relaxed),
            self.capacity.load(Ordering::Relaxed),
            self.workers.load(Ordering::Relaxed),
            self.busy.load(Ordering::Relaxed),
        )
    }
}

impl PoolGauges {
    /// Runs `wait` counted as an idle worker: a job's worker that only waits for more work of
    /// its own (a parked connection becoming readable) takes no place from a job submitted
    /// meanwhile, which is then queued rather than refused. It is taken as soon as a worker
    /// looks at the queue again (the waiting one, after its short bounded wait, or another).
    /// When `wait` finds nothing (`None`), the worker stays counted idle until its job returns,
    /// which it must then do at once: counted busy again meanwhile, it made a request that came
    /// then, with one already queued, look refused-worthy (a 503 to a client that never had
    /// more requests in flight than the pool holds, seen once in a loaded test run).
    pub fn idle_while<T>(&self, wait: impl FnOnce() -> Option<T>) -> Option<T> {
        self.busy.fetch_sub(1, Ordering::Relaxed);
        let done = wait();
        if done.is_some() {
            self.busy.fetch_add(1, Ordering::Relaxed);
        } else {
            COUNTED_IDLE.set(true);
        }
        done
    }
}

thread_local! {
    /// Set when this worker's job already counted it idle ([`PoolGauges::idle_while`]): the
    /// pool then does not count it out of [`PoolGauges::busy`] a second time.
    static COUNTED_IDLE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// The one admission rule: with `waiting` jobs queued, one more is taken while they fit the
/// queue's `capacity` plus the workers not running a job (each of those takes a waiting job;
/// a worker counts itself busy, under the queue's lock, as it takes one).
fn admits(waiting: usize, capacity: usize, workers: usize, busy: usize) -> bool {
    waiting < capacity + workers.saturating_sub(busy)
}

/// A fixed-size pool of worker threads running one job function.
pub struct Pool<J: Send + 'static> {
    queue: Arc<Queue<J>>,
    gauges: Arc<PoolGauges>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// The jobs waiting for a worker, oldest first, each with the instant it was queued.
struct Queue<J> {
    jobs: Mutex<QueueState<J>>,
    /// Signalled when a worker exits (after the queue closed and emptied).
    exited: Condvar,
    capacity: usize,
}

struct QueueState<J> {
    jobs: VecDeque<(J, Instant)>,
    closed: bool,
    /// Worker threads that have not exited yet.
    alive: usize,
    /// Workers asleep for want of a job, the last to fall asleep on top: a job wakes that one
    /// ([`thread::Thread::unpark`]). A condition variable wakes the longest asleep, so jobs
    /// went round all the threads of the pool, each woken with its stack and caches cold: 4 KiB
    /// GETs from 256 connections (a few thousand a second reach the pool from the reactor),
    /// five alternating rounds, 71.7k -> 73.1k requests/s, 18.6 -> 18.2 µs of CPU each.
    asleep: Vec<thread::Thread>,
}

impl<J> Queue<J> {
    fn lock(&self) -> MutexGuard<'_, QueueState<J>> {
        // A panic never happens while the lock is held (only pushes and pops), but a poisoned
        // lock still holds a consistent queue.
        self.jobs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<J: Send + 'static> Pool<J> {
    /// Starts `workers` threads named `{name}-{i}`, each running `run` on jobs taken from a
    /// queue that holds at most `queue` waiting jobs.
    pub fn start<F>(name: &str, workers: usize, queue: usize, gauges: Arc<PoolGauges>, run: F) -> std::io::Result<Self>
    where
        F: Fn(J) + Send + Sync + 'static,
    {
        let shared = Arc::new(Queue {
            jobs: Mutex::new(QueueState {
                jobs: VecDeque::with_capacity(queue.min(1024)),
                closed: false,
                alive: 0,
                asleep: Vec::with_capacity(workers),
            }),
            exited: Condvar::new(),
            capacity: queue,
        });
        let run = Arc::new(run);
        gauges.workers.store(workers, Ordering::Relaxed);
        gauges.capacity.store(queue, Ordering::Relaxed);
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let shared = Arc::clone(&shared);
            let run = Arc::clone(&run);
            let gauges = Arc::clone(&gauges);
            shared.lock().alive += 1;
            let handle = thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || work(&shared, &gauges, &*run))?;
            threads.push(handle);
        }
        Ok(Pool {
            queue: shared,
            gauges,
            threads: Mutex::new(threads),
        })
    }

    /// Queues `job` for a worker, or gives it back at once when workers and queue are full.
    /// A job waits in the queue only while every worker is busy.
    pub fn try_submit(&self, job: J) -> Result<(), J> {
        let mut state = self.queue.lock();
        let workers = self.gauges.workers.load(Ordering::Relaxed);
        let busy = self.gauges.busy.load(Ordering::Relaxed);
        if state.closed || !admits(state.jobs.len(), self.queue.capacity, workers, busy) {
            drop(state);
            self.gauges.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(job);
        }
        state.jobs.push_back((job, Instant::now()));
        self.gauges.queued.store(state.jobs.len(), Ordering::Relaxed);
        let sleeper = state.asleep.pop();
        drop(state);
        if let Some(worker) = sleeper {
            worker.unpark();
        }
        Ok(())
    }

    /// Takes out the jobs that have waited longer than `bound` (for their submitter to refuse).
    pub fn take_expired(&self, bound: Duration) -> Vec<J> {
        let mut state = self.queue.lock();
        let mut expired = Vec::new();
        while state.jobs.front().is_some_and(|(_, at)| at.elapsed() > bound) {
            if let Some((job, _)) = state.jobs.pop_front() {
                expired.push(job);
            }
        }
        self.gauges.queued.store(state.jobs.len(), Ordering::Relaxed);
        expired
    }

    /// Stops taking jobs; those already queued still run. Each worker exits once the queue is
    /// empty and its job is done.
    pub fn close(&self) {
        let asleep = {
            let mut state = self.queue.lock();
            state.closed = true;
            std::mem::take(&mut state.asleep)
        };
        for worker in asleep {
            worker.unpark();
        }
    }

    /// Waits until every worker has exited, or `deadline` passes; true (and every thread
    /// joined) when they all exited. Call after [`Pool::close`]. A worker stuck in a system
    /// call past the deadline is left running, so a shutdown never waits on it without end.
    pub fn join_until(&self, deadline: Instant) -> bool {
        let mut state = self.queue.lock();
        while state.alive > 0 {
            let Some(left) = deadline.checked_duration_since(Instant::now()).filter(|d| !d.is_zero()) else {
                return false;
            };
            state = self
                .queue
                .exited
                .wait_timeout(state, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        drop(state);
        let mut threads = self.threads.lock().unwrap_or_else(|p| p.into_inner());
        for handle in threads.drain(..) {
            let _ = handle.join();
        }
        true
    }
}

/// Puts this worker to sleep on top of the sleepers until a job or the close wakes it (or a
/// spurious wake-up: the caller looks again), and takes it off the stack if it is still there.
fn sleep<'a, J>(queue: &'a Queue<J>, mut state: MutexGuard<'a, QueueState<J>>) -> MutexGuard<'a, QueueState<J>> {
    let me = thread::current();
    let id = me.id();
    state.asleep.push(me);
    drop(state);
    thread::park();
    let mut state = queue.lock();
    if let Some(at) = state.asleep.iter().rposition(|t| t.id() == id) {
        state.asleep.remove(at);
    }
    state
}

fn work<J>(queue: &Queue<J>, gauges: &PoolGauges, run: &dyn Fn(J)) {
    loop {
        let job = {
            let mut state = queue.lock();
            loop {
                if let Some((job, _)) = state.jobs.pop_front() {
                    gauges.queued.store(state.jobs.len(), Ordering::Relaxed);
                    // Counted busy before the lock goes, so a submitter never sees an idle
                    // worker that has already taken a job.
                    gauges.busy.fetch_add(1, Ordering::Relaxed);
                    break Some(job);
                }
                if state.closed {
                    state.alive -= 1;
                    queue.exited.notify_all();
                    break None;
                }
                state = sleep(queue, state);
            }
        };
        let Some(job) = job else { return };
        // A bug that panics while serving one job must not shrink the pool for good.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(job))).is_err() {
            log::error!("a worker job panicked; the worker carries on");
        }
        if !COUNTED_IDLE.replace(false) {
            gauges.busy.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn full_pool_and_queue_hand_the_job_back() {
        let gauges = Arc::new(PoolGauges::default());
        let (release_tx, release_rx) = channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let (started_tx, started_rx) = channel::<u32>();
        let started_tx = Mutex::new(started_tx);
        let pool = Pool::start("test", 1, 1, Arc::clone(&gauges), move |job: u32| {
            let _ = started_tx.lock().unwrap().send(job);
            let _ = release_rx.lock().unwrap().recv();
        })
        .unwrap();
        assert_eq!(pool.try_submit(1), Ok(()));
        assert_eq!(started_rx.recv_timeout(Duration::from_secs(5)), Ok(1));
        assert_eq!(pool.try_submit(2), Ok(()), "one job may wait in the queue");
        assert_eq!(pool.try_submit(3), Err(3), "a second waiting job is refused");
        assert_eq!(gauges.rejected.load(Ordering::Relaxed), 1);
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        join(pool);
        assert_eq!(gauges.busy.load(Ordering::Relaxed), 0);
        assert_eq!(gauges.queued.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_job_whose_wait_found_nothing_is_counted_idle_until_it_returns_and_only_once() {
        let gauges = Arc::new(PoolGauges::default());
        let (busy_tx, busy_rx) = channel::<usize>();
        let busy_tx = Mutex::new(busy_tx);
        let seen = Arc::clone(&gauges);
        let pool = Pool::start("test-idle", 1, 1, Arc::clone(&gauges), move |_: u32| {
            let _ = seen.idle_while(|| None::<()>);
            let _ = busy_tx.lock().unwrap().send(seen.busy.load(Ordering::Relaxed));
        })
        .unwrap();
        pool.try_submit(1).unwrap();
        let busy = busy_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(busy, 0, "counted busy again after a wait that found nothing");
        join(pool);
        assert_eq!(gauges.busy.load(Ordering::Relaxed), 0, "counted out of busy twice");
    }

    #[test]
    fn a_job_wakes_the_worker_that_fell_asleep_last() {
        let (ran_tx, ran_rx) = channel::<String>();
        let ran_tx = Mutex::new(ran_tx);
        let pool = Pool::start("test-lifo", 3, 4, Arc::new(PoolGauges::default()), move |_: u32| {
            let name = thread::current().name().unwrap_or_default().to_string();
            let _ = ran_tx.lock().unwrap().send(name);
        })
        .unwrap();
        let all_asleep = || {
            (0..5000).any(|_| {
                let asleep = pool.queue.lock().asleep.len() == 3;
                if !asleep {
                    thread::sleep(Duration::from_millis(1));
                }
                asleep
            })
        };
        assert!(all_asleep(), "the workers never all fell asleep");
        pool.try_submit(1).unwrap();
        let first = ran_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(all_asleep(), "the first job's worker never fell asleep again");
        pool.try_submit(2).unwrap();
        let second = ran_rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(second, first, "the next job went to a worker asleep for longer");
        join(pool);
    }

    #[test]
    fn jobs_that_waited_too_long_are_taken_back_oldest_first() {
        let (release_tx, release_rx) = channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let pool = Pool::start("test-expire", 1, 4, Arc::new(PoolGauges::default()), move |_: u32| {
            let _ = release_rx.lock().unwrap().recv();
        })
        .unwrap();
        pool.try_submit(1).unwrap();
        // Wait until the worker holds job 1, so 2 and 3 stay queued.
        while pool.gauges.busy.load(Ordering::Relaxed) == 0 {
            thread::sleep(Duration::from_millis(1));
        }
        pool.try_submit(2).unwrap();
        pool.try_submit(3).unwrap();
        assert!(pool.take_expired(Duration::from_secs(60)).is_empty());
        thread::sleep(Duration::from_millis(20));
        assert_eq!(pool.take_expired(Duration::from_millis(10)), vec![2, 3]);
        assert_eq!(pool.gauges.queued.load(Ordering::Relaxed), 0);
        release_tx.send(()).unwrap();
        join(pool);
    }

    #[test]
    fn a_panicking_job_does_not_kill_its_worker() {
        let (done_tx, done_rx) = channel::<u32>();
        let done_tx = Mutex::new(done_tx);
        let pool = Pool::start("test-panic", 1, 4, Arc::new(PoolGauges::default()), move |job: u32| {
            assert!(job != 0, "job 0 panics on purpose");
            let _ = done_tx.lock().unwrap().send(job);
        })
        .unwrap();
        pool.try_submit(0).unwrap();
        pool.try_submit(7).unwrap();
        assert_eq!(done_rx.recv_timeout(Duration::from_secs(5)), Ok(7));
        join(pool);
    }

    fn join<J: Send + 'static>(pool: Pool<J>) {
        pool.close();
        assert!(
            pool.join_until(Instant::now() + Duration::from_secs(5)),
            "workers did not exit"
        );
    }

    #[test]
    fn closing_runs_queued_jobs_and_join_gives_up_at_the_deadline() {
        let (release_tx, release_rx) = channel::<()>();
        let release_rx = Mutex::new(release_rx);
        let (done_tx, done_rx) = channel::<u32>();
        let done_tx = Mutex::new(done_tx);
        let pool = Pool::start("test-close", 1, 4, Arc::new(PoolGauges::default()), move |job: u32| {
            let _ = release_rx.lock().unwrap().recv();
            let _ = done_tx.lock().unwrap().send(job);
        })
        .unwrap();
        pool.try_submit(1).unwrap();
        pool.try_submit(2).unwrap();
        pool.close();
        assert_eq!(pool.try_submit(3), Err(3), "a closed pool takes no job");
        assert!(
            !pool.join_until(Instant::now() + Duration::from_millis(50)),
            "a worker still holding a job is not joined"
        );
        release_tx.send(()).unwrap();
        release_tx.send(()).unwrap();
        assert!(pool.join_until(Instant::now() + Duration::from_secs(5)));
        assert_eq!(
            done_rx.try_iter().collect::<Vec<_>>(),
            vec![1, 2],
            "the queued job still ran"
        );
    }
}
