//! Replication history: does one instance hold everything another has written?
//!
//! Redis names its history by a replication id and an offset. Two instances that
//! share an id hold the same bytes up to the smaller of their offsets: only the
//! master that owns an id appends to it. A promoted replica, and a master that
//! restarts from an RDB file, starts a new id but keeps the old one as `replid2`,
//! valid up to `second_repl_offset - 1`; so an instance answers to two names for
//! the start of its history. A restart from an AOF keeps no history at all: a new
//! id at offset 0, however many keys it loaded.
//!
//! [`coverage`] is the one rule the dictator (may a master be demoted?) and the
//! failover (which slave to promote?) share; [`rank`] orders candidates by it, and
//! [`discards`] is the dictator's refusal for a slave, which the failover checks
//! its choice against.
//!
//! The write fence ([`crate::FENCE_MIN_REPLICAS`]) records the offset at which it
//! was set ([`fence_value`], [`fence_point`]): a fenced master takes no writes, so
//! the bytes it adds afterwards are replication pings, not data ([`History::until`]).

use crate::FENCE_MIN_REPLICAS;

/// Where an instance stands: `master_replid`, `master_replid2`, its offset
/// (`slave_repl_offset` on a replica, else `master_repl_offset`) and
/// `second_repl_offset`, as `INFO replication` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct History<'a> {
    pub replid: &'a str,
    pub replid2: &'a str,
    pub offset: u64,
    pub second_offset: i64,
}

impl<'a> History<'a> {
    /// The same history cut at `offset`: what it holds up to a fence point.
    pub fn until(self, offset: u64) -> History<'a> {
        History { offset: self.offset.min(offset), ..self }
    }

    /// No replication history: a fresh instance, one restarted from an AOF, or a
    /// master that never had a replica. Its keys, if any, have no offsets to compare.
    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// The names the end of each part of this history answers to: `(id, offset)`
    /// means "the first `offset` bytes of history `id`".
    fn names(&self) -> [Option<(&'a str, u64)>; 2] {
        let previous = (self.second_offset >= 1 && !is_null_id(self.replid2))
            .then(|| (self.replid2, self.offset.min(self.second_offset as u64 - 1)));
        [Some((self.replid, self.offset)), previous]
    }
}

/// Redis shows "no previous history" as forty zeros.
fn is_null_id(id: &str) -> bool {
    id.bytes().all(|b| b == b'0')
}

/// How much of a member's history a candidate holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Coverage {
    /// The candidate holds the member's history up to this offset...
    pub held: u64,
    /// ...and lacks the member's bytes `held + 1 ..= held + lacking`.
    pub lacking: u64,
}

impl Coverage {
    pub fn holds_all(&self) -> bool {
        self.lacking == 0
    }
}

/// Does `candidate` hold everything `member` has written, and if not, which bytes
/// of `member`'s history does it lack? Pure; the answer is only as good as the
/// offsets: a member whose history [`is empty`](History::is_empty) is held
/// trivially, whatever keys it has.
pub fn coverage(candidate: &History<'_>, member: &History<'_>) -> Coverage {
    let mut held = 0;
    for (id, offset) in member.names().into_iter().flatten() {
        for (cid, coffset) in candidate.names().into_iter().flatten() {
            if id == cid {
                held = held.max(offset.min(coffset));
            }
        }
    }
    Coverage { held, lacking: member.offset - held }
}

/// Whether two instances are on one history: they share bytes, or the id they
/// both start from. Symmetric.
pub fn shares(a: &History<'_>, b: &History<'_>) -> bool {
    coverage(a, b).held > 0 || a.replid == b.replid
}

/// The bytes of `member`'s history that promoting `candidate` would discard: what
/// it lacks of a history the two share. A member on another history is resynced in
/// full whoever is promoted, so it counts for nothing here (an operator may move a
/// group to another history; the failover never chooses to). The dictator refuses
/// to promote over a slave this is not 0 for.
pub fn discards(candidate: &History<'_>, member: &History<'_>) -> u64 {
    if shares(candidate, member) { coverage(candidate, member).lacking } else { 0 }
}

/// Candidates ordered by how much of the members' histories each lacks (the
/// worst member counts), fewest bytes first; ties keep the input order. The
/// first is the one whose promotion discards least.
pub fn rank<'a, K>(candidates: impl IntoIterator<Item = (K, History<'a>)>, members: &[History<'_>]) -> Vec<(K, u64)> {
    let mut ranked: Vec<(K, u64)> = candidates
        .into_iter()
        .map(|(key, c)| {
            let worst = members.iter().map(|m| coverage(&c, m).lacking).max().unwrap_or(0);
            (key, worst)
        })
        .collect();
    ranked.sort_by_key(|(_, lacking)| *lacking);
    ranked
}

/// Fence points are kept modulo this, inside `min-replicas-to-write` (an int):
/// exact while fewer bytes than this pass after the fence, i.e. pings for years.
const FENCE_POINT_MODULUS: u64 = 1_000_000_000;

