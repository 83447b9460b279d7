//! Throttling of failed staff logins, per email and per client address.
//!
//! A small fixed-window counter rather than `governor`: only failures count, and a success must
//! be able to clear an email's count, which a token bucket cannot express. Memory is bounded:
//! each table holds at most `max_keys` entries; expired windows are dropped first, then the
//! oldest window still below its limit, and only when every window is at its limit the oldest
//! of those: a flood of junk emails (one failure each) cannot push a locked-out email's window
//! out and give its guesser five more tries.
//!
//! An IPv6 client is counted by its /64 ([`super::address_block`]).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failures allowed per email, and per client address, within one window.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub per_email: u32,
    pub per_ip: u32,
    pub window: Duration,
    pub max_keys: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            per_email: 5,
            per_ip: 20,
            window: Duration::from_secs(15 * 60),
            max_keys: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    failures: u32,
    /// Whether an attempt has been refused in this window yet: only the first refusal is
    /// audited, so a flood of cheap refused attempts cannot grow the append-only audit log.
    refused: bool,
}

impl Window {
    fn new(now: Instant) -> Window {
        Window {
            started: now,
            failures: 1,
            refused: false,
        }
    }
}

/// An attempt that was let through and counted; [`LoginThrottle::record_success`] takes it
/// back, and only it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use]
pub struct Attempt {
    /// Which window of the address counted it: if that window has since ended (or was
    /// forgotten), the count now holds other attempts' failures, which a success must not erase.
    ip_window: Instant,
}

/// An attempt refused because the email or the address has used up its failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Refused {
    /// Whole seconds to wait, at least 1.
    pub retry_after_secs: u64,
    /// The first refusal in the refusing window (of the email or of the address): the one worth
    /// an audit entry.
    pub first: bool,
}

#[derive(Debug, Default)]
struct Table(HashMap<String, Window>);

impl Table {
    /// When `key` has used up `limit`: the time left before it may try again, and whether this
    /// is its window's first refusal (marking the window as refused).
    fn refuse(&mut self, key: &str, limit: u32, window: Duration, now: Instant) -> Option<(Duration, bool)> {
        let w = self.0.get_mut(key)?;
        let ends = w.started + window;
        if w.failures < limit || ends <= now {
            return None;
        }
        let first = !std::mem::replace(&mut w.refused, true);
        Some((ends - now, first))
    }

    /// Counts one failure; returns when the window that counted it started.
    fn record(&mut self, key: &str, limit: u32, window: Duration, max_keys: usize, now: Instant) -> Instant {
        let live = |w: &Window| now.duration_since(w.started) < window;
        if let Some(w) = self.0.get_mut(key) {
            if live(w) {
                w.failures = w.failures.saturating_add(1);
            } else {
                *w = Window::new(now);
            }
            return w.started;
        }
        if self.0.len() >= max_keys {
            self.0.retain(|_, w| live(w));
        }
        if self.0.len() >= max_keys {
            // Windows at their limit are kept longest (`false` orders first).
            let forget = self
                .0
                .iter()
                .min_by_key(|(_, w)| (w.failures >= limit, w.started))
                .map(|(k, _)| k.clone());
            if let Some(key) = forget {
                self.0.remove(&key);
            }
        }
        self.0.insert(key.to_string(), Window::new(now));
        now
    }
}

#[derive(Debug, Default)]
struct Tables {
    emails: Table,
    ips: Table,
}

/// Shared by every login request (held in `AppState`).
#[derive(Debug, Default)]
pub struct LoginThrottle {
    limits: Limits,
    tables: Mutex<Tables>,
}

impl LoginThrottle {
    pub fn new(limits: Limits) -> LoginThrottle {
        LoginThrottle {
            limits,
            tables: Mutex::default(),
        }
    }

    /// Counts one login attempt against this email and address, as a failure until
    /// [`record_success`](Self::record_success) says otherwise. Checking and counting under one
    /// lock means concurrent guesses cannot all slip through before the first one is counted.
    /// Refused when either has used up its limit.
    pub fn try_attempt(&self, email: &str, ip: &str) -> Result<Attempt, Refused> {
        self.try_attempt_at(email, ip, Instant::now())
    }

