//! Integration tests for http-nas, in one test binary (as ripgrep does) so the suite links once
//! and every module shares the harness in `support`: a real server per test, driven by curl and
//! `sh` or by exact bytes over a `TcpStream` (`support::raw`).
//!
//! - `seed`: the original service's README commands and test suite, unchanged but for the host.
//! - `hostile`: clients that vanish, lie about lengths, break framing or sit idle.
//! - `paths`: traversal in every spelling and through symlinks; reserved and ambiguous names.
//! - `durability` (issue 3): concurrent appends and replacements, a full disk, `kill -9`,
//!   idle connections, overload, timeouts and graceful shutdown lose nothing acknowledged.
//! - `http_features` (issue 4): ranges and resume, validators, conditional writes, listings,
//!   tokens, probes, metrics, `Allow` and the access log.
//! - `protocol` and `crash` (issue 15): one test per finding against the write protocol, and
//!   `kill -9` at random moments on a plain and a throttled disk.
//! - `clients` (issue 11): the original's real call sites, run as they are written.
//! - `bounds` (issue 10): saturated workers, queues and connection limits, unauthenticated and
//!   slow clients, huge listings, exhausted descriptors: probes still answer, nothing waits
//!   without end.
//! - `browser` (issue 14): the browse page in headless chromium.
//! - `replicas` (issue 12): two and three replicas on a GlusterFS volume (`make test-replicas`
//!   sets it up; skipped otherwise).
//! - `listings`: listings whole under concurrency in every form, and every listed name (plain
//!   line, JSON `href`, browse-page link) usable as given, whatever the name.
//! - `stored_pages`: stored files never run as pages of the service's origin (nosniff, CSP
//!   sandbox, markup as attachments).
//! - `preconditions`: `If-Match`, `If-Unmodified-Since` and `If-Modified-Since` on every method,
//!   and `Cache-Control` on files and listings.
//! - `validators`: ETags and `If-Range` dates on a one-second filesystem that reuses inodes.
//! - `other_writer` (issue 9): another writer of the volume swapping symlinks in and planting
//!   special files at the server's own names.
//! - `moves_deletes`: trees nested past `PATH_MAX` deleted whole and swept, moves that would make
//!   a path no request can name, targets ending in `/`, a move below a file.
//! - `startup`: the start-up sweep over 100,000 crash-record names, orphans removed.
//! - `readonly`: a volume remounted read-only under the server: writes 507, reads work.

mod attack_concurrency;
mod bounds;
mod browser;
mod clients;
mod crash;
mod durability;
mod faults;
mod hostile;
mod http_features;
mod listings;
mod moves_deletes;
mod other_writer;
mod paths;
mod preconditions;
mod protocol;
mod readonly;
mod replicas;
mod security;
mod seed;
mod startup;
mod stored_pages;
mod support;
mod validators;
