//! The bounded worker pool: a fixed set of named threads fed by a bounded queue.
//!
//! Submitting never blocks and never grows anything: when every worker is busy and the queue
//! is full, [`Pool::try_submit`] hands the job back and the caller answers 503. Thread count
//! and queued work are therefore fixed at start, whatever the load. The pool knows nothing of
//! what a job is; the HTTP layer submits connections.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

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
    /// True when a job submitted now would be taken: a worker is free or the queue has room.
    pub fn has_room(&self) -> bool {
        self.busy.load(Ordering::Relaxed) < self.workers.load(Ordering::Relaxed)
            || self.queued.load(Ordering::Relaxed) < self.capacity.load(Ordering::Relaxed)
    }
}

/// A fixed-size pool of worker threads running one job function.
pub struct Pool<J: Send + 'static> {
    sender: Option<SyncSender<J>>,
    gauges: Arc<PoolGauges>,
    threads: Vec<JoinHandle<()>>,
}

impl<J: Send + 'static> Pool<J> {
    /// Starts `workers` threads named `{name}-{i}`, each running `run` on jobs taken from a
    /// queue that holds at most `queue` waiting jobs.
    pub fn start<F>(name: &str, workers: usize, queue: usize, gauges: Arc<PoolGauges>, run: F) -> std::io::Result<Self>
    where
        F: Fn(J) + Send + Sync + 'static,
    {
        let (sender, receiver) = sync_channel::<J>(queue);
        let receiver = Arc::new(Mutex::new(receiver));
        let run = Arc::new(run);
        gauges.workers.store(workers, Ordering::Relaxed);
        gauges.capacity.store(queue, Ordering::Relaxed);
        let mut threads = Vec::with_capacity(workers);
        for i in 0..workers {
            let receiver = Arc::clone(&receiver);
            let run = Arc::clone(&run);
            let gauges = Arc::clone(&gauges);
            let handle = thread::Builder::new()
                .name(format!("{name}-{i}"))
                .spawn(move || work(&receiver, &gauges, &*run))?;
            threads.push(handle);
        }
        Ok(Pool {
            sender: Some(sender),
            gauges,
            threads,
        })
    }

    /// Queues `job` for a worker, or gives it back at once when workers and queue are full.
    pub fn try_submit(&self, job: J) -> Result<(), J> {
        let Some(sender) = &self.sender else { return Err(job) };
        self.gauges.queued.fetch_add(1, Ordering::Relaxed);
        match sender.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                self.gauges.queued.fetch_sub(1, Ordering::Relaxed);
                self.gauges.rejected.fetch_add(1, Ordering::Relaxed);
                Err(job)
            }
        }
    }

    /// Stops taking jobs, lets queued and running ones finish, and joins every worker.
    pub fn join(mut self) {
        self.sender = None;
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

fn work<J>(receiver: &Mutex<Receiver<J>>, gauges: &PoolGauges, run: &dyn Fn(J)) {
    loop {
        // The lock is held only while waiting for the next job, never while running one.
        let job = match receiver.lock() {
            Ok(rx) => rx.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { return };
        gauges.queued.fetch_sub(1, Ordering::Relaxed);
        gauges.busy.fetch_add(1, Ordering::Relaxed);
        // A bug that panics while serving one job must not shrink the pool for good.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(job))).is_err() {
            log::error!("a worker job panicked; the worker carries on");
        }
        gauges.busy.fetch_sub(1, Ordering::Relaxed);
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
        pool.join();
        assert_eq!(gauges.busy.load(Ordering::Relaxed), 0);
        assert_eq!(gauges.queued.load(Ordering::Relaxed), 0);
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
        pool.join();
    }
}
