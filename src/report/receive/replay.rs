//! The receiver's replay cache: a signature accepted once is refused until its timestamp falls
//! out of the skew window, after which the freshness check refuses it anyway and the entry goes.
//! The same idea as the nonce caches of Stripe-style webhook verifiers.

use std::collections::HashMap;

/// Below this many entries nothing is purged.
const MIN_PURGE: usize = 1024;

/// Signatures (the 32 MAC bytes, so a re-encoded header is the same key) and the unix second
/// after which each may be forgotten. Only authenticated requests get in, and each entry lives
/// at most twice the skew window, so the size is bounded by the reports accepted in that time.
#[derive(Debug)]
pub(crate) struct ReplayCache {
    seen: HashMap<[u8; 32], u64>,
    purge_at: usize,
}

impl ReplayCache {
    pub(crate) fn new() -> ReplayCache {
        ReplayCache {
            seen: HashMap::new(),
            purge_at: MIN_PURGE,
        }
    }

    /// Records `signature` as used until `expires` (unix seconds); `false` if it already is.
    pub(crate) fn claim(&mut self, signature: [u8; 32], expires: u64, now: u64) -> bool {
        if self.seen.len() >= self.purge_at {
            // Purging only when the map has doubled keeps each claim O(1) amortized.
            self.seen.retain(|_, until| *until >= now);
            self.purge_at = (self.seen.len() * 2).max(MIN_PURGE);
        }
        match self.seen.get(&signature) {
            Some(until) if *until >= now => false,
            _ => {
                self.seen.insert(signature, expires);
                true
            }
        }
    }

    /// Forgets a claim whose report could not be stored, so the sender's retry is not refused.
    pub(crate) fn release(&mut self, signature: &[u8; 32]) {
        self.seen.remove(signature);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_a_signature_until_it_expires() {
        let mut cache = ReplayCache::new();
        assert!(cache.claim([1; 32], 1300, 1000));
        assert!(!cache.claim([1; 32], 1300, 1000));
        assert!(!cache.claim([1; 32], 1300, 1300));
        assert!(cache.claim([2; 32], 1300, 1000), "another signature");
        assert!(
            cache.claim([1; 32], 1601, 1301),
            "expired entries are claimable again"
        );
        cache.release(&[2; 32]);
        assert!(cache.claim([2; 32], 1300, 1000), "released");
    }

    #[test]
    fn expired_entries_are_purged() {
        let mut cache = ReplayCache::new();
        for i in 0..MIN_PURGE as u32 {
            let mut sig = [0; 32];
            sig[..4].copy_from_slice(&i.to_le_bytes());
            assert!(cache.claim(sig, 100, 50));
        }
        assert_eq!(cache.len(), MIN_PURGE);
        // The next claim comes after every earlier one expired.
        assert!(cache.claim([0xff; 32], 500, 200));
        assert_eq!(cache.len(), 1);
        assert!(!cache.claim([0xff; 32], 500, 200));
    }
}
