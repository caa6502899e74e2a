//! The counter: a lossless-write checker, as in the original design.
//!
//! It writes fresh ids to a list at a steady rate while the topology changes
//! ([`writer`]), following the master through HAProxy, through dnsd's SRV record,
//! or by asking the nodes; then reads the list back and prints
//! `ack'd: N (M missing) err'd: E (P phantom) unknown: U (L landed)` ([`tally`]).
//! Each write is acknowledged, rejected (err'd) or of unknown outcome. On a planned
//! move both M and P must be 0; unknown writes may land or not.

pub mod tally;
pub mod writer;

pub use tally::{median_max_ms, Tally, Verdict, Window};
pub use writer::{read_list, read_list_as, Destination, WriteOutcome, Pace, Writer, WriterDied};
