//! The receiver's memory of the reports it stored, by the sha256 of their body. A sender whose
//! answer was lost (its attempt timed out while the receiver synced the file) retries with the
//! same body signed anew, and a run's undelivered report is resent as stored: the copy must not
//! become a second line, or one run reads as two. Delivery stays at-least-once on the wire and
//! becomes once in the file, for as long as the receiver runs and within the last
//! [`MAX_REMEMBERED`] reports.

use std::collections::{HashMap, VecDeque};

/// Reports remembered; the oldest is forgotten first. 32 bytes of digest and a few of overhead
/// each: a few MiB at most.
pub(crate) const MAX_REMEMBERED: usize = 65_536;

/// What the receiver knows of a body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Claim {
    /// Never seen: store it (then [`StoredReports::stored`] or [`StoredReports::release`]).
    New,
    /// Another connection is storing this very body now: its outcome is not known yet.
    Storing,
    /// Stored already: the copy is answered as delivered and not stored again.
    Stored,
}

#[derive(Debug)]
pub(crate) struct StoredReports {
    state: HashMap<[u8; 32], bool>,
    order: VecDeque<[u8; 32]>,
    max: usize,
}

impl StoredReports {
    pub(crate) fn new() -> StoredReports {
        StoredReports::with_max(MAX_REMEMBERED)
    }

    fn with_max(max: usize) -> StoredReports {
        StoredReports {
            state: HashMap::new(),
            order: VecDeque::new(),
            max,
        }
    }

    /// Claims `digest` for storing when it is new.
    pub(crate) fn claim(&mut self, digest: [u8; 32]) -> Claim {
        match self.state.get(&digest) {
            Some(true) => return Claim::Stored,
            Some(false) => return Claim::Storing,
            None => {}
        }
        while self.order.len() >= self.max {
            if let Some(old) = self.order.pop_front() {
                self.state.remove(&old);
            }
        }
        self.state.insert(digest, false);
        self.order.push_back(digest);
        Claim::New
    }

    /// The claimed body is on disk.
    pub(crate) fn stored(&mut self, digest: &[u8; 32]) {
        if let Some(done) = self.state.get_mut(digest) {
            *done = true;
        }
    }

    /// The claimed body could not be stored: a retry must be able to store it.
    pub(crate) fn release(&mut self, digest: &[u8; 32]) {
        if self.state.remove(digest).is_some() {
            self.order.retain(|d| d != digest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_stored_once() {
        let mut seen = StoredReports::new();
        assert_eq!(seen.claim([1; 32]), Claim::New);
        assert_eq!(seen.claim([1; 32]), Claim::Storing, "still being stored");
        seen.stored(&[1; 32]);
        assert_eq!(seen.claim([1; 32]), Claim::Stored);
        assert_eq!(seen.claim([2; 32]), Claim::New, "another body");
        seen.release(&[2; 32]);
        assert_eq!(seen.claim([2; 32]), Claim::New, "a failed store is retried");
    }

    #[test]
    fn the_oldest_is_forgotten_past_the_bound() {
        let mut seen = StoredReports::with_max(3);
        for i in 1..=3 {
            assert_eq!(seen.claim([i; 32]), Claim::New);
            seen.stored(&[i; 32]);
        }
        assert_eq!(seen.claim([4; 32]), Claim::New);
        assert_eq!(seen.state.len(), 3);
        assert_eq!(seen.claim([1; 32]), Claim::New, "forgotten");
        assert_eq!(seen.claim([4; 32]), Claim::Storing, "kept");
        assert_eq!(seen.claim([3; 32]), Claim::Stored, "kept");
    }
}