/// The `min-replicas-to-write` that fences a master and records that its history
/// held `offset` bytes when the fence was set.
pub fn fence_value(offset: u64) -> u32 {
    // Below i32::MAX, the setting's limit.
    FENCE_MIN_REPLICAS + 1 + (offset % FENCE_POINT_MODULUS) as u32
}

/// Where a fence was set, from the instance's `min-replicas-to-write` and its
/// offset now: `None` when it is not fenced, or fenced without a point (by hand,
/// or by a dictator that died between setting the fence and recording the point),
/// so that every byte it has counts as data.
pub fn fence_point(min_replicas_to_write: u32, offset_now: u64) -> Option<u64> {
    let residue = u64::from(min_replicas_to_write.checked_sub(FENCE_MIN_REPLICAS + 1)?);
    if residue >= FENCE_POINT_MODULUS || offset_now < residue {
        return None;
    }
    // The largest offset at or below now with that residue.
    Some(offset_now - (offset_now - residue) % FENCE_POINT_MODULUS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: &str = "0000000000000000000000000000000000000000";

    fn history<'a>(replid: &'a str, replid2: &'a str, offset: u64, second_offset: i64) -> History<'a> {
        History { replid, replid2, offset, second_offset }
    }

    #[test]
    fn only_an_offset_of_zero_is_no_history() {
        assert!(history("a", NONE, 0, -1).is_empty());
        assert!(!history("a", NONE, 1, -1).is_empty());
    }

    #[test]
    fn holding_all_is_lacking_nothing() {
        assert!(Coverage { held: 7, lacking: 0 }.holds_all());
        assert!(!Coverage { held: 7, lacking: 1 }.holds_all());
    }

    #[test]
    fn a_previous_history_counts_only_when_it_has_both_an_id_and_an_end() {
        // replid2 of forty zeros is "none", whatever second_repl_offset says: a
        // candidate whose own id happens to be zeros holds none of it.
        let member = history("b", NONE, 20, 10);
        assert_eq!(coverage(&history(NONE, NONE, 9, -1), &member), Coverage { held: 0, lacking: 20 });
        // An id without an end (second_repl_offset -1) is no previous history either.
        let member = history("b", "a", 20, -1);
        assert_eq!(coverage(&history("a", NONE, 20, -1), &member), Coverage { held: 0, lacking: 20 });
        // With both, the first bytes up to second_repl_offset - 1 are history "a".
        let member = history("b", "a", 20, 11);
        assert_eq!(coverage(&history("a", NONE, 20, -1), &member), Coverage { held: 10, lacking: 10 });
    }

    fn h<'a>(replid: &'a str, offset: u64, replid2: &'a str, second_offset: i64) -> History<'a> {
        History { replid, replid2, offset, second_offset }
    }

    /// The model: every byte `o` (1-based) of a history, by each name it has.
    fn bytes_of(x: &History<'_>) -> Vec<Vec<(String, u64)>> {
        (1..=x.offset)
            .map(|o| {
                let mut names = vec![(x.replid.to_string(), o)];
                if !is_null_id(x.replid2) && (o as i64) < x.second_offset {
                    names.push((x.replid2.to_string(), o));
                }
                names
            })
            .collect()
    }

    /// Bytes of `member` that `candidate` lacks, counted one by one.
    fn lacking_by_model(candidate: &History<'_>, member: &History<'_>) -> u64 {
        let held: Vec<(String, u64)> = bytes_of(candidate).into_iter().flatten().collect();
        bytes_of(member).iter().filter(|names| !names.iter().any(|n| held.contains(n))).count() as u64
    }

    /// Every history of up to 4 bytes over three ids, as redis can show it:
    /// `second_offset` is -1 without a previous id, else 1..=offset+1.
    fn all_histories() -> Vec<History<'static>> {
        let mut all = Vec::new();
        for replid in ["a", "b", "c"] {
            for offset in 0..=4u64 {
                all.push(h(replid, offset, NONE, -1));
                for replid2 in ["a", "b", "c"].into_iter().filter(|r| *r != replid) {
                    for second in 1..=offset as i64 + 1 {
                        all.push(h(replid, offset, replid2, second));
                    }
                }
            }
        }
        all
    }

    #[test]
    fn coverage_agrees_with_counting_bytes_for_every_small_pair() {
        let all = all_histories();
        let mut checked = 0;
        for c in &all {
            for m in &all {
                let cov = coverage(c, m);
                assert_eq!(cov.lacking, lacking_by_model(c, m), "candidate {c:?} member {m:?}");
                assert_eq!(cov.held + cov.lacking, m.offset);
                checked += 1;
            }
        }
        assert!(checked > 10_000, "{checked}");
    }

    #[test]
    fn the_same_history_further_along_holds_it() {
        assert!(coverage(&h("a", 100, NONE, -1), &h("a", 90, NONE, -1)).holds_all());
        assert_eq!(coverage(&h("a", 90, NONE, -1), &h("a", 100, NONE, -1)), Coverage { held: 90, lacking: 10 });
    }

    #[test]
    fn a_promoted_slave_holds_its_old_master_up_to_the_promotion() {
        // b was promoted from history a at offset 100 (second_repl_offset 101).
        let b = h("b", 150, "a", 101);
        assert!(coverage(&b, &h("a", 100, NONE, -1)).holds_all());
        assert_eq!(coverage(&b, &h("a", 120, NONE, -1)), Coverage { held: 100, lacking: 20 });
    }

    #[test]
    fn a_slave_restarted_from_rdb_is_a_prefix_of_its_master() {
        // Restarted from its RDB: a new id, the old one kept as replid2.
        let restarted = h("r", 52, "a", 53);
        assert!(coverage(&h("a", 500, NONE, -1), &restarted).holds_all());
        // And of a master promoted later from the same history.
        assert!(coverage(&h("b", 900, "a", 300), &restarted).holds_all());
        // Unless it took writes after the restart.
        assert_eq!(coverage(&h("a", 500, NONE, -1), &h("r", 80, "a", 53)), Coverage { held: 52, lacking: 28 });
    }

    #[test]
    fn two_masters_restarted_from_the_same_rdb_history_share_it() {
        assert!(coverage(&h("x", 100, "a", 101), &h("y", 100, "a", 101)).holds_all());
        assert_eq!(coverage(&h("x", 100, "a", 61), &h("y", 100, "a", 101)).held, 60);
    }

    #[test]
    fn unrelated_histories_share_nothing_and_an_empty_one_is_held() {
        assert_eq!(coverage(&h("a", 100, NONE, -1), &h("z", 40, NONE, -1)), Coverage { held: 0, lacking: 40 });
        // An AOF restart: no offsets, so nothing to compare (the keys are the caller's business).
        let aof = h("z", 0, NONE, -1);
        assert!(aof.is_empty() && coverage(&h("a", 100, NONE, -1), &aof).holds_all());
    }

    #[test]
    fn bytes_after_a_fence_point_are_not_history() {
        // A fenced master kept sending pings after b was promoted from it at 100.
        let fenced = h("a", 114, NONE, -1);
        let b = h("b", 130, "a", 101);
        assert_eq!(coverage(&b, &fenced).lacking, 14);
        assert!(coverage(&b, &fenced.until(100)).holds_all());
    }

    #[test]
    fn candidates_rank_by_the_bytes_they_lack() {
        let members = [h("a", 100, NONE, -1), h("a", 120, NONE, -1)];
        let ranked = rank([("far", h("a", 120, NONE, -1)), ("near", h("a", 110, NONE, -1)), ("other", h("z", 500, NONE, -1)), ("tie", h("a", 130, NONE, -1))], &members);
        assert_eq!(ranked, [("far", 0), ("tie", 0), ("near", 10), ("other", 120)]);
    }

    #[test]
    fn only_bytes_of_a_shared_history_are_discarded() {
        let master = h("a", 120, NONE, -1);
        assert_eq!(discards(&h("a", 100, NONE, -1), &master), 20);
        assert_eq!(discards(&h("b", 150, "a", 101), &master), 20, "promoted from a at 100");
        assert_eq!(discards(&h("z", 500, NONE, -1), &master), 0, "another history: resynced, not discarded");
        assert!(shares(&h("r", 52, "a", 53), &master) && shares(&master, &h("r", 52, "a", 53)));
        assert!(!shares(&h("z", 500, NONE, -1), &master));
        // Both at the very start of one id: nothing to discard, but one history.
        assert!(shares(&h("a", 0, NONE, -1), &h("a", 0, NONE, -1)));
        for c in &all_histories() {
            for m in &all_histories() {
                assert_eq!(shares(c, m), shares(m, c), "{c:?} {m:?}");
                let lacking = coverage(c, m).lacking;
                assert_eq!(discards(c, m), if shares(c, m) { lacking } else { 0 }, "{c:?} {m:?}");
            }
        }
    }

    #[test]
    fn a_fence_records_its_point_and_finds_it_again() {
        for (point, later) in [(0, 0), (100, 100), (100, 114), (999_999_999, 1_000_000_100), (5_000_000_123, 5_000_000_500)] {
            let value = fence_value(point);
            assert!(value > FENCE_MIN_REPLICAS && value <= i32::MAX as u32, "{value}");
            assert_eq!(fence_point(value, later), Some(point), "point {point} seen at {later}");
        }
        // No point: the plain fence, no fence, or an offset below the point.
        assert_eq!(fence_point(FENCE_MIN_REPLICAS, 100), None);
        assert_eq!(fence_point(0, 100), None);
        assert_eq!(fence_point(fence_value(200), 100), None);
    }
}
