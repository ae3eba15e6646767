//! The stateless reference judge's own cases.
use super::*;
use crate::{
    catalog::{Catalog, Feature},
    policy::{Config, Selection},
};

fn eu1() -> Policy {
    let mut config = Config::default();
    config.management.cidrs = vec!["192.0.2.0/24".parse().unwrap()];
    let selection = Selection {
        regions: vec!["eu1".into()],
        features: vec![Feature::Portal, Feature::Mail, Feature::AppConnector],
    };
    Policy::build(
        &Catalog::builtin(),
        &selection,
        &config,
        &["198.51.100.53".parse().unwrap()],
    )
}

fn tcp(hook: Hook, src: &str, dst: &str, sport: u16, dport: u16, syn: bool, ack: bool) -> Packet {
    Packet {
        hook,
        vlan_tags: 0,
        frame: Frame::Ip(IpPacket {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            hop_limit: 64,
            l4: L4::tcp(sport, dport, syn, ack),
        }),
    }
}

const ME: &str = "203.0.113.10";

#[test]
fn egress_rules_and_their_return_path() {
    let p = eu1();
    let out = tcp(Hook::Egress, ME, "13.80.125.22", 40000, 443, true, false);
    assert_eq!(judge(&p, &out).verdict, Verdict::Pass);
    assert!(!judge(&p, &out).rules.is_empty());
    let back = tcp(Hook::Ingress, "13.80.125.22", ME, 443, 40000, true, true);
    assert_eq!(judge(&p, &back).verdict, Verdict::Pass);
    // The return path opens nothing: a SYN from the peer's port 443 is not an answer.
    let sneak = tcp(Hook::Ingress, "13.80.125.22", ME, 443, 22, true, false);
    assert_eq!(judge(&p, &sneak), Judgement::drop(Reason::Policy));
    let wrong_port = tcp(Hook::Egress, ME, "13.80.125.22", 40000, 80, true, false);
    assert_eq!(judge(&p, &wrong_port).verdict, Verdict::Drop);
    let elsewhere = tcp(Hook::Egress, ME, "198.51.100.1", 40000, 443, true, false);
    assert_eq!(judge(&p, &elsewhere).verdict, Verdict::Drop);
}

#[test]
fn ingress_rules_and_their_return_path() {
    let p = eu1();
    // Mail: the page's CIDR 65.55.234.192/26 sends to our port 25.
    let mail = tcp(Hook::Ingress, "65.55.234.200", ME, 51000, 25, true, false);
    assert_eq!(judge(&p, &mail).verdict, Verdict::Pass);
    let answer = tcp(Hook::Egress, ME, "65.55.234.200", 25, 51000, true, true);
    assert_eq!(judge(&p, &answer).verdict, Verdict::Pass);
    let open_out = tcp(Hook::Egress, ME, "65.55.234.200", 25, 51000, true, false);
    assert_eq!(judge(&p, &open_out).verdict, Verdict::Drop);
    let ssh = tcp(Hook::Ingress, "192.0.2.77", ME, 50000, 22, true, false);
    assert_eq!(judge(&p, &ssh).verdict, Verdict::Pass);
}

#[test]
fn essentials_pass_without_rules() {
    let p = eu1();
    let ns = Packet {
        hook: Hook::Ingress,
        vlan_tags: 1,
        frame: Frame::Ip(IpPacket {
            src: "fe80::1".parse().unwrap(),
            dst: "ff02::1:ff00:1".parse().unwrap(),
            hop_limit: 255,
            l4: L4::Icmp { ty: 135, code: 0 },
        }),
    };
    assert_eq!(judge(&p, &ns), Judgement::pass(Reason::Nd));
    let mut forged = ns.clone();
    if let Frame::Ip(ip) = &mut forged.frame {
        ip.hop_limit = 64;
    }
    assert_eq!(judge(&p, &forged), Judgement::drop(Reason::Policy));
    let arp = Packet {
        hook: Hook::Egress,
        vlan_tags: 0,
        frame: Frame::Arp,
    };
    assert_eq!(judge(&p, &arp), Judgement::pass(Reason::Arp));
    let lldp = Packet {
        hook: Hook::Egress,
        vlan_tags: 0,
        frame: Frame::Ethertype(0x88cc),
    };
    assert_eq!(judge(&p, &lldp), Judgement::drop(Reason::Ethertype));
    let qinqinq = Packet { vlan_tags: 3, ..arp };
    assert_eq!(judge(&p, &qinqinq), Judgement::drop(Reason::VlanDepth));
}

#[test]
fn dns_to_the_resolver_only() {
    let p = eu1();
    let query = Packet {
        hook: Hook::Egress,
        vlan_tags: 0,
        frame: Frame::Ip(IpPacket {
            src: ME.parse().unwrap(),
            dst: "198.51.100.53".parse().unwrap(),
            hop_limit: 64,
            l4: L4::Udp { sport: 5353, dport: 53 },
        }),
    };
    assert_eq!(judge(&p, &query).verdict, Verdict::Pass);
    let mut other = query.clone();
    if let Frame::Ip(ip) = &mut other.frame {
        ip.dst = "198.51.100.54".parse().unwrap();
    }
    assert_eq!(judge(&p, &other).verdict, Verdict::Drop);
}

#[test]
fn fragments_and_mapped_addresses() {
    let p = eu1();
    let frag = Packet {
        hook: Hook::Egress,
        vlan_tags: 0,
        frame: Frame::Ip(IpPacket {
            src: ME.parse().unwrap(),
            dst: "13.80.125.22".parse().unwrap(),
            hop_limit: 64,
            l4: L4::Fragment { proto: 6 },
        }),
    };
    assert_eq!(judge(&p, &frag).verdict, Verdict::Pass);
    let mut udp_frag = frag.clone();
    if let Frame::Ip(ip) = &mut udp_frag.frame {
        ip.l4 = L4::Fragment { proto: 17 };
    }
    assert_eq!(judge(&p, &udp_frag).verdict, Verdict::Drop);
    let mapped = Packet {
        hook: Hook::Egress,
        vlan_tags: 0,
        frame: Frame::Ip(IpPacket {
            src: "2001:db8::1".parse().unwrap(),
            dst: IpAddr::V6("13.80.125.22".parse::<std::net::Ipv4Addr>().unwrap().to_ipv6_mapped()),
            hop_limit: 64,
            l4: L4::tcp(1, 443, true, false),
        }),
    };
    assert_eq!(judge(&p, &mapped), Judgement::drop(Reason::V4Mapped));
}

#[test]
fn monitor_mode_delivers_what_it_would_drop() {
    let p = eu1();
    let j = judge(&p, &tcp(Hook::Egress, ME, "198.51.100.1", 1, 2, true, false));
    assert!(!j.delivered(Mode::Enforce));
    assert!(j.delivered(Mode::Monitor));
}
