//! Integration tests for http-nas, in one test binary (as ripgrep does) so the suite links once
//! and every module shares the harness: `util` (a real server per test, driven by curl and `sh`)
//! and `raw` (exact bytes over a `TcpStream`).
//!
//! - `seed`: the original service's README commands and test suite, unchanged but for the host.
//! - `hostile`: clients that vanish, lie about lengths, break framing or sit idle.
//! - `paths`: traversal in every spelling and through symlinks; reserved and ambiguous names.

mod hostile;
mod paths;
mod raw;
mod seed;
mod util;
