//! http-nas: shared persistent storage for Kubernetes jobs over plain HTTP.
//!
//! Data flows one way: socket → [`http`] (wire format, connection handling) → [`api`] (URL to
//! operation) → [`handlers`] (operation to storage call and reply) → [`storage`] (files under
//! the root). `storage` knows nothing of HTTP and `http` nothing of files. [`server`] wires
//! them together; `main.rs` only parses flags and waits for a signal.
#![deny(unsafe_code)]

pub mod api;
pub mod auth;
pub mod config;
pub mod error;
pub mod handlers;
pub mod http;
pub mod listing;
pub mod metrics;
pub mod pool;
pub mod probes;
pub mod range;
pub mod server;
pub mod storage;
pub mod sys;
pub mod time;
pub mod volume;
