//! allowgate: enforce a cloud service's published network allow list at the NIC.
//!
//! `catalog` reads the service's page, `policy` turns a selection into rules, tables
//! and verdicts (pure), `dataplane` puts the tables in the kernel (the only aya user),
//! `cli` is one file per verb.

pub mod catalog;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod dataplane;
pub mod dns;
pub mod events;
pub mod metrics;
pub mod policy;
