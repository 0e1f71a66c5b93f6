//! ollama-proxy: a Wake-on-LAN gateway in front of an Ollama server that sleeps.
//!
//! It answers metadata from its cache while the host sleeps, wakes the host when real work arrives,
//! holds that work while it boots, then replays it and streams the answers back. How it behaves is
//! described in docs/behaviour.md.
#![deny(missing_docs)]

pub(crate) mod acked;
pub(crate) mod auth;
pub(crate) mod backend;
pub(crate) mod body;
pub(crate) mod cache;
pub mod cli;
pub mod commands;
pub(crate) mod config;
mod conn;
pub(crate) mod doctor;
pub(crate) mod driver;
pub(crate) mod error;
pub(crate) mod handler;
pub(crate) mod headers;
pub mod learn;
mod listen;
pub mod logging;
pub(crate) mod meta;
pub(crate) mod models;
pub(crate) mod monitor;
pub mod netinfo;
pub(crate) mod outbound;
pub(crate) mod proxy;
pub(crate) mod request;
pub(crate) mod resolve;
pub(crate) mod rfc3339;
pub(crate) mod routed;
pub(crate) mod routes;
pub mod routing;
pub mod server;
pub(crate) mod several;
pub(crate) mod signals;
pub(crate) mod sleep;
pub(crate) mod status;
#[cfg(test)]
mod test_waker;
pub(crate) mod throttle;
pub(crate) mod units;
pub(crate) mod upstream;
pub(crate) mod wake;

pub use config::{CacheFile, Config, StateDirs};
pub use server::run;
