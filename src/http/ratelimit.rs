//! The service API's per-caller rate limit (guide, "Service API Security": 100 requests per
//! minute by default, `CRM_SERVICE_RATE_LIMIT`, `0` switches it off).
//!
//! A caller is the token that authenticated it, or its IP address when it has none, so guessing
//! the token is limited as well.

use std::num::NonZeroU32;
use std::sync::{Arc, Weak};
use std::time::Duration;

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
/// append-only audit log. Used for rate-limited and for unauthenticated service calls.
pub struct Notices(DefaultKeyedRateLimiter<String>);

impl Notices {
    pub fn per_minute(n: NonZeroU32) -> Notices {
        Notices(RateLimiter::keyed(Quota::per_minute(n)))
    }

    /// Whether a refusal for `key` may be audited now (and counts it if so).
    pub fn allow(&self, key: &str) -> bool {
        self.0.check_key(&key.to_string()).is_ok()
    }

    /// Forgets keys whose allowance is full again.
    pub fn retain_recent(&self) {
        self.0.retain_recent();
        self.0.shrink_to_fit();
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    Limited {
        retry_after_secs: u64,
        /// The first refusal in a while: worth an audit entry.
        notify: bool,
    },
}

impl Limiter {
    /// `None` when `per_minute` is 0 (no limit).
    pub fn per_minute(per_minute: u32) -> Option<Arc<Limiter>> {
        let n = NonZeroU32::new(per_minute)?;
        Some(Arc::new(Limiter {
            calls: RateLimiter::keyed(Quota::per_minute(n)),
            notices: Notices::per_minute(NonZeroU32::MIN),
        }))
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
        assert!(notify, "the first refusal is audited");
        assert!(
            matches!(limiter.check("token:current"), Verdict::Limited { notify: false, .. }),
            "later refusals in the same minute are not audited again"
        );
        assert_eq!(limiter.check("ip:10.0.0.1"), Verdict::Allowed);
        assert_eq!(limiter.len(), 2);
    }

    #[test]
    fn notices_allow_their_number_per_key_then_none() {
        let notices = Notices::per_minute(NonZeroU32::new(2).unwrap());
        assert!(notices.allow("ip:10.0.0.1") && notices.allow("ip:10.0.0.1"));
        assert!(!notices.allow("ip:10.0.0.1"));
        assert!(notices.allow("ip:10.0.0.2"), "each key has its own allowance");
    }
}
