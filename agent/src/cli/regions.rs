//! `allowgate regions`: the data centers, what each lists per feature, which are enabled.

use std::process::ExitCode;

use super::{load_config, render_table};
use crate::{
    catalog::{Feature, Peer},
    control::{
        client,
        protocol::{Request, Response},
    },
};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The config file whose `regions` are shown as enabled.
    #[arg(long, value_name = "PATH")]
    config: Option<std::path::PathBuf>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Print only the region names, one a line, and ask no daemon: what the shell
    /// completions offer, from the config's catalog (an imported one included), else the
    /// built-in one.
    #[arg(long, hide = true, conflicts_with = "json")]
    names: bool,
}

impl Args {
    pub fn config(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }
}

pub fn execute(args: Args, socket: &std::path::Path) -> anyhow::Result<ExitCode> {
    if args.names {
        // A completion must offer something even where the config cannot be read (the
        // config is root's, 0640): then the built-in catalog's names.
        let catalog = load_config(args.config.as_deref())
            .map(|(_, catalog)| catalog)
            .unwrap_or_else(|_| crate::catalog::Catalog::builtin());
        for region in &catalog.regions {
            println!("{}", region.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let (mut config, catalog) = load_config(args.config.as_deref())?;
    // A running daemon's selection (runtime toggles included) is what is enabled.
    if let Ok(Response::Status { status }) = client::call(socket, &Request::Status) {
        config.regions = status.regions;
    }
    // What enabling the region for the feature allows: for `proxy` on a data center,
    // the proxy regions of its offering too (narrowed by `proxy_regions`).
    let counts = |region: &str, feature: Feature| {
        let (mut addrs, mut names) = (0, 0);
        let mut seen = std::collections::BTreeSet::new();
        for (_, e) in catalog.selected(region, feature, config.proxy_regions.as_deref()) {
            if !seen.insert((&e.peer, e.direction)) || e.direction != feature.spec().directions[0] {
                continue;
            }
            match e.peer {
                Peer::Net(_) => addrs += 1,
                Peer::Name(_) => names += 1,
            }
        }
        (addrs, names)
    };
    if args.json {
        let list: Vec<serde_json::Value> = catalog
            .regions
            .iter()
            .map(|r| {
                let features: serde_json::Map<String, serde_json::Value> = Feature::ALL
                    .iter()
                    .map(|&f| {
                        let (a, n) = counts(&r.id, f);
                        (
                            f.as_str().to_string(),
                            serde_json::json!({ "addresses": a, "names": n }),
                        )
                    })
                    .collect();
                serde_json::json!({
                    "region": r.id,
                    "label": r.label,
                    "kind": r.kind.as_str(),
                    "offering": r.offering().map(|o| o.as_str()),
                    "enabled": config.regions.contains(&r.id),
                    "features": features,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut header = ["REGION", "LABEL", "KIND", "ENABLED"].map(String::from).to_vec();
    header.extend(Feature::ALL.iter().map(|f| f.as_str().to_string()));
    let mut rows = vec![header];
    for r in &catalog.regions {
        let kind = match r.offering() {
            Some(o) => format!("data center ({o})"),
            None => r.kind.as_str().to_string(),
        };
        let mut row = vec![
            r.id.clone(),
            r.label.clone(),
            kind,
            if config.regions.contains(&r.id) { "yes" } else { "no" }.to_string(),
        ];
        for &f in &Feature::ALL {
            let (a, n) = counts(&r.id, f);
            row.push(if n == 0 { a.to_string() } else { format!("{a}+{n}") });
        }
        rows.push(row);
    }
    print!("{}", render_table(&rows));
    println!(
        "\nA+N: A addresses or CIDRs and N DNS names enabling the region allows for the feature (global ones included;\n\
         for proxy on a data center, every proxy region of its offering unless proxy_regions narrows them)."
    );
    println!("Catalog: {}", catalog.source);
    Ok(ExitCode::SUCCESS)
}
