//! Ollama's addresses for new connections: an IP address is used as written; a host name is looked
//! up at most once per [`LOOKUP_FRESH`] (see "Backend state" in docs/behaviour.md).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::upstream::{local_shortage, out_of_descriptors, ConnectError};

/// How long a name's addresses are used without looking it up again. Without it every new
/// connection asks the resolver (glibc keeps no cache: a DNS query each), a release of 1,000 held
/// requests makes 1,000 queries one after another, and a wake cycle's probes 40 a second; a desktop
/// that got a new address is still found within this long.
pub(crate) const LOOKUP_FRESH: Duration = Duration::from_secs(2);

/// A name's addresses and when they were looked up.
#[derive(Debug, Clone)]
struct Found {
    addrs: Vec<SocketAddr>,
    at: Instant,
}

impl Found {
    /// Looked up less than [`LOOKUP_FRESH`] before `now`.
    fn is_fresh(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.at) < LOOKUP_FRESH
    }
}

/// Where new connections to Ollama go.
#[derive(Debug)]
pub struct Resolver {
    /// `host:port`; IPv6 hosts keep their brackets: "[fd00::5]:11434".
    target: String,
    /// The address itself, when the host is an IP address.
    literal: Option<SocketAddr>,
    /// The last lookup that found addresses.
    last: Mutex<Option<Found>>,
}

impl Resolver {
    pub fn new(host: &str, port: u16) -> Self {
        let target = format!("{host}:{port}");
        Resolver {
            literal: target.parse().ok(),
            target,
            last: Mutex::new(None),
        }
    }

    /// `host:port`, as looked up.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// Ollama's addresses now.
    pub async fn addrs(&self) -> Result<Vec<SocketAddr>, ConnectError> {
        if let Some(addr) = self.literal {
            return Ok(vec![addr]);
        }
        self.addrs_via(Instant::now(), |target| async move {
            tokio::net::lookup_host(target)
                .await
                .map(|found| found.collect())
        })
        .await
    }

    /// [`Resolver::addrs`] with `lookup` asking the resolver. A lookup that fails after an earlier
    /// one succeeded uses that one's answer, however old: looking a name up needs descriptors too
    /// (/etc/hosts, a DNS socket), and a resolver short of them says "not known"; a sleeping
    /// desktop that serves its own name says nothing.
    async fn addrs_via<F, Fut>(
        &self,
        now: Instant,
        lookup: F,
    ) -> Result<Vec<SocketAddr>, ConnectError>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = io::Result<Vec<SocketAddr>>>,
    {
        let last = match self.last.lock().unwrap_or_else(|e| e.into_inner()).clone() {
            Some(found) if found.is_fresh(now) => return Ok(found.addrs),
            last => last,
        };
        match lookup(self.target.clone()).await {
            Ok(addrs) => {
                if !addrs.is_empty() {
                    let found = Found {
                        addrs: addrs.clone(),
                        at: now,
                    };
                    *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(found);
                }
                Ok(addrs)
            }
            Err(e) => {
                if let Some(found) = last {
                    tracing::debug!(error = %e, "lookup failed; using the addresses found before");
                    return Ok(found.addrs);
                }
                Err(match local_shortage(&e).or_else(out_of_descriptors) {
                    Some(resource) => ConnectError::Local(resource),
                    None => ConnectError::Resolve(self.target.clone(), e.to_string()),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// A resolver for `desktop.lan:11434`, a count of its lookups, and the time they start at.
    fn desktop() -> (Resolver, AtomicUsize, Instant) {
        let r = Resolver::new("desktop.lan", 11434);
        (r, AtomicUsize::new(0), Instant::now())
    }

    /// A lookup answering `answer`, counted in `calls`.
    fn counting(
        calls: &AtomicUsize,
        answer: io::Result<Vec<SocketAddr>>,
    ) -> impl FnOnce(String) -> std::future::Ready<io::Result<Vec<SocketAddr>>> + '_ {
        move |target| {
            assert_eq!(target, "desktop.lan:11434");
            calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(answer)
        }
    }

    #[tokio::test]
    async fn a_name_is_looked_up_once_per_lookup_fresh() {
        let (r, calls, t0) = desktop();
        let a = vec![addr("192.168.1.20:11434")];
        let got = r.addrs_via(t0, counting(&calls, Ok(a.clone()))).await;
        assert_eq!(got.unwrap(), a);
        // Within LOOKUP_FRESH: the resolver is not asked.
        let soon = t0 + LOOKUP_FRESH - Duration::from_millis(1);
        let got = r.addrs_via(soon, counting(&calls, Ok(vec![]))).await;
        assert_eq!(got.unwrap(), a);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        // After it: asked again, and a new address is used at once.
        let b = vec![addr("192.168.1.21:11434")];
        let later = t0 + LOOKUP_FRESH;
        let got = r.addrs_via(later, counting(&calls, Ok(b.clone()))).await;
        assert_eq!(got.unwrap(), b);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_failed_lookup_uses_the_last_answer_however_old() {
        let (r, calls, t0) = desktop();
        let a = vec![addr("192.168.1.20:11434")];
        r.addrs_via(t0, counting(&calls, Ok(a.clone())))
            .await
            .unwrap();
        let much_later = t0 + Duration::from_secs(3600);
        let failed = Err(io::Error::other("not known"));
        let got = r.addrs_via(much_later, counting(&calls, failed)).await;
        assert_eq!(got.unwrap(), a);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_name_never_found_is_a_resolve_error_and_nothing_is_kept() {
        let (r, calls, t0) = desktop();
        let failed = Err(io::Error::other("not known"));
        let got = r.addrs_via(t0, counting(&calls, failed)).await;
        assert!(matches!(got, Err(ConnectError::Resolve(t, _)) if t == "desktop.lan:11434"));
        // An empty answer is passed on, not kept: the next connect asks again.
        let got = r.addrs_via(t0, counting(&calls, Ok(vec![]))).await;
        assert!(got.unwrap().is_empty());
        let a = vec![addr("192.168.1.20:11434")];
        let got = r.addrs_via(t0, counting(&calls, Ok(a.clone()))).await;
        assert_eq!(got.unwrap(), a);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn ip_addresses_are_used_as_written() {
        let v4 = Resolver::new("192.168.1.20", 11434);
        assert_eq!(v4.literal, Some(addr("192.168.1.20:11434")));
        let v6 = Resolver::new("[fd00::5]", 11434);
        assert_eq!(v6.literal, Some(addr("[fd00::5]:11434")));
        assert_eq!(Resolver::new("desktop.lan", 11434).literal, None);
    }
}
