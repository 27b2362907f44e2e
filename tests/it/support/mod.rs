//! Harness for the integration tests: a [`Server`] per test, driven by `curl` and `sh` or by
//! exact bytes over a raw socket. Tests import from here (`crate::support::{Server, ...}`) and
//! the raw-socket tools from `crate::support::raw`, whatever file they live in.
//!
//! - `server`: temp dirs, the `http-nas` process (start, restart, signal, kill), its log, and
//!   the files under its root as seen on disk.
//! - `curl`: requests through the real `curl`, `sh -c` and the README's commands verbatim.
//! - `raw`: exact bytes over a `TcpStream`, for the requests curl would never send.
//! - `response`: the [`Response`] both of those return, and its assertions.
//! - `wait`: bounded polling and the upper bounds tests wait for the server with.
//! - `bytes`: reproducible test data, and comparing and previewing byte strings.
//! - `strace`: whether the fault- and delay-injection tests can run here.
//! - `skip`: a test that cannot run here says why, and the skip is counted (`make test`).
//! - `mounts`: a tmpfs or a loop-mounted ext4 of its own for one test, unmounted on drop.
//! - `writes`, `races`, `abandon`, `probe`, `headers`: fixtures several test files share (a
//!   target with known contents, strace-delayed replicas, abandoned bodies, bounded probes,
//!   ETags); each test file imports them by name.
//!
//! Every [`Response`] carries the exact command (or bytes) and curl's stderr that produced it,
//! and a failing test prints the server's log.

pub mod abandon;
mod bytes;
mod curl;
pub mod headers;
pub mod mounts;
pub mod probe;
pub mod races;
pub mod raw;
mod response;
mod server;
mod skip;
mod strace;
mod wait;
pub mod writes;

pub use bytes::{assert_same_bytes, b64, preview, random_bytes};
pub use response::Response;
pub use server::{JOURNAL_PREFIX, RESERVED_PREFIX, Server, TempDir, server_binary};
pub use skip::skip;
pub use strace::{strace_injecting, strace_usable};
pub use wait::{SETTLE_TIMEOUT, UPLOAD_START_TIMEOUT, wait_until};
