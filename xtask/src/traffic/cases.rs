//! What the traffic bench measures: the receivers (what sits on a veth), the kinds of
//! traffic, which of them meet, and what each receiver must do with each kind before its
//! figures are worth timing.

/// What sits on a receiver's veth.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Receiver {
    XdpDrop,
    XdpPass,
    XdpFilter,
    Nft,
    Allowgate(Load),
    /// The flood receivers: the same web server (tcp/80 open to the world) behind each
    /// filter, with the same addresses.
    XdpFilterWeb,
    NftConntrack,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum Load {
    Catalog,
    /// The catalog plus learned addresses, as with DNS learning on: a miss in the
    /// generation's tables is then also looked up in the learned table.
    CatalogLearned,
    HostHeavy,
    CidrHeavy,
    /// The catalog plus `[[allow]]` ingress 0.0.0.0/0 tcp/80: a web server.
    WebServer,
}

impl Receiver {
    /// Every receiver, in the order the report lists them.
    pub(crate) const ALL: [Receiver; 11] = [
        Receiver::XdpDrop,
        Receiver::XdpPass,
        Receiver::XdpFilter,
        Receiver::Nft,
        Receiver::Allowgate(Load::Catalog),
        Receiver::Allowgate(Load::CatalogLearned),
        Receiver::Allowgate(Load::HostHeavy),
        Receiver::Allowgate(Load::CidrHeavy),
        Receiver::XdpFilterWeb,
        Receiver::NftConntrack,
        Receiver::Allowgate(Load::WebServer),
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Receiver::XdpDrop => "XDP_DROP (ceiling)",
            Receiver::XdpPass => "XDP_PASS (to the stack)",
            Receiver::XdpFilter => "xdp-filter, deny policy, the catalog's addresses",
            Receiver::Nft => "nftables netdev ingress, interval set of the same",
            Receiver::Allowgate(Load::Catalog) => "allowgate, all regions and features",
            Receiver::Allowgate(Load::CatalogLearned) => "allowgate, same + 64 learned addresses",
            Receiver::Allowgate(Load::HostHeavy) => "allowgate + 100k prefixes, /32-heavy",
            Receiver::Allowgate(Load::CidrHeavy) => "allowgate + 100k prefixes, CIDR-heavy",
            Receiver::XdpFilterWeb => "xdp-filter, the same + tcp/80 open",
            Receiver::NftConntrack => "nftables, ct state rules + the set, tcp/80 open",
            Receiver::Allowgate(Load::WebServer) => "allowgate, the catalog + tcp/80 open to the world",
        }
    }

    pub(crate) fn key(self) -> &'static str {
        match self {
            Receiver::XdpDrop => "xdp-drop",
            Receiver::XdpPass => "xdp-pass",
            Receiver::XdpFilter => "xdp-filter",
            Receiver::Nft => "nft",
            Receiver::Allowgate(Load::Catalog) => "allowgate",
            Receiver::Allowgate(Load::CatalogLearned) => "allowgate-learned",
            Receiver::Allowgate(Load::HostHeavy) => "allowgate-100k-host",
            Receiver::Allowgate(Load::CidrHeavy) => "allowgate-100k-cidr",
            Receiver::XdpFilterWeb => "xdp-filter-web",
            Receiver::NftConntrack => "nft-ct",
            Receiver::Allowgate(Load::WebServer) => "allowgate-web",
        }
    }

    /// The tool it needs beyond the bench's own, if any.
    pub(crate) fn tool(self) -> Option<&'static str> {
        match self {
            Receiver::XdpFilter | Receiver::XdpFilterWeb => Some("xdp-filter"),
            Receiver::Nft | Receiver::NftConntrack => Some("nft"),
            _ => None,
        }
    }

    /// The kinds of traffic it receives in the bench.
    pub(crate) fn traffic(self) -> &'static [Traffic] {
        match self {
            // The yardsticks take no decision: one row each.
            Receiver::XdpDrop => &[Traffic::Denied],
            Receiver::XdpPass => &[Traffic::Allowed],
            Receiver::XdpFilterWeb | Receiver::NftConntrack | Receiver::Allowgate(Load::WebServer) => &Traffic::FLOODS,
            // Junk beside the steady denied frame too, without the web server's
            // 0.0.0.0/0 rule: what a changing source costs by itself.
            Receiver::XdpFilter | Receiver::Allowgate(Load::Catalog) => {
                &[Traffic::Denied, Traffic::Allowed, Traffic::Junk]
            }
            _ => &[Traffic::Denied, Traffic::Allowed],
        }
    }

    /// The xdp-filter and nftables receivers with the same addresses and open ports,
    /// which this one's figures are paired with.
    pub(crate) fn yardsticks(self) -> (Receiver, Receiver) {
        match self {
            Receiver::XdpFilterWeb | Receiver::NftConntrack | Receiver::Allowgate(Load::WebServer) => {
                (Receiver::XdpFilterWeb, Receiver::NftConntrack)
            }
            _ => (Receiver::XdpFilter, Receiver::Nft),
        }
    }

    /// A web server listens on tcp/80 in its namespace.
    pub(crate) fn serves_web(self) -> bool {
        self.traffic().contains(&Traffic::SpoofedSyn)
    }

    /// What it must do with `traffic`, checked before any figure is taken.
    pub(crate) fn expect(self, traffic: Traffic) -> Outcome {
        match (self, traffic) {
            (_, Traffic::Denied | Traffic::Junk) => Outcome::Dropped,
            (_, Traffic::Allowed | Traffic::SpoofedSyn) => Outcome::ToStack,
            // A stateless filter lets a listed peer's segments in; the stack answers
            // each with a RST. Tracking drops them: no connection has that 4-tuple.
            (Receiver::XdpFilterWeb, Traffic::SpoofedAck) => Outcome::ToStack,
            (_, Traffic::SpoofedAck) => Outcome::Dropped,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub(crate) enum Traffic {
    Denied,
    Allowed,
    SpoofedAck,
    SpoofedSyn,
    Junk,
}

impl Traffic {
    #[cfg(test)]
    pub(crate) const ALL: [Traffic; 5] = [
        Traffic::Denied,
        Traffic::Allowed,
        Traffic::SpoofedAck,
        Traffic::SpoofedSyn,
        Traffic::Junk,
    ];
    pub(crate) const FLOODS: [Traffic; 3] = [Traffic::SpoofedAck, Traffic::SpoofedSyn, Traffic::Junk];

    pub(crate) fn key(self) -> &'static str {
        match self {
            Traffic::Denied => "denied",
            Traffic::Allowed => "allowed",
            Traffic::SpoofedAck => "spoofed-ack",
            Traffic::SpoofedSyn => "spoofed-syn",
            Traffic::Junk => "junk",
        }
    }

    pub(crate) fn label(self) -> &'static str {
        match self {
            Traffic::Denied => "denied (udp from an unlisted source)",
            Traffic::Allowed => "allowed (udp from a listed source)",
            Traffic::SpoofedAck => "spoofed ACKs from a catalog peer's tcp/443, no flow",
            Traffic::SpoofedSyn => "spoofed SYNs from random sources to tcp/80",
            Traffic::Junk => "random-source junk (udp to a closed port)",
        }
    }

    /// Each frame differs from the last (a flood), rather than one frame sent again.
    pub(crate) fn varies(self) -> bool {
        Traffic::FLOODS.contains(&self)
    }
}