    /// A correct password clears the email's count and takes back `attempt` from the address,
    /// but never the address's other failures: someone who alternates guessing others'
    /// passwords with signing in to their own account still reaches the per-address limit.
    pub fn record_success(&self, email: &str, ip: &str, attempt: Attempt) {
        let ip = super::address_key(ip);
        let mut t = self.lock();
        t.emails.0.remove(email);
        if let Some(w) = t.ips.0.get_mut(ip.as_ref()).filter(|w| w.started == attempt.ip_window) {
            w.failures = w.failures.saturating_sub(1);
        }
    }

    fn try_attempt_at(&self, email: &str, ip: &str, now: Instant) -> Result<Attempt, Refused> {
        let l = &self.limits;
        let ip = super::address_key(ip);
        let mut t = self.lock();
        let refusals = [
            t.emails.refuse(email, l.per_email, l.window, now),
            t.ips.refuse(&ip, l.per_ip, l.window, now),
        ];
        if let Some(wait) = refusals.iter().flatten().map(|r| r.0).max() {
            return Err(Refused {
                retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                first: refusals.iter().flatten().any(|r| r.1),
            });
        }
        t.emails.record(email, l.per_email, l.window, l.max_keys, now);
        let ip_window = t.ips.record(&ip, l.per_ip, l.window, l.max_keys, now);
        Ok(Attempt { ip_window })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tables> {
        // The tables hold plain counters; a panic elsewhere cannot leave them inconsistent.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle(max_keys: usize) -> LoginThrottle {
        LoginThrottle::new(Limits {
            per_email: 3,
            per_ip: 5,
            window: Duration::from_secs(60),
            max_keys,
        })
    }

    fn wait(r: Result<Attempt, Refused>) -> Option<u64> {
        r.err().map(|r| r.retry_after_secs)
    }

    #[test]
    fn an_email_is_blocked_after_its_failures_until_the_window_ends() {
        let t = throttle(100);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(t.try_attempt_at("a@x.com", "ip1", start).is_ok());
        }
        assert_eq!(wait(t.try_attempt_at("a@x.com", "ip2", start)), Some(60));
        assert_eq!(
            wait(t.try_attempt_at("a@x.com", "ip2", start + Duration::from_millis(59_500))),
            Some(1)
        );
        assert!(
            t.try_attempt_at("b@x.com", "ip2", start).is_ok(),
            "other emails are not affected"
        );
        assert!(t
            .try_attempt_at("a@x.com", "ip2", start + Duration::from_secs(60))
            .is_ok());
    }

    #[test]
    fn an_address_is_blocked_after_failures_across_many_emails() {
        let t = throttle(100);
        let now = Instant::now();
        for i in 0..5 {
            assert!(t.try_attempt_at(&format!("u{i}@x.com"), "ip1", now).is_ok());
        }
        assert!(t.try_attempt_at("new@x.com", "ip1", now).is_err());
        assert!(t.try_attempt_at("new@x.com", "ip2", now).is_ok());
    }

