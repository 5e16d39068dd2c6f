//! Exact delivery accounting: what each receiver got, against what it should have got.
//!
//! A receiver follows one or more *streams* of sequence numbers: for the hub, its
//! team's offsets (the contract says they increase by exactly 1); for the baselines,
//! which have no offsets, each publisher's payload sequence numbers. Everything is
//! derived from the numbers themselves, never from counters the server reports.
//!
//! Memory is O(gaps), not O(messages): a receiver keeps the next number it expects and
//! the ranges it skipped. A later arrival inside a skipped range is out of order; an
//! arrival below the next expected number that is not in a gap is a duplicate.

use serde::{Deserialize, Serialize};

/// Totals over receivers; every field adds up across sockets and processes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    /// Deliveries that should have happened.
    pub expected: u64,
    /// Distinct expected deliveries that happened.
    pub received: u64,
    /// `expected - received`.
    pub lost: u64,
    /// Second and later copies of a number.
    pub duplicates: u64,
    /// Arrivals of a number smaller than one already seen (each also counts once in
    /// `received`).
    pub out_of_order: u64,
    /// Numbers nobody expected: from before the join, past the last publish, or the
    /// receiver's own messages coming back.
    pub unexpected: u64,
}

impl Tally {
    pub fn add(&mut self, other: &Tally) {
        self.expected += other.expected;
        self.received += other.received;
        self.lost += other.lost;
        self.duplicates += other.duplicates;
        self.out_of_order += other.out_of_order;
        self.unexpected += other.unexpected;
    }

    /// Nothing lost, duplicated, reordered or made up.
    pub fn is_exact(&self) -> bool {
        self.lost == 0 && self.duplicates == 0 && self.out_of_order == 0 && self.unexpected == 0
    }
}

/// What one arrival was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// The next number, or one past a gap.
    InOrder,
    /// Fills an earlier gap.
    OutOfOrder,
    Duplicate,
    /// At or below the stream's start.
    Stale,
}

impl Arrival {
    /// Whether this arrival is a new delivery (counts towards progress).
    pub fn is_new(self) -> bool {
        matches!(self, Arrival::InOrder | Arrival::OutOfOrder)
    }
}

/// One receiver's view of one stream, starting after `start` (exclusive).
#[derive(Debug, Clone)]
pub struct Sequence {
    start: u64,
    next: u64,
    /// Skipped half-open ranges `[a, b)`, sorted and disjoint, all below `next`.
    gaps: Vec<(u64, u64)>,
    received: u64,
    duplicates: u64,
    out_of_order: u64,
    stale: u64,
}

impl Sequence {
    /// A stream whose first expected number is `start + 1` (for the hub: the offset in
    /// the join reply).
    pub fn new(start: u64) -> Sequence {
        Sequence {
            start,
            next: start + 1,
            gaps: Vec::new(),
            received: 0,
            duplicates: 0,
            out_of_order: 0,
            stale: 0,
        }
    }

    pub fn start(&self) -> u64 {
        self.start
    }

    /// The highest number seen so far (or `start`).
    pub fn high(&self) -> u64 {
        self.next - 1
    }

    pub fn observe(&mut self, n: u64) -> Arrival {
        if n <= self.start {
            self.stale += 1;
            return Arrival::Stale;
        }
        if n >= self.next {
            if n > self.next {
                self.gaps.push((self.next, n));
            }
            self.next = n + 1;
            self.received += 1;
            return Arrival::InOrder;
        }
        // Below `next`: either fills a gap or was seen before.
        let i = self.gaps.partition_point(|&(_, end)| end <= n);
        match self.gaps.get(i).copied() {
            Some((a, b)) if a <= n => {
                match (a == n, n + 1 == b) {
                    (true, true) => {
                        self.gaps.remove(i);
                    }
                    (true, false) => self.gaps[i].0 = n + 1,
                    (false, true) => self.gaps[i].1 = n,
                    (false, false) => {
                        self.gaps[i].1 = n;
                        self.gaps.insert(i + 1, (n + 1, b));
                    }
                }
                self.received += 1;
                self.out_of_order += 1;
                Arrival::OutOfOrder
            }
            _ => {
                self.duplicates += 1;
                Arrival::Duplicate
            }
        }
    }

    fn is_missing(&self, n: u64) -> bool {
        if n >= self.next {
            return true;
        }
        let i = self.gaps.partition_point(|&(_, end)| end <= n);
        self.gaps.get(i).is_some_and(|&(a, _)| a <= n)
    }

