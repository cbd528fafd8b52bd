//! Which turns' event logs the service keeps, and for how long: every running turn's, and the
//! ended ones' while they are younger than the retention and fit in the byte budget. Ended logs
//! are kept in the order their turns ended, so the oldest goes first when the budget is full;
//! logs that went are remembered (a bounded list of their keys), so a client that asks for one
//! learns that its events expired rather than that the turn is unknown.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::Hash;

/// How many expired logs are remembered as expired (about 100 bytes each).
const REMEMBERED: usize = 4096;

/// What was dropped when a log ended: how many logs, for which reason.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Evictions {
    /// Oldest logs dropped for room.
    pub(crate) budget: u64,
    /// The ended log itself, too large to keep.
    pub(crate) too_large: u64,
}

/// The logs, by key; the ended ones in the order they ended, with their sizes.
#[derive(Debug)]
pub(super) struct Kept<K, L> {
    logs: HashMap<K, L>,
    /// Ended logs: the order they ended in → (key, bytes).
    ended: BTreeMap<u64, (K, usize)>,
    next: u64,
    /// Bytes of the ended logs kept.
    bytes: usize,
    budget: usize,
    expired: HashSet<K>,
    expired_order: VecDeque<K>,
}

impl<K: Clone + Eq + Hash + Ord, L: Clone> Kept<K, L> {
    /// Ended logs kept up to `budget` bytes in all.
    pub(super) fn new(budget: usize) -> Self {
        Self {
            logs: HashMap::new(),
            ended: BTreeMap::new(),
            next: 0,
            bytes: 0,
            budget,
            expired: HashSet::new(),
            expired_order: VecDeque::new(),
        }
    }

    /// A running turn's log.
    pub(super) fn insert(&mut self, key: K, log: L) {
        self.logs.insert(key, log);
    }

    /// The log of `key`: `Ok(Some)` while kept, `Ok(None)` if never known (or forgotten long
    /// ago), `Err(())` if it was kept and has expired.
    pub(super) fn get(&self, key: &K) -> Result<Option<L>, ()> {
        match self.logs.get(key) {
            Some(log) => Ok(Some(log.clone())),
            None if self.expired.contains(key) => Err(()),
            None => Ok(None),
        }
    }

    /// The log of `key` ended with `bytes` bytes (`None`: not to be kept): it is kept (its
    /// place in the end order is the answer) unless it is over the budget alone; the oldest
    /// ended logs go until the rest fit.
    pub(super) fn ended(&mut self, key: K, bytes: Option<usize>) -> (Option<u64>, Evictions) {
        let mut evictions = Evictions::default();
        let Some(bytes) = bytes.filter(|b| *b <= self.budget) else {
            self.forget(&key);
            evictions.too_large += 1;
            return (None, evictions);
        };
        let seq = self.next;
        self.next += 1;
        self.ended.insert(seq, (key, bytes));
        self.bytes += bytes;
        while self.bytes > self.budget {
            let Some((_, (oldest, size))) = self.ended.pop_first() else { break };
            self.bytes -= size;
            self.forget(&oldest);
            evictions.budget += 1;
        }
        (Some(seq), evictions)
    }

    /// The ended log `seq` is past its retention: forgotten, if it is still kept.
    pub(super) fn expire(&mut self, seq: u64) {
        if let Some((key, size)) = self.ended.remove(&seq) {
            self.bytes -= size;
            self.forget(&key);
        }
    }

    /// Bytes of the ended logs kept.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Logs kept (running and ended).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.logs.len()
    }

    fn forget(&mut self, key: &K) {
        self.logs.remove(key);
        if self.expired.insert(key.clone()) {
            self.expired_order.push_back(key.clone());
            if self.expired_order.len() > REMEMBERED {
                if let Some(old) = self.expired_order.pop_front() {
                    self.expired.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(budget: usize, logs: &[&'static str]) -> Kept<&'static str, ()> {
        let mut kept = Kept::new(budget);
        for key in logs {
            kept.insert(*key, ());
        }
        kept
    }

    #[test]
    fn the_oldest_ended_logs_go_first_when_the_budget_is_full() {
        let mut kept = kept(100, &["a", "b", "c", "d"]);
        assert_eq!(kept.ended("b", Some(40)).1, Evictions::default());
        assert_eq!(kept.ended("a", Some(40)).1, Evictions::default());
        // "c" needs room: "b" ended first, so it goes; "a" stays.
        assert_eq!(kept.ended("c", Some(30)).1, Evictions { budget: 1, too_large: 0 });
        assert_eq!((kept.get(&"b"), kept.get(&"a"), kept.get(&"c")), (Err(()), Ok(Some(())), Ok(Some(()))));
        assert_eq!(kept.bytes(), 70);
        // "d" is still running: kept whatever the budget.
        assert_eq!(kept.get(&"d"), Ok(Some(())));
        // Room for a big one: both older go.
        assert_eq!(kept.ended("d", Some(100)).1, Evictions { budget: 2, too_large: 0 });
        assert_eq!((kept.get(&"a"), kept.get(&"c"), kept.bytes(), kept.len()), (Err(()), Err(()), 100, 1));
    }

    #[test]
    fn a_log_over_the_budget_alone_is_not_kept_and_expiry_frees_its_bytes() {
        let mut kept = kept(100, &["a", "b", "c"]);
        let (a, _) = kept.ended("a", Some(60));
        assert_eq!(kept.ended("b", Some(101)), (None, Evictions { budget: 0, too_large: 1 }));
        assert_eq!((kept.get(&"a"), kept.get(&"b")), (Ok(Some(())), Err(())));
        kept.expire(a.unwrap());
        assert_eq!((kept.get(&"a"), kept.bytes()), (Err(()), 0));
        // Expiring twice, or a log evicted meanwhile, changes nothing.
        kept.expire(a.unwrap());
        assert_eq!((kept.bytes(), kept.get(&"c"), kept.get(&"z")), (0, Ok(Some(())), Ok(None)));
    }

    #[test]
    fn expired_keys_are_remembered_up_to_a_bound() {
        let mut kept: Kept<u32, ()> = Kept::new(0);
        for key in 0..(REMEMBERED as u32 + 10) {
            kept.insert(key, ());
            kept.ended(key, Some(1));
        }
        assert_eq!(kept.get(&0), Ok(None));
        assert_eq!(kept.get(&(REMEMBERED as u32 + 9)), Err(()));
        assert_eq!(kept.expired.len(), REMEMBERED);
    }
}
