//! Integration tests for http-nas, in one test binary (as ripgrep does) so the suite links once
//! and every module shares the harness in `support`: a real server per test, driven by curl and
//! `sh` or by exact bytes over a `TcpStream` (`support::raw`). Files are filed by subject and
//! tests named by the behaviour they check; the history is in the commit messages.
//!
//! - `uploads`: replacing and creating files: whole versions, conditional writes, failed uploads.
//! - `appends`: appends land whole and once under concurrency, offsets, failures and races.
//! - `reads_ranges`: GET and HEAD of files, ranges, resumed downloads, ETags, `Content-Type`.
//! - `clean_reads`: a file read before, read again without its lock: every change still seen.
//! - `listings`: listing forms, what they hide, their size and framing, concurrency, odd names.
//! - `concat`: server-side concatenation: like `cat`, atomic, one committed state per source,
//!   refusals, a full disk, shared extents on XFS.
//! - `moves_deletes`: moves and deletes, deep trees, races, targets ending in `/`.
//! - `paths`: the path jail: traversal in every spelling, symlinks, reserved and ambiguous names.
//! - `preconditions`: `If-Match`, `If-Unmodified-Since` and `If-Modified-Since` on every method,
//!   and `Cache-Control` on files and listings.
//! - `validators`: ETags and `If-Range` dates on a one-second filesystem that reuses inodes.
//! - `methods`: 405 and `OPTIONS` with `Allow`.
//! - `framing`: lengths and chunked bodies, 100-continue, head limits, pipelining, HTTP versions.
//! - `limits`: workers, queues, connection and descriptor limits, slow and idle clients, timeouts.
//! - `shutdown`: `SIGTERM` finishes uploads in flight and cuts off stalled ones.
//! - `tokens`: bearer tokens, read-only and read-write, kept out of the log.
//! - `security`: attacks on the service as a whole (see its own doc).
//! - `probes_metrics`: `/healthz`, `/readyz`, `/metrics` and the access log.
//! - `recovery`: `kill -9` at chosen moments, crash records and the start-up sweep.
//! - `crash`: `kill -9` at random moments on a plain and a throttled disk, at length.
//! - `errors`: what a refusal says: the URL form, the path or header at fault, the next step.
//! - `faults`: a paused server, a frozen replica holding a lock, clients that leave, a full
//!   volume, a root swapped under the server, a bad `--listen`.
//! - `startup`: the start-up sweep over 100,000 crash-record names, orphans removed.
//! - `readonly`: a volume remounted read-only under the server: writes 507, reads work.
//! - `other_writer`: another writer of the volume swapping symlinks in and planting special
//!   files at the server's own names.
//! - `replicas`: two and three replicas on a GlusterFS volume (`make test-replicas` sets it up;
//!   skipped otherwise).
//! - `retention`: `--expire`: old files and emptied directories go, busy and young ones stay.
//! - `clients`: the original's real clients' call sites, run as they are written.
//! - `seed`: the original service's README commands and test suite, unchanged but for the host.
//! - `browser`: the browse page in headless chromium.
//! - `stored_pages`: stored files never run as pages of the service's origin (nosniff, CSP
//!   sandbox, markup as attachments).

mod appends;
mod browser;
mod clean_reads;
mod clients;
mod concat;
mod crash;
mod digests;
mod errors;
mod faults;
mod framing;
mod group_commit;
mod limits;
mod listings;
mod methods;
mod moves_deletes;
mod other_writer;
mod paths;
mod preconditions;
mod probes_metrics;
mod readonly;
mod reads_ranges;
mod recovery;
mod replicas;
mod retention;
mod security;
mod seed;
mod shutdown;
mod small_requests;
mod startup;
mod stored_pages;
mod support;
mod tokens;
mod uploads;
mod validators;
