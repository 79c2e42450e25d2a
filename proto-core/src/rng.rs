//! A tiny seeded pseudo-random generator (SplitMix64) for jitter and back-off draws.
//!
//! Owns: turning a configured `u64` seed into a reproducible stream of numbers. Does not read
//! any OS entropy, and is not meant for anything secret: it only spreads reconnects and
//! heartbeats in time, and the same seed must always give the same schedule (tests rely on it).

use std::time::Duration;

/// SplitMix64 (Steele, Lea and Flood, 2014): a 64-bit state, one add and a mix per draw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// A generator whose whole output is fixed by `seed`.
    pub const fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A uniform draw in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        // 53 high bits fill an f64 mantissa exactly.
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A uniform draw in `[0, bound)`; `0` when `bound == 0`.
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        // Lemire's multiply-shift; the tiny bias is irrelevant for jitter.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// A uniform duration in `[low, high)` at millisecond resolution (`low` when `high <= low`).
    pub fn duration_between(&mut self, low: Duration, high: Duration) -> Duration {
        let span = high.saturating_sub(low).as_millis();
        let span = u64::try_from(span).unwrap_or(u64::MAX);
        low + Duration::from_millis(self.below(span))
    }
}

#[cfg(test)]
mod tests {
    use super::SeededRng;
    use std::time::Duration;

    #[test]
    fn same_seed_same_stream() {
        let mut a = SeededRng::new(42);
        let mut b = SeededRng::new(42);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
        assert_ne!(SeededRng::new(1).next_u64(), SeededRng::new(2).next_u64());
    }

    #[test]
    fn draws_stay_in_range() {
        let mut r = SeededRng::new(7);
        for _ in 0..10_000 {
            let f = r.next_f64();
            assert!((0.0..1.0).contains(&f));
            assert!(r.below(5) < 5);
            let d = r.duration_between(Duration::from_secs(1), Duration::from_secs(5));
            assert!(d >= Duration::from_secs(1) && d < Duration::from_secs(5));
        }
        assert_eq!(r.below(0), 0);
        assert_eq!(
            r.duration_between(Duration::from_secs(3), Duration::from_secs(1)),
            Duration::from_secs(3)
        );
    }
}
