//! Learning a backend's MAC and where its magic packets go (see "Learning the MAC" in
//! docs/behaviour.md).

pub mod record;

pub use record::Learned;