    /// Settles the stream: numbers in `(start, end]` were expected, except `exclude`
    /// (sorted or not; for the hub, the receiver's own publishes, which it is not sent).
    pub fn finish(&self, end: u64, exclude: &[u64]) -> Tally {
        let mut t = Tally {
            duplicates: self.duplicates,
            out_of_order: self.out_of_order,
            unexpected: self.stale,
            ..Tally::default()
        };
        let span = end.saturating_sub(self.start);
        let mut excluded = 0u64;
        for &x in exclude {
            if x <= self.start || x > end {
                continue;
            }
            excluded += 1;
            if !self.is_missing(x) {
                // Our own message came back although it should not have.
                t.unexpected += 1;
            }
        }
        // Received numbers past `end` were never published (as far as we know).
        let past_end = if self.high() > end {
            let gap_past_end: u64 = self
                .gaps
                .iter()
                .map(|&(a, b)| b.saturating_sub(a.max(end + 1)))
                .sum();
            (self.high() - end) - gap_past_end
        } else {
            0
        };
        t.unexpected += past_end;
        t.expected = span - excluded;
        let own_received = exclude
            .iter()
            .filter(|&&x| x > self.start && x <= end && !self.is_missing(x))
            .count() as u64;
        t.received = self.received - past_end - own_received;
        t.lost = t.expected - t.received;
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(seq: &mut Sequence, ns: &[u64]) -> Vec<Arrival> {
        ns.iter().map(|&n| seq.observe(n)).collect()
    }

    #[test]
    fn a_clean_stream_is_exact() {
        let mut s = Sequence::new(10);
        feed(&mut s, &[11, 12, 13, 14]);
        let t = s.finish(14, &[]);
        assert_eq!(t.expected, 4);
        assert_eq!(t.received, 4);
        assert!(t.is_exact(), "{t:?}");
    }

    #[test]
    fn missing_numbers_in_the_middle_and_at_the_end_are_lost() {
        let mut s = Sequence::new(0);
        feed(&mut s, &[1, 2, 5, 6]);
        let t = s.finish(8, &[]);
        assert_eq!((t.expected, t.received, t.lost), (8, 4, 4));
        assert_eq!(t.out_of_order, 0);
    }

    #[test]
    fn late_arrivals_fill_gaps_and_count_as_out_of_order() {
        let mut s = Sequence::new(0);
        let arrivals = feed(&mut s, &[1, 4, 2, 6, 3, 5]);
        assert_eq!(
            arrivals,
            [
                Arrival::InOrder,
                Arrival::InOrder,
                Arrival::OutOfOrder,
                Arrival::InOrder,
                Arrival::OutOfOrder,
                Arrival::OutOfOrder
            ]
        );
        let t = s.finish(6, &[]);
        assert_eq!((t.received, t.lost, t.out_of_order), (6, 0, 3));
    }

    #[test]
    fn a_middle_of_a_gap_splits_it() {
        let mut s = Sequence::new(0);
        feed(&mut s, &[1, 10, 5]);
        assert!(s.is_missing(4) && s.is_missing(6) && !s.is_missing(5));
        let t = s.finish(10, &[]);
        assert_eq!((t.received, t.lost, t.out_of_order), (3, 7, 1));
    }

    #[test]
    fn repeats_are_duplicates_not_deliveries() {
        let mut s = Sequence::new(0);
        let arrivals = feed(&mut s, &[1, 2, 2, 3, 1, 3]);
        assert_eq!(
            arrivals
                .iter()
                .filter(|a| **a == Arrival::Duplicate)
                .count(),
            3
        );
        let t = s.finish(3, &[]);
        assert_eq!((t.received, t.duplicates, t.lost), (3, 3, 0));
        assert!(!t.is_exact());
    }

    #[test]
    fn a_gap_filled_twice_is_one_out_of_order_and_one_duplicate() {
        let mut s = Sequence::new(0);
        feed(&mut s, &[2, 1, 1]);
        let t = s.finish(2, &[]);
        assert_eq!((t.received, t.out_of_order, t.duplicates), (2, 1, 1));
    }

    #[test]
    fn numbers_before_the_join_are_stale() {
        let mut s = Sequence::new(5);
        assert_eq!(s.observe(5), Arrival::Stale);
        assert_eq!(s.observe(3), Arrival::Stale);
        s.observe(6);
        let t = s.finish(6, &[]);
        assert_eq!((t.received, t.unexpected, t.lost), (1, 2, 0));
    }

    #[test]
    fn own_publishes_are_not_expected_and_not_lost() {
        // A publisher in a team sees everyone's offsets but its own (3 and 5).
        let mut s = Sequence::new(0);
        feed(&mut s, &[1, 2, 4, 6]);
        let t = s.finish(6, &[3, 5]);
        assert_eq!((t.expected, t.received, t.lost), (4, 4, 0));
        assert!(t.is_exact(), "{t:?}");
    }

    #[test]
    fn an_own_publish_that_comes_back_is_unexpected() {
        let mut s = Sequence::new(0);
        feed(&mut s, &[1, 2, 3]);
        let t = s.finish(3, &[2]);
        assert_eq!((t.expected, t.received, t.unexpected), (2, 2, 1));
    }

    #[test]
    fn numbers_past_the_last_publish_are_unexpected() {
        let mut s = Sequence::new(0);
        feed(&mut s, &[1, 2, 3, 5]);
        let t = s.finish(3, &[]);
        assert_eq!((t.expected, t.received, t.unexpected, t.lost), (3, 3, 1, 0));
    }

    #[test]
    fn nothing_arrived_means_everything_lost() {
        let s = Sequence::new(7);
        let t = s.finish(17, &[9]);
        assert_eq!((t.expected, t.received, t.lost), (9, 0, 9));
    }

    #[test]
    fn tallies_add_up() {
        let mut a = Tally {
            expected: 3,
            received: 2,
            lost: 1,
            ..Tally::default()
        };
        a.add(&Tally {
            expected: 1,
            received: 1,
            duplicates: 4,
            ..Tally::default()
        });
        assert_eq!((a.expected, a.received, a.lost, a.duplicates), (4, 3, 1, 4));
    }
}
