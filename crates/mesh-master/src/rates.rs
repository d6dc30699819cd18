//! Per-node request rates: a token bucket per node id and class of endpoint, taken after the
//! request's signature verified (a stranger cannot spend a real node's budget). Past its burst a
//! node gets 429 until the bucket refills at the pace its heartbeat and poll pattern needs.

use std::collections::HashMap;
use std::time::Instant;

use parking_lot::Mutex;

/// Endpoints that share a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Announce and heartbeat: one per heartbeat interval, and an announce after a failure.
    Beat,
    /// The streams long poll: one at a time, again at once when a table comes.
    Poll,
    /// Auth and route: one per new broadcaster key or viewer asked about, one per stream.
    Call,
}

impl Class {
    pub fn label(self) -> &'static str {
        match self {
            Class::Beat => "beat",
            Class::Poll => "poll",
            Class::Call => "call",
        }
    }
}

/// A bucket's size and refill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub burst: f64,
    pub per_s: f64,
}

/// Most node ids tracked: only signed requests get a bucket, so this bounds what key holders
/// can make the master keep.
const MAX_TRACKED: usize = 100_000;

pub struct Rates {
    beat: Rate,
    poll: Rate,
    call: Rate,
    buckets: Mutex<HashMap<(String, Class), (f64, Instant)>>,
}

impl Rates {
    /// The budgets for nodes that heartbeat every `interval_s`: announces and heartbeats a
    /// burst of 10 then 3 per interval; polls 30 then 5/s; auth and route 200 then 50/s.
    pub fn for_interval(interval_s: u64) -> Rates {
        Rates::new(
            Rate { burst: 10.0, per_s: 3.0 / interval_s.max(1) as f64 },
            Rate { burst: 30.0, per_s: 5.0 },
            Rate { burst: 200.0, per_s: 50.0 },
        )
    }

    pub fn new(beat: Rate, poll: Rate, call: Rate) -> Rates {
        Rates { beat, poll, call, buckets: Mutex::new(HashMap::new()) }
    }

    fn rate(&self, class: Class) -> Rate {
        match class {
            Class::Beat => self.beat,
            Class::Poll => self.poll,
            Class::Call => self.call,
        }
    }

    /// Take one request of `node` in `class`; false when its budget is spent.
    pub fn take(&self, node: &str, class: Class, now: Instant) -> bool {
        let rate = self.rate(class);
        let mut b = self.buckets.lock();
        if b.len() >= MAX_TRACKED && !b.contains_key(&(node.to_string(), class)) {
            Self::prune_locked(&mut b, |c| self.rate(c), now);
            if b.len() >= MAX_TRACKED {
                return false;
            }
        }
        let (tokens, at) = b.entry((node.to_string(), class)).or_insert((rate.burst, now));
        *tokens = (*tokens + now.saturating_duration_since(*at).as_secs_f64() * rate.per_s).min(rate.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forget the buckets that are full again (the sweep, once a second).
    pub fn prune(&self, now: Instant) {
        Self::prune_locked(&mut self.buckets.lock(), |c| self.rate(c), now);
    }

    fn prune_locked(
        b: &mut HashMap<(String, Class), (f64, Instant)>,
        rate: impl Fn(Class) -> Rate,
        now: Instant,
    ) {
        b.retain(|(_, c), (tokens, at)| {
            let r = rate(*c);
            *tokens + now.saturating_duration_since(*at).as_secs_f64() * r.per_s < r.burst
        });
    }

    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.buckets.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_burst_then_the_pace() {
        let r = Rates::for_interval(10);
        let t = Instant::now();
        assert!((0..10).all(|_| r.take("edge-1", Class::Beat, t)), "a burst of 10");
        assert!(!r.take("edge-1", Class::Beat, t), "the 11th at once: refused");
        assert!(r.take("edge-2", Class::Beat, t), "another node has its own budget");
        assert!(r.take("edge-1", Class::Poll, t), "and another class");
        assert!(!r.take("edge-1", Class::Beat, t + Duration::from_secs(3)), "0.9 token after 3 s");
        assert!(r.take("edge-1", Class::Beat, t + Duration::from_secs(4)), "1.2 after 4 s");
        // A node heartbeating at its interval never runs out.
        let mut now = t + Duration::from_secs(100);
        for _ in 0..100 {
            assert!(r.take("edge-3", Class::Beat, now));
            now += Duration::from_secs(10);
        }
    }

    #[test]
    fn full_buckets_are_forgotten() {
        let r = Rates::for_interval(1);
        let t = Instant::now();
        r.take("a", Class::Call, t);
        r.take("b", Class::Beat, t);
        assert_eq!(r.tracked(), 2);
        r.prune(t + Duration::from_millis(10));
        assert_eq!(r.tracked(), 2);
        r.prune(t + Duration::from_secs(60));
        assert_eq!(r.tracked(), 0);
    }
}
