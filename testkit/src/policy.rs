//! The policy the BPF_PROG_TEST_RUN suites judge (tests/differential.rs,
//! tests/tracking.rs): management prefixes on both families, and `[[allow]]` entries that
//! overlap the catalog's and each other with different protocols, directions and
//! ranges, so the compiler's folding is exercised. A suite adds the entries only it
//! needs; every address is in the documentation ranges, besides the real catalog's.

use std::net::IpAddr;

use allowgate::{
    catalog::{Catalog, Direction, Feature, PortRange, Proto},
    policy::{Config, Policy, Selection},
};

use crate::allow;

/// The resolvers the fixture's DNS essentials name.
pub const RESOLVER4: &str = "192.0.2.53";
pub const RESOLVER6: &str = "2001:db8::53";

/// The fixture's config: management from 192.0.2.0/25 and 2001:db8:ffff::/48 on the
/// default port, and the shared `[[allow]]` entries.
pub fn config() -> Config {
    let mut config = Config::default();
    config.management.cidrs = vec!["192.0.2.0/25".parse().unwrap(), "2001:db8:ffff::/48".parse().unwrap()];
    config.allow = vec![
        // `proto` left out of an [[allow]] means any protocol.
        allow("203.0.113.0/24", Direction::Egress, Proto::Any, &[]),
        allow("198.51.100.192/26", Direction::Ingress, Proto::Icmp, &[]),
        allow(
            "2001:db8:b::/48",
            Direction::Egress,
            Proto::Tcp,
            &[PortRange::single(443)],
        ),
        allow(
            "2001:db8:b:1::/64",
            Direction::Ingress,
            Proto::Tcp,
            &[PortRange { lo: 1000, hi: 2000 }],
        ),
        allow("2001:db8:c00::/40", Direction::Egress, Proto::Icmp, &[]),
    ];
    config
}

/// `config` over the built-in catalog's `regions` and `features`, with `resolvers` as
/// the DNS servers.
pub fn build(config: &Config, regions: &[&str], features: &[Feature], resolvers: [&str; 2]) -> Policy {
    let selection = Selection {
        regions: regions.iter().map(|r| r.to_string()).collect(),
        features: features.to_vec(),
    };
    let dns: Vec<IpAddr> = resolvers.iter().map(|r| r.parse().expect("an address")).collect();
    Policy::build(&Catalog::builtin(), &selection, config, &dns)
}
