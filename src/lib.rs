//! http-nas: shared persistent storage for Kubernetes jobs over plain HTTP.
//!
//! Data flows one way: socket → `http` (wire format, connection handling) → `app` (URL to
//! operation, operation to storage call and reply) → `storage` (files under the root).
//! `storage` knows nothing of HTTP and `http` nothing of files. `server` wires them together;
//! `main.rs` only parses flags and waits for a signal.
//!
//! The map for the next engineer (the flow in a picture, a line per file, the invariants not
//! to break, and where to change what) is `docs/ARCHITECTURE.md`.
#![deny(unsafe_code)]

mod allocator;
mod app;
mod config;
mod http;
mod logging;
mod path;
mod pool;
mod server;
mod storage;
mod sys;
mod time;
mod volume;

// The library's surface is this facade; every module above is private to the crate, so the
// compiler reports whatever nothing reaches as dead code.

/// What the binary needs: parse flags, start the server, wait for a stop signal.
pub use allocator::ThreadCache;
pub use config::{Command, Config, help, parse as parse_args};
pub use http::{Server, ShutdownReport};
pub use logging::init as init_logging;
pub use server::{StartError, start};
pub use sys::{block_stop_signals, wait_for_stop_signal};

/// The pure entry points where untrusted bytes come in, for the fuzz targets (`fuzz/`) and
/// the micro-benchmarks (`benches/`): they drive the production code, not copies of it.
pub mod entry {
    pub use crate::app::digest_fields::{
        Field as DigestField, base64_decode, base64_encode, parse as parse_digest_field,
    };
    pub use crate::app::url::{Op, parse as parse_url};
    pub use crate::http::body::{Body, BodyError, Framing, ReadBuf};
    pub use crate::http::head::{HeadError, HeadStatus, MAX_HEAD_BYTES, MAX_HEADERS, check_head, parse_head};
    pub use crate::path::{Naming, RelPath, listed_name};
    pub use crate::storage::digest::{Hasher as DigestHasher, Wanted as DigestsWanted};
    pub use crate::storage::wc::count_lines;
}
