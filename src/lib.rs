//! ollama-proxy: a Wake-on-LAN gateway in front of an Ollama server that sleeps.
//!
//! It answers metadata from its cache while the host sleeps, wakes the host when real work arrives,
//! holds that work while it boots, then replays it and streams the answers back.

pub mod backend;
pub mod body;
pub mod cache;
pub mod cli;
pub mod commands;
pub mod config;
mod conn;
pub mod driver;
pub mod error;
pub mod handler;
pub mod headers;
mod listen;
pub mod logging;
pub mod models;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod signals;
pub mod units;
pub mod upstream;
pub mod wake;

pub use config::Config;
pub use server::run;
