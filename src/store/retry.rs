//! How the background threads (WAL checkpoints, the audit log's index by target) go on after a
//! failure that may pass, such as a full disk or a lock held by another process: they try again
//! every [`PAUSE`] or so, and log the first failure of a streak, then one in every [`LOG_EVERY`]
//! (a minute or more apart), then the first success with the count, so that a full disk does not
//! also fill the log.

use std::time::Duration;

/// Between a failed try and the next. Trying more often gains nothing while the disk is full.
pub const PAUSE: Duration = Duration::from_secs(1);

/// A long streak of failures is logged once in this many.
const LOG_EVERY: u64 = 60;

/// Failures in a row.
#[derive(Debug, Default)]
pub struct Streak(u64);

impl Streak {
    /// Counts a failure; true if this one is to be logged.
    pub fn add(&mut self) -> bool {
        self.0 += 1;
        self.0 % LOG_EVERY == 1
    }

    /// Failures so far in this streak.
    pub fn count(&self) -> u64 {
        self.0
    }

    /// A success: how many failed before it, if any did.
    pub fn end(&mut self) -> Option<u64> {
        (self.0 > 0).then(|| std::mem::take(&mut self.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streak_is_logged_at_its_start_once_a_minute_and_at_its_end() {
        let mut failing = Streak::default();
        assert_eq!(failing.end(), None, "no streak, nothing to report");
        let mut logged = Vec::new();
        for n in 1..=2 * LOG_EVERY + 1 {
            if failing.add() {
                logged.push(n);
            }
        }
        assert_eq!(logged, [1, LOG_EVERY + 1, 2 * LOG_EVERY + 1]);
        assert_eq!(failing.count(), 2 * LOG_EVERY + 1);
        assert_eq!(failing.end(), Some(2 * LOG_EVERY + 1));
        assert_eq!(failing.end(), None, "the count starts over");
        assert!(failing.add(), "the first failure of the next streak is logged again");
    }
}
