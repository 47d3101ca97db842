//! Tokens: the fill lease of a miss or a refresh, a write's share of a key's
//! guard, and the TTL jitter and random draws made from them.

use super::protocol::{LEASE, TOKEN_LEN, millis};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use uuid::Uuid;

/// The right to fill one key, as long as nobody overwrote it.
#[derive(Debug)]
pub struct Lease {
    /// The value the lookup stored: [`LEASE`] + a [`unique_token`].
    pub(crate) token: [u8; 1 + TOKEN_LEN],
    jitter: u64,
    /// For a refresh: the entry as marked with this lease, and where the
    /// entry itself starts in it (what giving the lease back restores).
    pub(crate) refreshing: Option<(Vec<u8>, usize)>,
}

/// One write's share of a key's guard; see
/// [`super::UserCache::release_write`].
#[derive(Debug)]
pub struct WriteGuard {
    pub(crate) token: [u8; TOKEN_LEN],
}

impl Lease {
    pub(crate) fn new() -> Self {
        let (unique, count) = unique_token();
        let mut token = [LEASE; 1 + TOKEN_LEN];
        token[1..].copy_from_slice(&unique);
        let process = u64::from_be_bytes(unique[..8].try_into().unwrap_or_default());
        Self {
            token,
            jitter: spread_bits(count ^ process),
            refreshing: None,
        }
    }

    /// What the key holds while this lease is alive.
    pub(crate) fn held(&self) -> &[u8] {
        match &self.refreshing {
            Some((marked, _)) => marked,
            None => &self.token,
        }
    }

    /// `ttl` in milliseconds, shortened by up to 10% so entries filled
    /// together expire apart. Never longer than configured.
    pub(crate) fn jittered(&self, ttl: Duration) -> u64 {
        let ttl = millis(ttl);
        let spread = (ttl / 10).max(1);
        ttl - self.jitter % spread
    }
}

impl WriteGuard {
    pub(crate) fn new() -> Self {
        Self {
            token: unique_token().0,
        }
    }
}

/// A token nobody else has: 16 random bytes drawn once per process (so no
/// two instances share them) and a counter, which is returned too. Every
/// lookup makes one, hits included, so it must not cost a `getrandom` call
/// each time.
fn unique_token() -> ([u8; TOKEN_LEN], u64) {
    static PROCESS: LazyLock<[u8; 16]> = LazyLock::new(|| *Uuid::new_v4().as_bytes());
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut token = [0; TOKEN_LEN];
    token[..16].copy_from_slice(&*PROCESS);
    token[16..].copy_from_slice(&count.to_be_bytes());
    (token, count)
}

/// A number in (0, 1], different at every call, without a system call:
/// XFetch's random draw.
pub fn draw() -> f64 {
    let (unique, count) = unique_token();
    let process = u64::from_be_bytes(unique[..8].try_into().unwrap_or_default());
    // 53 random bits, as many as an f64's mantissa holds.
    let bits = spread_bits(spread_bits(count ^ process)) >> 11;
    (bits as f64 + 1.0) / (1u64 << 53) as f64
}

/// SplitMix64's finalizer: consecutive counters give unrelated jitters.
fn spread_bits(mut bits: u64) -> u64 {
    bits = (bits ^ (bits >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    bits = (bits ^ (bits >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    bits ^ (bits >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_shortens_the_ttl_by_at_most_a_tenth_and_varies() {
        // Arrange
        let ttl = Duration::from_secs(3600);

        // Act
        let ttls: Vec<u64> = (0..200).map(|_| Lease::new().jittered(ttl)).collect();

        // Assert
        assert!(ttls.iter().all(|&t| (3_240_000..=3_600_000).contains(&t)));
        let distinct: std::collections::HashSet<_> = ttls.iter().collect();
        assert!(distinct.len() > 150, "{} distinct TTLs", distinct.len());
    }

    #[test]
    fn lease_tokens_are_unique_and_tagged() {
        // Act
        let (a, b) = (Lease::new(), Lease::new());

        // Assert
        assert_ne!(a.token, b.token);
        assert_eq!(a.token[0], LEASE);
        assert_eq!(a.token.len(), 25);
        assert_ne!(WriteGuard::new().token, WriteGuard::new().token);
    }

    #[test]
    fn draws_are_in_the_unit_interval_and_vary() {
        // Act
        let draws: Vec<f64> = (0..200).map(|_| draw()).collect();

        // Assert
        assert!(draws.iter().all(|&d| d > 0.0 && d <= 1.0));
        let mean = draws.iter().sum::<f64>() / 200.0;
        assert!((0.35..0.65).contains(&mean), "mean {mean}");
    }
}
