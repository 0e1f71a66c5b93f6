//! Warnings written at most once per interval, counting what they skipped: a flood of the same
//! trouble (accept errors, a lack of file descriptors) must not flood the log.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// At most one warning per this interval for each kind of trouble.
pub(crate) const WARN_EVERY: Duration = Duration::from_secs(5);

/// A warning that is written at most once per [`WARN_EVERY`], counting what it skipped.
pub(crate) struct Throttled {
    last: Option<Instant>,
    skipped: u64,
}

impl Throttled {
    pub(crate) const fn new() -> Self {
        Throttled {
            last: None,
            skipped: 0,
        }
    }

    /// `Some(skipped)` when a warning may be written now.
    pub(crate) fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        if self.last.is_some_and(|t| now < t + WARN_EVERY) {
            self.skipped += 1;
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.skipped))
    }
}

/// A [`Throttled`] shared by every task.
pub(crate) struct SharedThrottle(Mutex<Throttled>);

impl SharedThrottle {
    pub(crate) const fn new() -> Self {
        SharedThrottle(Mutex::new(Throttled::new()))
    }

    /// `Some(skipped)` when a warning may be written now.
    pub(crate) fn due(&self) -> Option<u64> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).due()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn warnings_are_throttled() {
        let mut t = Throttled::new();
        assert_eq!(t.due(), Some(0));
        assert_eq!(t.due(), None);
        assert_eq!(t.due(), None);
        tokio::time::advance(WARN_EVERY).await;
        assert_eq!(t.due(), Some(2));
    }
}
