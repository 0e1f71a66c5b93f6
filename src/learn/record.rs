//! What was learned about a backend's network card, kept in its cache file beside the cached
//! answers (see "Learning the MAC" in docs/behaviour.md). Cache files written before learning
//! existed load unchanged; a record that cannot be read is dropped with a warning and never costs
//! the rest of the file.

use std::net::Ipv4Addr;
use std::path::Path;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use wol::MacAddr;

/// The MAC of a backend and where its magic packets go.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Learned {
    /// The backend's address whose neighbour entry gave the MAC.
    pub ip: Ipv4Addr,
    /// The backend's hardware address.
    #[serde(with = "mac_text")]
    pub mac: MacAddr,
    /// This machine's interface on the backend's subnet.
    pub interface: String,
    /// That subnet's directed broadcast address.
    pub broadcast: Ipv4Addr,
    /// Unix seconds when this MAC, interface and broadcast were first learned.
    pub learned_at: u64,
}

impl Learned {
    /// Learned for the address `addr` (a record for another one is not that backend's card).
    pub fn is_for(&self, addr: std::net::IpAddr) -> bool {
        std::net::IpAddr::V4(self.ip) == addr
    }

    /// Same card at the same place: everything but the time it was learned.
    pub fn same_as(&self, other: &Learned) -> bool {
        (self.ip, self.mac, &self.interface, self.broadcast)
            == (other.ip, other.mac, &other.interface, other.broadcast)
    }
}

/// A MAC in the file as text (`aa:bb:cc:dd:ee:ff`), read back strictly.
mod mac_text {
    use super::*;

    pub fn serialize<S: Serializer>(mac: &MacAddr, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(mac)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<MacAddr, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The cache file's `learned` field: an unreadable record is `None` (with a warning), so that the
/// cached answers beside it still load.
pub fn lenient<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Learned>, D::Error> {
    let value = Option::<serde_json::Value>::deserialize(d)?;
    Ok(value.and_then(|v| match serde_json::from_value(v) {
        Ok(learned) => Some(learned),
        Err(e) => {
            tracing::warn!(error = %e, "ignoring an unreadable learned MAC record in the cache file");
            None
        }
    }))
}

/// Only the record, from a whole cache file.
#[derive(Deserialize)]
struct OnlyLearned {
    #[serde(default, deserialize_with = "lenient")]
    learned: Option<Learned>,
}

/// Why a cache file's record could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The file exists but cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The cache file.
        path: std::path::PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not JSON of a cache file.
    #[error("{} is not a cache file: {source}", path.display())]
    Corrupt {
        /// The cache file.
        path: std::path::PathBuf,
        /// Where the JSON went wrong.
        #[source]
        source: serde_json::Error,
    },
}

/// The record in the cache file at `path`; `None` when the file is missing or holds none.
pub fn read(path: &Path) -> Result<Option<Learned>, ReadError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(ReadError::Io {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    serde_json::from_slice::<OnlyLearned>(&bytes)
        .map(|o| o.learned)
        .map_err(|source| ReadError::Corrupt {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Learned {
        Learned {
            ip: Ipv4Addr::new(192, 168, 1, 50),
            mac: "02:00:5e:10:20:30".parse().unwrap(),
            interface: "eth0".into(),
            broadcast: Ipv4Addr::new(192, 168, 1, 255),
            learned_at: 1_700_000_000,
        }
    }

    #[test]
    fn written_as_text_and_read_back() {
        let json = serde_json::to_value(record()).unwrap();
        assert_eq!(json["mac"], "02:00:5e:10:20:30");
        assert_eq!(json["broadcast"], "192.168.1.255");
        assert_eq!(serde_json::from_value::<Learned>(json).unwrap(), record());
        let later = Learned {
            learned_at: 1_800_000_000,
            ..record()
        };
        assert!(later.same_as(&record()));
        let moved = Learned {
            interface: "wlan0".into(),
            ..record()
        };
        assert!(!moved.same_as(&record()));
    }

    #[test]
    fn read_from_a_cache_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cache.json");
        assert!(read(&path).unwrap().is_none());
        // A cache file from before learning: no record, no error.
        std::fs::write(&path, br#"{"tags":null,"version":null,"show":{}}"#).unwrap();
        assert!(read(&path).unwrap().is_none());
        let with = serde_json::json!({"show": {}, "learned": record()});
        std::fs::write(&path, with.to_string()).unwrap();
        assert_eq!(read(&path).unwrap(), Some(record()));
        // A bad record is no record.
        let bad =
            serde_json::json!({"learned": {"ip": "192.168.1.50", "mac": "010:02:03:04:05:6"}});
        std::fs::write(&path, bad.to_string()).unwrap();
        assert!(read(&path).unwrap().is_none());
        std::fs::write(&path, b"{not json").unwrap();
        assert!(read(&path)
            .unwrap_err()
            .to_string()
            .contains("not a cache file"));
    }
}
