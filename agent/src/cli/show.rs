//! `allowgate show`: the compiled allow list as a table, JSON or an nftables script.

use std::process::ExitCode;

use serde::Serialize;

use super::{SelectionArgs, render_table};
use crate::{
    catalog::{Feature, Peer, PortRange},
    policy::{Policy, Rule, compile_policy, nft},
};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
    Nft,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    selection: SelectionArgs,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// The addresses the daemon learned for the catalog's DNS names instead (name,
    /// address, features, expiry); table or json.
    #[arg(long)]
    learned: bool,
}

impl Args {
    pub fn config(&self) -> Option<&std::path::Path> {
        self.selection.config.as_deref()
    }
}

fn learned(format: Format, socket: &std::path::Path) -> anyhow::Result<ExitCode> {
    use crate::control::{
        client,
        protocol::{Request, Response},
    };
    let entries = match client::call(socket, &Request::Learned)? {
        Response::Learned { entries } => entries,
        Response::Error { message } => anyhow::bail!("{message}"),
        other => anyhow::bail!("unexpected answer from the daemon: {other:?}"),
    };
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&entries)?),
        Format::Nft => anyhow::bail!("--learned comes as a table or json"),
        Format::Table => {
            let mut rows = vec![
                ["ADDRESS", "NAME", "QUERIED", "FEATURES", "EXPIRES IN"]
                    .map(String::from)
                    .to_vec(),
            ];
            for e in &entries {
                rows.push(vec![
                    e.address.to_string(),
                    e.name.clone(),
                    e.queried.clone(),
                    e.features.join(","),
                    format!("{} s", e.expires_in_secs),
                ]);
            }
            print!("{}", render_table(&rows));
            println!("\n{} learned addresses", entries.len());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One element of `show --format json`. Field names are part of the interface.
#[derive(Serialize)]
pub struct JsonEntry<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cidr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    pub direction: &'static str,
    pub proto: &'static str,
    /// Empty: every port (and always for icmp and any).
    pub ports: &'a [PortRange],
    pub regions: Vec<&'a str>,
    pub features: Vec<Feature>,
    pub source: &'static str,
    /// Page lines (catalog entries) that list it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<usize>,
    /// Where each catalog entry behind it comes from: page and `ms.date` and line, or
    /// service tag and `changeNumber`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub origins: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'a str>,
}

impl<'a> JsonEntry<'a> {
    pub fn of(rule: &'a Rule) -> Self {
        let (cidr, name) = match &rule.peer {
            Peer::Net(n) => (Some(n.to_string()), None),
            Peer::Name(n) => (None, Some(n.as_str())),
        };
        let mut lines: Vec<usize> = rule.listed_by.iter().map(|l| l.line).filter(|&l| l > 0).collect();
        lines.sort();
        lines.dedup();
        let mut origins: Vec<&str> = rule.listed_by.iter().map(|l| l.source.as_str()).collect();
        origins.sort();
        origins.dedup();
        JsonEntry {
            cidr,
            name,
            direction: rule.direction.as_str(),
            proto: rule.proto.as_str(),
            ports: &rule.ports,
            regions: rule.regions(),
            features: rule.features(),
            source: rule.source.as_str(),
            lines,
            origins,
            note: rule.note.as_deref(),
        }
    }
}

pub fn execute(args: Args, socket: &std::path::Path) -> anyhow::Result<ExitCode> {
    if args.learned {
        return learned(args.format, socket);
    }
    let (policy, config, _) = args.selection.policy()?;
    // Compile even to print: a policy the data plane would refuse is an error here too.
    let tables = compile_policy(&policy)?;
    if policy.selection.regions.is_empty() {
        eprintln!(
            "allowgate: no region selected (--region R, or `regions` in the config): only essentials, management and [[allow]] entries"
        );
    }
    match args.format {
        Format::Json => {
            let entries: Vec<JsonEntry> = policy.rules.iter().map(JsonEntry::of).collect();
            println!("{}", serde_json::to_string_pretty(&entries)?);
        }
        Format::Nft => print!("{}", nft::render(&policy, &config.interfaces)),
        Format::Table => {
            print!("{}", table(&policy));
            let names = policy.rules.iter().filter(|r| r.net().is_none()).count();
            println!(
                "\n{} rules: {} IPv4 and {} IPv6 table entries after folding, {} DNS names",
                policy.rules.len(),
                tables.v4_entries(),
                tables.v6_entries(),
                names
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn table(policy: &Policy) -> String {
    let mut rows = vec![
        ["PEER", "DIRECTION", "PORTS", "SOURCE", "REGIONS", "FEATURES"]
            .map(String::from)
            .to_vec(),
    ];
    for rule in &policy.rules {
        let features: Vec<&str> = rule.features().iter().map(|f| f.as_str()).collect();
        let source = match (&rule.source, &rule.note) {
            (s, Some(note)) if rule.listed_by.is_empty() => format!("{} ({note})", s.as_str()),
            (s, _) if !rule.listed_by.is_empty() => {
                let mut origins: Vec<&str> = rule.listed_by.iter().map(|l| l.source.as_str()).collect();
                origins.sort();
                origins.dedup();
                let more = match origins.len() {
                    0..=1 => String::new(),
                    n => format!(" +{} more", n - 1),
                };
                format!("{}: {}{more}", s.as_str(), origins[0])
            }
            (s, _) => s.as_str().to_string(),
        };
        rows.push(vec![
            rule.peer.to_string(),
            rule.direction.to_string(),
            rule.ports_label(),
            source,
            dash_if_empty(rule.regions().join(",")),
            dash_if_empty(features.join(",")),
        ]);
    }
    render_table(&rows)
}

fn dash_if_empty(s: String) -> String {
    if s.is_empty() { "-".to_string() } else { s }
}
