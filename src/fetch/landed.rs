//! Which bytes of a download have landed in its temporary file, as a set of byte ranges.
//!
//! The native fetcher writes several ranges at once, so what has landed is not a prefix:
//! it is a small set of disjoint ranges (at most one per connection plus the prefix, since
//! neighbours merge), kept in a `watch` channel so any number of tasks can wait for the
//! bytes they need. The hashing follower waits for the prefix to grow; a reader during the
//! fetch waits for the range it reads and first tells the fetcher it wants it (a demand),
//! so a fetcher that can fetch out of order brings it at once. The fetcher also records
//! when the service first confirmed the pinned version: opens return then. A download
//! that ends, in success or failure, says so, and nobody waits for bytes that will never
//! come.

use std::ops::Range;
use std::sync::Mutex;
use tokio::sync::{watch, Notify};

/// Disjoint, sorted, non-empty byte ranges; touching ranges are merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangeSet {
    ranges: Vec<Range<u64>>,
}

impl RangeSet {
    pub fn insert(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        // Ranges before `r` that do not touch it stay; those touching or overlapping merge.
        let first = self.ranges.partition_point(|x| x.end < r.start);
        let mut merged = r;
        let mut last = first;
        while last < self.ranges.len() && self.ranges[last].start <= merged.end {
            merged.start = merged.start.min(self.ranges[last].start);
            merged.end = merged.end.max(self.ranges[last].end);
            last += 1;
        }
        self.ranges.splice(first..last, [merged]);
    }

    /// True when every byte of `r` is in the set (an empty `r` always is).
    pub fn contains(&self, r: &Range<u64>) -> bool {
        if r.is_empty() {
            return true;
        }
        let i = self.ranges.partition_point(|x| x.end <= r.start);
        self.ranges
            .get(i)
            .is_some_and(|x| x.start <= r.start && r.end <= x.end)
    }

    /// Length of the contiguous run from byte 0.
    pub fn prefix(&self) -> u64 {
        match self.ranges.first() {
            Some(r) if r.start == 0 => r.end,
            _ => 0,
        }
    }

