//! Which bytes of a download are still to be fetched, and who fetches them next.
//!
//! Every byte of the file is claimed exactly once: by a background worker, which takes
//! the next piece in order, or by a reader's demand, which takes the unclaimed bytes of
//! the (rounded) range it waits for at once. Since nothing is claimed twice, readers
//! anywhere in the file never make bytes come twice (only retries do). After a demand
//! the background carries on behind it, so a reader far from the front that reads on
//! sequentially finds a worker ahead of it instead of demanding piece after piece.

use super::landed::RangeSet;
use std::ops::Range;
use std::sync::Mutex;

#[derive(Debug)]
pub struct Plan {
    size: u64,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    unclaimed: RangeSet,
    /// Where the background continues.
    next: u64,
}

impl Plan {
    pub fn new(size: u64) -> Self {
        let mut unclaimed = RangeSet::default();
        unclaimed.insert(0..size);
        Self {
            size,
            state: Mutex::new(State { unclaimed, next: 0 }),
        }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The next piece for a background worker, at most `max` bytes: from where the
    /// background continues, else from the first unclaimed byte. `None` once all is claimed.
    pub fn claim_next(&self, max: u64) -> Option<Range<u64>> {
        let mut s = self.state.lock().expect("plan");
        let run = s
            .unclaimed
            .first_from(s.next)
            .or_else(|| s.unclaimed.first_from(0))?;
        let piece = run.start..run.end.min(run.start + max.max(1));
        s.unclaimed.remove(piece.clone());
        s.next = piece.end;
        Some(piece)
    }

    /// Claims for a reader the unclaimed bytes of `want`, widened to `granule` boundaries
    /// (a small, aligned request even for a tiny read); the background carries on after
    /// it. Returns the pieces to fetch now: none when all of `want` is claimed already.
    pub fn claim_demand(&self, want: Range<u64>, granule: u64) -> Vec<Range<u64>> {
        let granule = granule.max(1);
        let start = want.start - want.start % granule;
        let end = want
            .end
            .div_ceil(granule)
            .saturating_mul(granule)
            .min(self.size);
        let widened = start..end;
        let mut s = self.state.lock().expect("plan");
        // Only the bytes the reader actually needs decide whether to fetch now: if they
        // are all claimed, their claimant brings them.
        if s.unclaimed.within(&want).is_empty() {
            return Vec::new();
        }
        let pieces = s.unclaimed.within(&widened);
        for p in &pieces {
            s.unclaimed.remove(p.clone());
        }
        if let Some(last) = pieces.last() {
            s.next = last.end;
        }
        pieces
    }

    pub fn all_claimed(&self) -> bool {
        self.state.lock().expect("plan").unclaimed.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)]
mod tests {
    use super::*;

    #[test]
    fn background_pieces_cover_the_file_in_order() {
        let plan = Plan::new(10);
        let pieces: Vec<_> = std::iter::from_fn(|| plan.claim_next(4)).collect();
        assert_eq!(pieces, [0..4, 4..8, 8..10]);
        assert!(plan.all_claimed());
    }

    #[test]
    fn a_demand_takes_its_rounded_range_and_the_background_continues_after_it() {
        let plan = Plan::new(100);
        assert_eq!(plan.claim_next(10), Some(0..10));
        assert_eq!(plan.claim_demand(55..57, 8), vec![48..64]);
        assert_eq!(plan.claim_next(10), Some(64..74), "behind the reader");
        assert_eq!(
            plan.claim_demand(5..7, 8),
            Vec::<Range<u64>>::new(),
            "claimed by the background"
        );
        assert_eq!(
            plan.claim_demand(70..80, 8),
            vec![74..80],
            "only what nobody claimed"
        );
        assert_eq!(
            plan.claim_demand(97..98, 8),
            vec![96..100],
            "clipped to the file"
        );
        // The rest: after the end, the background wraps to the first unclaimed byte.
        let rest: Vec<_> = std::iter::from_fn(|| plan.claim_next(100)).collect();
        assert_eq!(rest, [10..48, 80..96]);
    }

    #[test]
    fn every_byte_is_claimed_exactly_once_whatever_the_order() {
        let size = 1000;
        let plan = Plan::new(size);
        let mut seen = vec![0u8; size as usize];
        let mut claim = |pieces: Vec<Range<u64>>| {
            for p in pieces {
                for b in p {
                    seen[b as usize] += 1;
                }
            }
        };
        for i in 0..200u64 {
            let at = (i * 7919) % size;
            if i % 3 == 0 {
                claim(plan.claim_next(37).into_iter().collect());
            } else {
                claim(plan.claim_demand(at..(at + 5).min(size), 16));
            }
        }
        while let Some(p) = plan.claim_next(64) {
            claim(vec![p]);
        }
        assert!(seen.iter().all(|&n| n == 1));
    }
}
