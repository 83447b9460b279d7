//! The service API's per-caller rate limit (guide, "Service API Security": 100 requests per
//! minute by default, `CRM_SERVICE_RATE_LIMIT`, `0` switches it off).
//!
//! A caller is the token that authenticated it, or its IP address when it has none, so guessing
//! the token is limited as well.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// How often keys that have fully recovered are forgotten: governor keeps every key it has seen
/// until told otherwise, and an unauthenticated flood brings a new key per address.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

pub struct Limiter {
    calls: DefaultKeyedRateLimiter<String>,
    /// One audit notice per caller per minute while it is being refused.
    notices: Notices,
}

/// Unauthenticated calls (service API, staff API) audited per address and minute, for each
/// surface: enough to see each of a misconfigured caller's different mistakes, while a flood of
/// guesses no longer grows the audit log freely.
pub const UNAUTHENTICATED_AUDITS_PER_MINUTE: NonZeroU32 = NonZeroU32::new(10).unwrap();

/// How many audit entries one kind of refusal may write per key and minute, so a flood of
/// refused requests (which are cheap to send) does not turn into a flood of rows in the
/// append-only audit log. The refusals not written are counted, and the key's next entry says
/// how many there were, so the log still accounts for every attempt. Used for rate-limited and
/// for unauthenticated service and staff calls.
pub struct Notices {
    allowance: DefaultKeyedRateLimiter<String>,
    /// Refusals per key not written since the key's last entry, and when the last was.
    unrecorded: Mutex<HashMap<String, (u64, Instant)>>,
}

/// One line for counts no audit entry carried (a flood from many addresses is one line, not
/// one per address), naming the first few callers.
fn log_counts(mut counts: Vec<(String, u64)>) {
    if counts.is_empty() {
        return;
    }
    counts.sort_by_key(|(_, n)| std::cmp::Reverse(*n));
    let refusals: u64 = counts.iter().map(|(_, n)| n).sum();
    let most: Vec<String> = counts.iter().take(10).map(|(key, n)| format!("{key}: {n}")).collect();
    tracing::warn!(
        refusals,
        callers = counts.len(),
        most = most.join(", "),
        "refusals over the audit log's cap, not written to it"
    );
}

/// A count no later entry has carried after this long goes to the server's log instead.
const COUNT_KEPT_FOR: Duration = Duration::from_secs(600);

/// Keys whose unwritten refusals are counted at most: a flood from more addresses than this
/// still gets each address's first entries written, only not the count of the rest.
const MAX_COUNTED_KEYS: usize = 100_000;

impl Notices {
    pub fn per_minute(n: NonZeroU32) -> Notices {
        Notices::with_quota(Quota::per_minute(n))
    }

    fn with_quota(quota: Quota) -> Notices {
        Notices {
            allowance: RateLimiter::keyed(quota),
            unrecorded: Mutex::default(),
        }
    }

    /// `Some(n)` when a refusal for `key` may be audited now, `n` being the refusals for the key
    /// not audited since its last entry (for the new entry to say); `None` when this one is not
    /// audited (it is counted for the next).
    pub fn allow(&self, key: &str) -> Option<u64> {
        let mut unrecorded = self.unrecorded.lock().unwrap_or_else(|p| p.into_inner());
        if self.allowance.check_key(&key.to_string()).is_ok() {
            return Some(unrecorded.remove(key).map_or(0, |(n, _)| n));
        }
        let now = Instant::now();
        if let Some((n, last)) = unrecorded.get_mut(key) {
            *n += 1;
            *last = now;
        } else if unrecorded.len() < MAX_COUNTED_KEYS {
            unrecorded.insert(key.to_string(), (1, now));
        }
        // Past MAX_COUNTED_KEYS callers refused at once, a new one's refusals are answered and
        // shown in the request log, but not counted: a count per caller would be the flood.
        None
    }

    /// Forgets keys whose allowance is full again. A caller that stopped after refusals that
    /// were not written has no later entry to carry their count: after ten minutes the count
    /// goes to the server's log, so every attempt is still on record somewhere.
    pub fn retain_recent(&self) {
        self.allowance.retain_recent();
        self.allowance.shrink_to_fit();
        log_counts(self.take_counts_older_than(COUNT_KEPT_FOR));
    }

    /// Every count not carried yet, to the server's log: for a stop.
    pub fn flush(&self) {
        log_counts(self.take_counts_older_than(Duration::ZERO));
    }

    /// Removes and returns the counts whose last refusal is at least `age` old.
    fn take_counts_older_than(&self, age: Duration) -> Vec<(String, u64)> {
        let mut unrecorded = self.unrecorded.lock().unwrap_or_else(|p| p.into_inner());
        let mut taken = Vec::new();
        unrecorded.retain(|key, (n, last)| {
            let stale = last.elapsed() >= age;
            if stale {
                taken.push((key.clone(), *n));
            }
            !stale
        });
        taken
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Limited {
        retry_after_secs: u64,
        /// The first refusal in a while: worth an audit entry, which says how many refusals
        /// before it were not written (see [`Notices::allow`]).
        notify: Option<u64>,
    },
}

impl Limiter {
    /// `None` when `per_minute` is 0 (no limit).
    pub fn per_minute(per_minute: u32) -> Option<Arc<Limiter>> {
        NonZeroU32::new(per_minute).map(Limiter::new)
    }

