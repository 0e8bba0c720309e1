//! A seeded generator, so that a failing randomised run can be repeated.

use uuid::Uuid;

/// SplitMix64: small, seeded, good enough to pick faults and requests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// In `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Between `from` and `to` milliseconds, both included.
    pub fn millis(&mut self, from: u64, to: u64) -> std::time::Duration {
        std::time::Duration::from_millis(from + self.next_u64() % (to - from + 1))
    }

    pub fn uuid(&mut self) -> Uuid {
        uuid::Builder::from_random_bytes(
            ((u128::from(self.next_u64()) << 64) | u128::from(self.next_u64())).to_le_bytes(),
        )
        .into_uuid()
    }

    /// A generator of its own (for another task), seeded from this one.
    pub fn fork(&mut self) -> Rng {
        Rng(self.next_u64())
    }
}

/// The seed of the run: `ERRATA_TEST_SEED`, or else from the clock.
pub fn seed() -> u64 {
    match std::env::var("ERRATA_TEST_SEED") {
        Ok(seed) => seed.trim().parse().expect("ERRATA_TEST_SEED is a number"),
        Err(_) => clock_seed(),
    }
}

/// The seed of a test that runs a fixed seed unless told otherwise:
/// `ERRATA_TEST_SEED=N` runs seed N, `ERRATA_TEST_SEED=random` one from
/// the clock, and without it the test's own `fixed` seed (so CI repeats
/// the same fault and request sequences).
pub fn seed_or(fixed: u64) -> u64 {
    match std::env::var("ERRATA_TEST_SEED") {
        Ok(seed) if seed.trim() == "random" => clock_seed(),
        Ok(seed) => seed.trim().parse().expect("ERRATA_TEST_SEED is a number"),
        Err(_) => fixed,
    }
}

fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a clock")
        .as_nanos() as u64
}
