//! Resolving and learning the catalog's DNS names (docs/dns-names.md).
//!
//! `frame`, `message` and `learn` are the part that needs no kernel: reading a held
//! frame, what the DNS answer in it says, which names the policy lists, what the answer
//! teaches about them, and the bounded table of addresses learned that way. The daemon feeds it frames the XDP program held and puts the table in the
//! data plane.

pub mod frame;
pub mod give_back;
pub mod learn;
pub mod learner;
pub mod message;

pub use frame::{FrameError, MAX_VLAN_TAGS};
pub use learn::{
    DEFAULT_LEARNED_CAPACITY, Inserted, Learned, LearnedTable, MAX_CNAME_HOPS, NameMatch, NameSet, TtlPolicy, learn,
};
pub use message::{AnswerData, AnswerRecord, DnsAnswer, LearnError, parse_answer};
