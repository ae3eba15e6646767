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
pub mod fetch;
pub mod policy;

/// An error and its causes on one line, as `anyhow`'s `{:#}` prints them.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
