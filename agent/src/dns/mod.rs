//! Resolving and learning the catalog's DNS names (docs/dns-names.md).
//!
//! `learn` is the part that needs no kernel: which names the policy lists, what a DNS
//! answer seen on the wire says about them, and the bounded table of addresses learned
//! that way. The daemon feeds it frames the XDP program held and puts the table in the
//! data plane.

pub mod learn;
pub mod learner;

pub use learn::{
    AnswerData, AnswerRecord, DEFAULT_LEARNED_CAPACITY, DnsAnswer, Inserted, LearnError, Learned, LearnedTable,
    MAX_CNAME_HOPS, MAX_VLAN_TAGS, NameMatch, NameSet, TtlPolicy, learn, parse_answer,
};
