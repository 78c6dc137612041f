//! An ordered table of deadlines, shared by the state machines.
//!
//! Entries are `(deadline, key)`; firing is lazy: the owner re-checks, when a key fires,
//! whether the condition it armed is still true (a record's stored deadline), so arming a new
//! deadline for a key does not require finding and removing the old entry.

use std::collections::BTreeSet;

use crate::model::Timestamp;

/// A set of `(deadline, key)` pairs ordered by deadline.
#[derive(Clone, Debug)]
pub struct Timers<K: Ord + Clone> {
    set: BTreeSet<(Timestamp, K)>,
}

impl<K: Ord + Clone> Default for Timers<K> {
    fn default() -> Self {
        Timers { set: BTreeSet::new() }
    }
}

impl<K: Ord + Clone> Timers<K> {
    /// Arms `key` at `at` (other entries for `key` stay; owners validate on fire).
    pub fn arm(&mut self, at: Timestamp, key: K) {
        self.set.insert((at, key));
    }

    /// Removes one exact entry, if present.
    pub fn disarm(&mut self, at: Timestamp, key: &K) {
        self.set.remove(&(at, key.clone()));
    }

    /// The earliest deadline.
    pub fn next(&self) -> Option<Timestamp> {
        self.set.first().map(|(t, _)| *t)
    }

    /// Removes and returns the earliest entry if it is due at `now`.
    pub fn pop_due(&mut self, now: Timestamp) -> Option<K> {
        if self.set.first().is_some_and(|(t, _)| *t <= now) {
            self.set.pop_first().map(|(_, k)| k)
        } else {
            None
        }
    }

    /// Number of armed entries (including stale ones).
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether nothing is armed.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }

    /// Drops everything.
    pub fn clear(&mut self) {
        self.set.clear();
    }
}