    /// `n` calls per minute per key, and one audit entry per key and minute for the refusals.
    pub fn new(n: NonZeroU32) -> Arc<Limiter> {
        Arc::new(Limiter {
            calls: RateLimiter::keyed(Quota::per_minute(n)),
            notices: Notices::per_minute(NonZeroU32::MIN),
        })
    }

    pub fn check(&self, key: &str) -> Verdict {
        let key = key.to_string();
        match self.calls.check_key(&key) {
            Ok(()) => Verdict::Allowed,
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.calls.clock().now());
                Verdict::Limited {
                    // Rounded up, and never 0: "retry after 0 seconds" invites a busy loop.
                    retry_after_secs: (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1),
                    notify: self.notices.allow(&key),
                }
            }
        }
    }

    /// Forgets callers whose allowance is full again.
    pub fn retain_recent(&self) {
        self.calls.retain_recent();
        self.calls.shrink_to_fit();
        self.notices.retain_recent();
    }

    /// Every refusal count not carried yet, to the server's log: for a stop.
    pub fn flush(&self) {
        self.notices.flush();
    }

    /// Callers currently remembered.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }

    /// Sweeps forgotten callers every minute for as long as the limiter is in use.
    pub fn spawn_sweeper(limiter: &Arc<Limiter>) {
        spawn_sweeper(limiter, Limiter::retain_recent);
    }
}

/// Calls `sweep` every minute for as long as `target` is in use. Does nothing outside a tokio
/// runtime (the target then lives only as long as a test that builds it).
pub fn spawn_sweeper<T: Send + Sync + 'static>(target: &Arc<T>, sweep: fn(&T)) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak: Weak<T> = Arc::downgrade(target);
    runtime.spawn(async move {
        let mut tick = tokio::time::interval(SWEEP_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match weak.upgrade() {
                Some(target) => sweep(&target),
                None => break,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_means_no_limit() {
        assert!(Limiter::per_minute(0).is_none());
    }

    #[test]
    fn a_caller_beyond_its_allowance_is_told_when_to_retry_and_others_are_unaffected() {
        let limiter = Limiter::per_minute(3).unwrap();
        for _ in 0..3 {
            assert_eq!(limiter.check("token:current"), Verdict::Allowed);
        }
        let Verdict::Limited {
            retry_after_secs,
            notify,
        } = limiter.check("token:current")
        else {
            panic!("the fourth call within a minute must be refused");
        };
        // One call comes back every 20 seconds at 3 per minute.
        assert!((1..=20).contains(&retry_after_secs), "{retry_after_secs}");
        assert_eq!(notify, Some(0), "the first refusal is audited");
        assert!(
            matches!(limiter.check("token:current"), Verdict::Limited { notify: None, .. }),
            "later refusals in the same minute are not audited again"
        );
        assert_eq!(limiter.check("ip:10.0.0.1"), Verdict::Allowed);
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn notices_allow_their_number_per_key_then_none() {
        let notices = Notices::per_minute(NonZeroU32::new(2).unwrap());
        assert_eq!(notices.allow("ip:10.0.0.1"), Some(0));
        assert_eq!(notices.allow("ip:10.0.0.1"), Some(0));
        assert_eq!(notices.allow("ip:10.0.0.1"), None);
        assert_eq!(notices.allow("ip:10.0.0.2"), Some(0), "each key has its own allowance");
    }

    /// The refusals not written are counted, and the next entry for the key carries the count.
    /// One allowance a second: every step that expects a refusal comes well within it.
    #[test]
    fn the_next_notice_counts_the_refusals_not_written() {
        let notices = Notices::with_quota(Quota::with_period(Duration::from_secs(1)).unwrap());
        assert_eq!(notices.allow("ip:10.0.0.1"), Some(0));
        for _ in 0..3 {
            assert_eq!(notices.allow("ip:10.0.0.1"), None);
        }
        assert_eq!(notices.allow("ip:10.0.0.2"), Some(0));
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(notices.allow("ip:10.0.0.1"), Some(3));
        assert_eq!(notices.allow("ip:10.0.0.2"), Some(0));

        // A count no later entry carries is handed over (to the server's log) and forgotten.
        assert_eq!(notices.allow("ip:10.0.0.1"), None);
        assert_eq!(notices.take_counts_older_than(Duration::from_secs(60)), []);
        assert_eq!(
            notices.take_counts_older_than(Duration::ZERO),
            [("ip:10.0.0.1".to_string(), 1)]
        );
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(notices.allow("ip:10.0.0.1"), Some(0));
    }
}
