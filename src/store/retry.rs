//! How the background threads (WAL checkpoints, the audit log's index by target) go on after a
//! failure that may pass, such as a full disk or a lock held by another process: they try again
//! every [`PAUSE`] or so, and log the first failure of a streak, then one in every [`LOG_EVERY`]
//! (a minute or more apart), then the first success with the count, so that a full disk does not
//! also fill the log.

use std::fmt::Display;
use std::time::Duration;

/// Between a failed try and the next. Trying more often gains nothing while the disk is full.
pub const PAUSE: Duration = Duration::from_secs(1);

/// A long streak of failures is logged once in this many.
const LOG_EVERY: u64 = 60;

/// Failures in a row of one kind of work, named for the log (`WAL checkpoint`).
#[derive(Debug)]
pub struct Streak {
    what: &'static str,
    failed: u64,
}

impl Streak {
    pub fn new(what: &'static str) -> Streak {
        Streak { what, failed: 0 }
    }

    /// A try failed: logged if it starts a streak, or once in [`LOG_EVERY`] after that.
    pub fn failed(&mut self, error: &dyn Display) {
        if self.add() {
            tracing::warn!(%error, failed = self.failed, "{} failed; retrying every second", self.what);
        }
    }

    /// A try succeeded: the end of a streak, if there was one, is logged with its count.
    pub fn succeeded(&mut self) {
        if let Some(failed) = self.end() {
            tracing::info!(failed, "{} succeeds again", self.what);
        }
    }

    /// Counts a failure; true if this one is to be logged.
    fn add(&mut self) -> bool {
        self.failed += 1;
        self.failed % LOG_EVERY == 1
    }

    /// How many failed before a success, if any did.
    fn end(&mut self) -> Option<u64> {
        (self.failed > 0).then(|| std::mem::take(&mut self.failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_is_logged_at_its_start_once_a_minute_and_at_its_end() {
        let mut failing = Streak::new("test");
        assert_eq!(failing.end(), None, "no streak, nothing to report");
        let mut logged = Vec::new();
        for n in 1..=2 * LOG_EVERY + 1 {
            if failing.add() {
                logged.push(n);
            }
        }
        assert_eq!(logged, [1, LOG_EVERY + 1, 2 * LOG_EVERY + 1]);
        assert_eq!(failing.end(), Some(2 * LOG_EVERY + 1));
        assert_eq!(failing.end(), None, "the count starts over");
        assert!(failing.add(), "the first failure of the next streak is logged again");
    }
}