/// Where a frame must end for a case to be timed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Outcome {
    /// The filter drops it: the stack never sees it.
    Dropped,
    /// It reaches the stack's transport layer (which may answer it).
    ToStack,
}

impl Outcome {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Dropped => "dropped",
            Outcome::ToStack => "to the stack",
        }
    }
}

/// The cases of a run, each (receiver, traffic), in report order.
pub(crate) fn cases(receivers: &[Receiver]) -> Vec<(Receiver, Traffic)> {
    receivers
        .iter()
        .flat_map(|&r| r.traffic().iter().map(move |&t| (r, t)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flood_meets_every_flood_receiver_and_junk_the_plain_ones_too() {
        let all = cases(&Receiver::ALL);
        let web = [
            Receiver::XdpFilterWeb,
            Receiver::NftConntrack,
            Receiver::Allowgate(Load::WebServer),
        ];
        for flood in Traffic::FLOODS {
            let receivers: Vec<Receiver> = all.iter().filter(|(_, t)| *t == flood).map(|(r, _)| *r).collect();
            if flood == Traffic::Junk {
                let plain = [Receiver::XdpFilter, Receiver::Allowgate(Load::Catalog)];
                assert_eq!(receivers, [&plain[..], &web[..]].concat());
            } else {
                assert_eq!(receivers, web);
            }
        }
        // Each is paired with the yardsticks of its own policy.
        for (receiver, _) in &all {
            let (filter, nft) = receiver.yardsticks();
            assert_eq!(
                web.contains(receiver),
                web.contains(&filter) && web.contains(&nft),
                "{receiver:?}"
            );
        }
        // The denied and allowed rows stay as they were.
        assert_eq!(all.iter().filter(|(_, t)| *t == Traffic::Denied).count(), 7);
        assert_eq!(all.iter().filter(|(_, t)| *t == Traffic::Allowed).count(), 7);
    }

    #[test]
    fn only_the_stateless_filter_lets_the_spoofed_acks_in() {
        for receiver in [Receiver::NftConntrack, Receiver::Allowgate(Load::WebServer)] {
            assert_eq!(receiver.expect(Traffic::SpoofedAck), Outcome::Dropped);
        }
        assert_eq!(Receiver::XdpFilterWeb.expect(Traffic::SpoofedAck), Outcome::ToStack);
        for receiver in [
            Receiver::XdpFilterWeb,
            Receiver::NftConntrack,
            Receiver::Allowgate(Load::WebServer),
        ] {
            assert_eq!(receiver.expect(Traffic::SpoofedSyn), Outcome::ToStack);
            assert_eq!(receiver.expect(Traffic::Junk), Outcome::Dropped);
        }
    }
}
