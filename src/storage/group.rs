//! Group commit: appends to one file from this process share one lock, one armed crash record
//! and one data sync.
//!
//! Each sync costs a disk flush; appenders queued on one file would otherwise each wait for the
//! file's lock and pay their own. So appends to a path join its queue here (a `Mutex` and a
//! `Condvar` per path, made on first use and dropped when nobody uses it). Whoever finds no
//! batch running leads the next one: it takes the queued appends (at most [`MAX_BATCH_APPENDS`]
//! and, past the first, [`MAX_BATCH_BYTES`]), runs them as one batch ([`append::run_batch`]:
//! the file's `flock`, which still excludes other processes and replicas, then one armed
//! record, every body in order, one sync) and hands each its own answer. Appends arriving
//! meanwhile wait for the next batch, led by one of them. Bodies are spooled whole before they
//! join, so no client's network is ever waited on here.
//!
//! Every append of a batch gets its answer only after the batch's sync returned; a failed
//! batch fails every append in it (see `docs/write-protocol.md`, "An append").

use super::append::{self, Appended, Batch, Received};
use super::lock;
use super::root::Root;
use super::{Result, StorageError};
use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, LazyLock, Mutex, MutexGuard, PoisonError};

/// Most appends one batch takes: bounds the answers one leader holds up.
const MAX_BATCH_APPENDS: usize = 256;
/// Most bytes one batch takes beyond its first append: a batch of large bodies is as long to
/// write as to sync, so batching them gains little and holds early answers longer.
const MAX_BATCH_BYTES: u64 = 16 << 20;

/// How an append given to the queue ended.
pub enum Joined {
    /// Committed (the new size, and the file's digests after it where kept), or refused or failed.
    Done(Result<Appended>),
    /// The file is not there: the caller creates it (or finds it) itself, with its body back.
    Missing(Box<Received>),
}

/// One queued append.
struct Job {
    ticket: u64,
    body: Received,
    len: u64,
    size: Option<u64>,
}

/// A path's queue.
#[derive(Default)]
struct State {
    queued: VecDeque<Job>,
    answers: HashMap<u64, Joined>,
    /// A batch is running.
    leading: bool,
    /// Threads using this queue (it is dropped from the map when none is).
    users: usize,
    next_ticket: u64,
}

#[derive(Default)]
struct Queue {
    state: Mutex<State>,
    /// Signalled when a batch ends (answers are in, and a new leader may be needed).
    turn: Condvar,
}

/// The queues of this process, by path (relative to the root, as resolved).
static QUEUES: LazyLock<Mutex<HashMap<PathBuf, Arc<Queue>>>> = LazyLock::new(Mutex::default);

fn locked<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic in a leader is answered by its guard ([`Leading`]); the state stays consistent.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Appends `body` (`len` bytes; at offset `size` if given) to the file at `parent`/`name`,
/// in a batch with other appends to it from this process. Waits for the answer.
pub fn append(
    root: &Root,
    parent: &Path,
    name: &OsStr,
    body: Received,
    size: Option<u64>,
    len: u64,
    fsync: bool,
) -> Joined {
    let key = parent.join(name);
    let queue = {
        let mut queues = locked(&QUEUES);
        let queue = Arc::clone(queues.entry(key.clone()).or_default());
        locked(&queue.state).users += 1;
        queue
    };
    let answer = queue.run(root, parent, name, body, size, len, fsync);
    let mut queues = locked(&QUEUES);
    let mut state = locked(&queue.state);
    state.users -= 1;
    if state.users == 0 {
        queues.remove(&key);
    }
    answer
}

impl Queue {
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        root: &Root,
        parent: &Path,
        name: &OsStr,
        body: Received,
        size: Option<u64>,
        len: u64,
        fsync: bool,
    ) -> Joined {
        let mut state = locked(&self.state);
        let ticket = state.next_ticket;
        state.next_ticket += 1;
        state.queued.push_back(Job {
            ticket,
            body,
            len,
            size,
        });
        loop {
            if let Some(answer) = state.answers.remove(&ticket) {
                return answer;
            }
            if state.leading {
                // Counted as waiting for a lock: the leader may be waiting for the file's (a
                // frozen replica holding it), and readiness counts every worker stuck so.
                let _waiting = lock::Waiting::start();
                state = self.turn.wait(state).unwrap_or_else(PoisonError::into_inner);
                continue;
            }
            state.leading = true;
            let batch = take_batch(&mut state.queued);
            drop(state);
            let mut leading = Leading {
                queue: self,
                tickets: batch.iter().map(|job| job.ticket).collect(),
                finished: false,
            };
            let answers = lead(root, parent, name, batch, fsync);
            state = locked(&self.state);
            state.answers.extend(answers);
            state.leading = false;
            leading.finished = true;
            self.turn.notify_all();
        }
    }
}