    #[test]
    fn only_the_first_refusal_of_each_window_is_marked_first() {
        let t = throttle(100);
        let start = Instant::now();
        for _ in 0..3 {
            assert!(t.try_attempt_at("a@x.com", "ip1", start).is_ok());
        }
        let first = |r: Result<Attempt, Refused>| r.err().map(|r| r.first);
        assert_eq!(first(t.try_attempt_at("a@x.com", "ip1", start)), Some(true));
        for ip in ["ip1", "ip2", "ip3"] {
            assert_eq!(
                first(t.try_attempt_at("a@x.com", ip, start)),
                Some(false),
                "a blocked email is noted once, whatever the address"
            );
        }
        for i in 0..5 {
            assert!(t.try_attempt_at(&format!("u{i}@x.com"), "ip9", start).is_ok());
        }
        assert_eq!(first(t.try_attempt_at("v0@x.com", "ip9", start)), Some(true));
        assert_eq!(
            first(t.try_attempt_at("v1@x.com", "ip9", start)),
            Some(false),
            "a blocked address is noted once, whatever the email"
        );
        let next = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert!(t.try_attempt_at("a@x.com", "ip1", next).is_ok());
        }
        assert_eq!(
            first(t.try_attempt_at("a@x.com", "ip1", next)),
            Some(true),
            "a new window is noted again"
        );
    }

    #[test]
    fn successes_do_not_count_and_clear_the_email() {
        let t = throttle(100);
        let now = Instant::now();
        for _ in 0..10 {
            let attempt = t.try_attempt_at("a@x.com", "ip1", now).unwrap();
            t.record_success("a@x.com", "ip1", attempt);
        }
        for _ in 0..3 {
            assert!(t.try_attempt_at("b@x.com", "ip1", now).is_ok());
        }
        let attempt = t.try_attempt_at("b@x.com", "ip2", now);
        assert!(attempt.is_err(), "the email is blocked");
        let attempt = t.try_attempt_at("c@x.com", "ip1", now).unwrap();
        t.record_success("b@x.com", "ip1", attempt);
        assert!(
            t.try_attempt_at("b@x.com", "ip1", now).is_ok(),
            "the email count was cleared"
        );
    }

    #[test]
    fn alternating_guesses_with_own_successes_still_reaches_the_address_limit() {
        let t = throttle(100);
        let now = Instant::now();
        for i in 0..4 {
            assert!(t.try_attempt_at(&format!("victim{i}@x.com"), "ip1", now).is_ok());
            let own = t.try_attempt_at("me@x.com", "ip1", now).unwrap();
            t.record_success("me@x.com", "ip1", own);
        }
        assert!(t.try_attempt_at("victim4@x.com", "ip1", now).is_ok());
        assert!(
            t.try_attempt_at("me@x.com", "ip1", now).is_err(),
            "five failures from the address, whatever came between them"
        );
    }

    #[test]
    fn a_success_counted_in_an_ended_window_takes_nothing_from_the_next_one() {
        let t = throttle(100);
        let start = Instant::now();
        let own = t.try_attempt_at("me@x.com", "ip1", start).unwrap();
        // While the password is being checked, the window ends and new guesses start another.
        let later = start + Duration::from_secs(61);
        for i in 0..5 {
            assert!(t.try_attempt_at(&format!("victim{i}@x.com"), "ip1", later).is_ok());
        }
        t.record_success("me@x.com", "ip1", own);
        assert!(
            t.try_attempt_at("victim9@x.com", "ip1", later).is_err(),
            "the late success did not erase one of the five guesses"
        );
    }

    #[test]
    fn memory_stays_bounded_whatever_the_number_of_keys() {
        let t = throttle(10);
        let now = Instant::now();
        for i in 0..1000 {
            let _ = t.try_attempt_at(
                &format!("u{i}@x.com"),
                &format!("ip{i}"),
                now + Duration::from_millis(i),
            );
        }
        let tables = t.lock();
        assert!(tables.emails.0.len() <= 10 && tables.ips.0.len() <= 10);
        assert!(tables.emails.0.contains_key("u999@x.com"), "the newest key is kept");
    }

    #[test]
    fn a_flood_of_junk_emails_does_not_free_a_locked_email() {
        let t = throttle(10);
        let now = Instant::now();
        for _ in 0..3 {
            assert!(t.try_attempt_at("target@x.com", "ip-guesser", now).is_ok());
        }
        for i in 0..1000 {
            let _ = t.try_attempt_at(
                &format!("junk{i}@x.com"),
                &format!("ip{i}"),
                now + Duration::from_millis(i),
            );
        }
        assert!(wait(t.try_attempt_at("target@x.com", "ip-new", now + Duration::from_secs(2))).is_some());
    }

    #[test]
    fn ipv6_addresses_are_counted_by_their_64_block() {
        let t = throttle(100);
        let now = Instant::now();
        for i in 0..5 {
            assert!(t
                .try_attempt_at(&format!("u{i}@x.com"), &format!("2001:db8:1:2::{i:x}"), now)
                .is_ok());
        }
        assert!(wait(t.try_attempt_at("u9@x.com", "2001:db8:1:2:ffff::1", now)).is_some());
        assert!(
            t.try_attempt_at("u9@x.com", "2001:db8:1:3::1", now).is_ok(),
            "another /64"
        );
        for i in 0..5 {
            assert!(t
                .try_attempt_at(&format!("v{i}@x.com"), &format!("10.0.0.{i}"), now)
                .is_ok());
        }
        assert_eq!(crate::http::address_key("::ffff:10.0.0.1"), "::ffff:10.0.0.1");
        assert_eq!(crate::http::address_key("2001:db8:1:2:3:4:5:6"), "2001:db8:1:2::/64");
    }
}
