//! Capped exponential backoff with jitter, for every retry of a master call.

use std::time::Duration;

/// Delay before retry `n` (0-based): `min(cap, base * 2^n)`, jittered uniformly into its
/// upper half by `rand` (any u64), so that nodes that failed together do not retry together.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    failures: u32,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Backoff {
        Backoff { base, cap: cap.max(base), failures: 0 }
    }

    /// Consecutive failures so far.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// The un-jittered delay after the current number of failures.
    pub fn ceiling(&self) -> Duration {
        let exp = self.failures.saturating_sub(1).min(30);
        self.base.saturating_mul(1u32 << exp).min(self.cap)
    }

    /// Record a failure and return how long to wait before the next try.
    pub fn fail(&mut self, rand: u64) -> Duration {
        self.failures = self.failures.saturating_add(1);
        let d = self.ceiling();
        let half = d / 2;
        let span = (d - half).as_millis() as u64;
        half + Duration::from_millis(if span == 0 { 0 } else { rand % (span + 1) })
    }

    /// A success: the next failure starts from `base` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// A small xorshift generator for jitter (not for secrets).
#[derive(Debug, Clone)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Jitter {
        Jitter(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_doubles_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            b.fail(0);
            ceilings.push(b.ceiling().as_millis());
        }
        assert_eq!(ceilings, [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000]);
        assert_eq!(b.failures(), 10);
        b.reset();
        b.fail(0);
        assert_eq!(b.ceiling(), Duration::from_millis(500));
    }

    #[test]
    fn jitter_stays_in_the_upper_half() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(8));
        let mut j = Jitter::new(42);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let mut c = b.clone();
            let d = c.fail(j.next_u64());
            assert!(d >= Duration::from_millis(500) && d <= Duration::from_secs(1), "{d:?}");
            seen.insert(d);
        }
        assert!(seen.len() > 50, "jitter spreads the delays");
        for _ in 0..20 {
            let d = b.fail(u64::MAX);
            assert!(d <= Duration::from_secs(8));
        }
    }

    #[test]
    fn xorshift_is_not_constant() {
        let mut j = Jitter::new(0);
        let a = j.next_u64();
        assert_ne!(a, j.next_u64());
    }
}