/// The next batch: queued appends in order, bounded in count and bytes (the first is always
/// taken).
fn take_batch(queued: &mut VecDeque<Job>) -> Vec<Job> {
    let mut batch = Vec::new();
    let mut bytes = 0u64;
    while let Some(job) = queued.front() {
        if !batch.is_empty() && (batch.len() >= MAX_BATCH_APPENDS || bytes + job.len > MAX_BATCH_BYTES) {
            break;
        }
        bytes += job.len;
        if let Some(job) = queued.pop_front() {
            batch.push(job);
        }
    }
    batch
}

/// Runs `batch` and gives each job its answer.
fn lead(root: &Root, parent: &Path, name: &OsStr, batch: Vec<Job>, fsync: bool) -> Vec<(u64, Joined)> {
    let jobs: Vec<_> = batch.iter().map(|job| (&job.body, job.len, job.size)).collect();
    let ended = append::run_batch(root, parent, name, &jobs, fsync);
    drop(jobs);
    // A full volume fails the whole batch while writing it (rolled back, nothing answered):
    // whether a small append fits must not depend on a large one that happened to share its
    // batch, so each is tried again alone. Only for a full volume: a failed sync is never
    // retried (after it the page cache cannot be trusted; see docs/write-protocol.md).
    if matches!(ended, Batch::Failed(StorageError::NoSpace)) && batch.len() > 1 {
        return batch
            .into_iter()
            .flat_map(|job| lead(root, parent, name, vec![job], fsync))
            .collect();
    }
    match ended {
        Batch::Missing => batch
            .into_iter()
            .map(|job| (job.ticket, Joined::Missing(Box::new(job.body))))
            .collect(),
        Batch::Failed(e) => batch
            .into_iter()
            .map(|job| (job.ticket, Joined::Done(Err(share(&e)))))
            .collect(),
        Batch::Done(outcomes) => batch
            .into_iter()
            .zip(outcomes)
            .map(|(job, outcome)| {
                (
                    job.ticket,
                    Joined::Done(outcome.map(|(before, repr)| (before + job.len, repr))),
                )
            })
            .collect(),
    }
}

/// The same error for each append of a failed batch.
fn share(e: &StorageError) -> StorageError {
    let copy = |e: &io::Error| match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    };
    match e {
        StorageError::BadPath(p) => StorageError::BadPath(*p),
        StorageError::OutsideRoot => StorageError::OutsideRoot,
        StorageError::OutOfScope => StorageError::OutOfScope,
        StorageError::NotFound => StorageError::NotFound,
        StorageError::IsADirectory => StorageError::IsADirectory,
        StorageError::NotADirectory => StorageError::NotADirectory,
        StorageError::Exists => StorageError::Exists,
        StorageError::OffsetMismatch { current } => StorageError::OffsetMismatch { current: *current },
        StorageError::VersionMismatch => StorageError::VersionMismatch,
        StorageError::ModifiedSince => StorageError::ModifiedSince,
        StorageError::UnchangedVersion => StorageError::UnchangedVersion,
        StorageError::PermissionDenied => StorageError::PermissionDenied,
        StorageError::NotRegular => StorageError::NotRegular,
        StorageError::NoSpace => StorageError::NoSpace,
        StorageError::Exhausted => StorageError::Exhausted,
        StorageError::RootRefused => StorageError::RootRefused,
        StorageError::MoveIntoSelf => StorageError::MoveIntoSelf,
        StorageError::SameFile => StorageError::SameFile,
        StorageError::Locked => StorageError::Locked,
        StorageError::ClientGone => StorageError::ClientGone,
        StorageError::RootGone => StorageError::RootGone,
        StorageError::MoveBelowFile { from, to } => StorageError::MoveBelowFile {
            from: from.clone(),
            to: to.clone(),
        },
        StorageError::NoTargetDir { dir, file } => StorageError::NoTargetDir {
            dir: dir.clone(),
            file: *file,
        },
        StorageError::MoveTooDeep { limit } => StorageError::MoveTooDeep { limit: *limit },
        StorageError::ReadOnly => StorageError::ReadOnly,
        StorageError::Digest(refused) => StorageError::Digest(refused.clone()),
        StorageError::SourceIsTarget => StorageError::SourceIsTarget,
        StorageError::InSource { index, error } => StorageError::InSource {
            index: *index,
            error: Box::new(share(error)),
        },
        StorageError::Source(e) => StorageError::Source(copy(e)),
        StorageError::Io(e) => StorageError::Io(copy(e)),
    }
}

/// A running batch: if its leader panics, every append of the batch is answered with an
/// error and the queue gets a new leader, so nobody waits for a batch that will never end.
struct Leading<'q> {
    queue: &'q Queue,
    tickets: Vec<u64>,
    finished: bool,
}

impl Drop for Leading<'_> {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let mut state = locked(&self.queue.state);
        for &ticket in &self.tickets {
            state.answers.entry(ticket).or_insert_with(|| {
                Joined::Done(Err(StorageError::Io(io::Error::other(
                    "the batch this append was in failed unexpectedly; nothing of it was acknowledged",
                ))))
            });
        }
        state.leading = false;
        self.queue.turn.notify_all();
    }
}