    /// Bytes in the set.
    pub fn len(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    pub fn ranges(&self) -> &[Range<u64>] {
        &self.ranges
    }

    /// Takes `r` out of the set.
    pub fn remove(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        let first = self.ranges.partition_point(|x| x.end <= r.start);
        let last = self.ranges.partition_point(|x| x.start < r.end);
        if first >= last {
            return;
        }
        let mut kept = Vec::with_capacity(2);
        let (head, tail) = (&self.ranges[first], &self.ranges[last - 1]);
        if head.start < r.start {
            kept.push(head.start..r.start);
        }
        if tail.end > r.end {
            kept.push(r.end..tail.end);
        }
        self.ranges.splice(first..last, kept);
    }

    /// The parts of `r` that are in the set, in order.
    pub fn within(&self, r: &Range<u64>) -> Vec<Range<u64>> {
        if r.is_empty() {
            return Vec::new();
        }
        let first = self.ranges.partition_point(|x| x.end <= r.start);
        self.ranges[first..]
            .iter()
            .take_while(|x| x.start < r.end)
            .map(|x| x.start.max(r.start)..x.end.min(r.end))
            .collect()
    }

    /// The first run of the set that ends after `at`, clipped to start no earlier than it.
    pub fn first_from(&self, at: u64) -> Option<Range<u64>> {
        let i = self.ranges.partition_point(|x| x.end <= at);
        self.ranges.get(i).map(|x| x.start.max(at)..x.end)
    }
}

/// What waiters see: the landed ranges, whether the service has confirmed the pinned
/// version (the first ranged GET with `If-Match` was answered), and whether the download
/// has ended.
#[derive(Debug, Clone, Default)]
pub struct LandedState {
    pub ranges: RangeSet,
    pub confirmed: bool,
    pub ended: bool,
}

/// The download of `size` bytes ended before the awaited range landed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the download ended before bytes {wanted:?} landed")]
pub struct NeverLanded {
    pub wanted: Range<u64>,
}

/// The landed bytes of one download, shared by its writer and its waiters, and the
/// ranges readers are waiting for (demands), which a fetcher that can fetch out of order
/// serves first.
#[derive(Debug)]
pub struct Landed {
    size: u64,
    state: watch::Sender<LandedState>,
    demands: Mutex<Vec<Range<u64>>>,
    demanded: Notify,
}

impl Landed {
    pub fn new(size: u64) -> Self {
        Self {
            size,
            state: watch::Sender::new(LandedState::default()),
            demands: Mutex::new(Vec::new()),
            demanded: Notify::new(),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Records that bytes `r` are written (clamped to the file); wakes waiters.
    pub fn add(&self, r: Range<u64>) {
        let r = r.start.min(self.size)..r.end.min(self.size);
        if r.is_empty() {
            return;
        }
        self.state.send_modify(|s| s.ranges.insert(r));
    }

    /// Marks the download as over: waiters for bytes not landed give up.
    pub fn end(&self) {
        self.state.send_modify(|s| s.ended = true);
    }

    /// The service answered a ranged GET pinned to the version: readers may start.
    /// True for the first confirmation only.
    pub fn confirm(&self) -> bool {
        self.state
            .send_if_modified(|s| !std::mem::replace(&mut s.confirmed, true))
    }

    pub fn is_confirmed(&self) -> bool {
        self.state.borrow().confirmed
    }

    /// Waits until the version is confirmed (`true`) or the download ended without it.
    pub async fn wait_confirmed(&self) -> bool {
        let mut rx = self.state.subscribe();
        let state = rx
            .wait_for(|s| s.confirmed || s.ended)
            .await
            .expect("the sender lives in self");
        state.confirmed
    }

    pub fn is_ended(&self) -> bool {
        self.state.borrow().ended
    }

    /// A reader needs bytes `r` (clamped to the file), which have not landed.
    pub fn demand(&self, r: Range<u64>) {
        let r = r.start.min(self.size)..r.end.min(self.size);
        if r.is_empty() {
            return;
        }
        self.demands.lock().expect("demands").push(r);
        self.demanded.notify_one();
    }

    /// The ranges demanded since the last call, waiting for at least one.
    pub async fn next_demands(&self) -> Vec<Range<u64>> {
        loop {
            let taken = std::mem::take(&mut *self.demands.lock().expect("demands"));
            if !taken.is_empty() {
                return taken;
            }
            self.demanded.notified().await;
        }
    }

    /// Whether bytes `r` (clamped to the file) have all landed.
    pub fn has(&self, r: &Range<u64>) -> bool {
        let r = r.start.min(self.size)..r.end.min(self.size);
        self.state.borrow().ranges.contains(&r)
    }

    pub fn is_complete(&self) -> bool {
        self.state.borrow().ranges.contains(&(0..self.size))
    }

    pub fn prefix(&self) -> u64 {
        self.state.borrow().ranges.prefix()
    }

    /// A receiver of every change, for followers such as the hasher.
    pub fn watch(&self) -> watch::Receiver<LandedState> {
        self.state.subscribe()
    }

    /// Waits until bytes `r` (clamped to the file) have landed.
    pub async fn wait_for(&self, r: Range<u64>) -> Result<(), NeverLanded> {
        let r = r.start.min(self.size)..r.end.min(self.size);
        let mut rx = self.state.subscribe();
        let state = rx
            .wait_for(|s| s.ended || s.ranges.contains(&r))
            .await
            .expect("the sender lives in self");
        if state.ranges.contains(&r) {
            Ok(())
        } else {
            Err(NeverLanded { wanted: r })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn ranges_merge_and_answer_containment() {
        let mut set = RangeSet::default();
        set.insert(10..20);
        set.insert(30..40);
        assert_eq!(set.ranges(), [10..20, 30..40]);
        assert_eq!(set.prefix(), 0);
        set.insert(20..30); // touches both neighbours
        assert_eq!(set.ranges(), std::slice::from_ref(&(10..40)));
        set.insert(0..5);
        set.insert(3..12);
        assert_eq!(set.ranges(), std::slice::from_ref(&(0..40)));
        assert_eq!((set.prefix(), set.len()), (40, 40));
        set.insert(50..60);
        set.insert(45..46);
        assert_eq!(set.ranges(), [0..40, 45..46, 50..60]);
        assert!(set.contains(&(5..40)) && set.contains(&(50..60)) && set.contains(&(7..7)));
        assert!(!set.contains(&(39..41)) && !set.contains(&(44..46)) && !set.contains(&(55..61)));
        set.insert(0..100);
        assert_eq!(set.ranges(), std::slice::from_ref(&(0..100)));
    }

    #[tokio::test]
    async fn a_waiter_wakes_when_its_range_lands_and_not_before() {
        let landed = Arc::new(Landed::new(100));
        let waiter = {
            let landed = Arc::clone(&landed);
            tokio::spawn(async move { landed.wait_for(40..60).await })
        };
        landed.add(0..50);
        landed.add(70..100);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "50..60 has not landed");
        landed.add(50..70);
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert!(landed.is_complete());
        assert_eq!(landed.prefix(), 100);
    }

    #[tokio::test]
    async fn waiters_for_bytes_that_never_come_are_told_when_the_download_ends() {
        let landed = Arc::new(Landed::new(100));
        landed.add(0..10);
        let waiter = {
            let landed = Arc::clone(&landed);
            tokio::spawn(async move { landed.wait_for(0..20).await })
        };
        landed.end();
        assert_eq!(waiter.await.unwrap(), Err(NeverLanded { wanted: 0..20 }));
        assert_eq!(
            landed.wait_for(0..10).await,
            Ok(()),
            "landed bytes stay landed"
        );
        assert_eq!(landed.wait_for(90..200).await.unwrap_err().wanted, 90..100);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The set equals a plain bitmap model after any sequence of inserts.
        #[test]
        fn range_set_matches_a_bitmap(inserts in proptest::collection::vec((0u64..200, 0u64..40), 0..30),
                                      probe in (0u64..220, 0u64..40)) {
            let mut set = RangeSet::default();
            let mut model = [false; 260];
            for (start, len) in inserts {
                set.insert(start..start + len);
                for b in &mut model[start as usize..(start + len) as usize] {
                    *b = true;
                }
            }
            prop_assert_eq!(set.len(), model.iter().filter(|b| **b).count() as u64);
            prop_assert!(set.ranges().windows(2).all(|w| w[0].end < w[1].start), "disjoint, sorted, merged");
            let (start, len) = probe;
            let wanted = start..start + len;
            let expected = model[wanted.start as usize..wanted.end as usize].iter().all(|b| *b);
            let inside: u64 = set.within(&wanted).iter().map(|r| r.end - r.start).sum();
            prop_assert_eq!(inside, model[wanted.start as usize..wanted.end as usize].iter().filter(|b| **b).count() as u64);
            let mut removed = set.clone();
            removed.remove(wanted.clone());
            prop_assert!(removed.within(&wanted).is_empty());
            prop_assert_eq!(removed.len() + inside, set.len());
            prop_assert_eq!(set.contains(&wanted), expected);
            prop_assert_eq!(set.prefix(), model.iter().take_while(|b| **b).count() as u64);
        }
    }
}
