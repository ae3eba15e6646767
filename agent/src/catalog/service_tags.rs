//! Reads Azure's "IP Ranges and Service Tags" files (`ServiceTags_Public_*.json`, and
//! the government clouds' files) into a catalog: the prefixes of one service's tags.
//!
//! The file is `{changeNumber, cloud, values: [{name, id, properties: {changeNumber,
//! region, regionId, platform, systemService, addressPrefixes, networkFeatures}}]}`.
//! The service's global tag (`MicrosoftCloudAppSecurity`) becomes the region `all`;
//! each regional tag (`MicrosoftCloudAppSecurity.WestEurope`, `region: "westeurope"`)
//! an Azure region (`westeurope`). Other services' tags are skipped. The prefixes
//! serve the features the operator names, with those features' directions and port
//! (`FeatureSpec`), because the tag itself does not say which feature uses what.
//!
//! The file is large (about 5 MB, tens of thousands of prefixes of every service), so
//! it is read with borrowed strings: only the chosen tags' prefixes are copied.

use std::borrow::Cow;

use ipnet::IpNet;
use serde::Deserialize;

use super::{Catalog, CatalogEntry, Feature, Origin, Peer, PortRange, Proto, Region, RegionKind, nearest, region_key};

/// The service's tag.
pub const DEFAULT_TAG: &str = "MicrosoftCloudAppSecurity";

/// The features a tag's prefixes serve when the operator names none: the page's
/// address-list features (its service-tag table lists these, and mail and the log
/// collector, whose entries the page gives as names and CIDRs of their own).
pub const DEFAULT_FEATURES: [Feature; 4] = [Feature::Portal, Feature::Proxy, Feature::Siem, Feature::AppConnector];

/// The largest file read: the public cloud's file is about 5 MB.
pub const MAX_TAG_FILE_BYTES: usize = 64 << 20;

/// The region id of a service's global tag.
pub const ALL_REGIONS: &str = "all";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceTagError {
    #[error("line {line}, column {column}: not an Azure service tags file: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },

    #[error("the file is {bytes} bytes, more than the {max} a service tags file can be")]
    TooLarge { bytes: usize, max: usize },

    #[error("the file has no tag `{tag}` (cloud {cloud}){}", super::suggestion_suffix(.suggestion))]
    NoSuchTag {
        tag: String,
        cloud: String,
        suggestion: Option<String>,
    },

    #[error("tag {tag}: \"{prefix}\" is not an address prefix{reason}")]
    BadPrefix {
        tag: String,
        prefix: String,
        reason: &'static str,
    },

    #[error("tag {tag} has the region \"{region}\", which has no letter or digit to name a region")]
    BadRegion { tag: String, region: String },

    #[error("no feature to give the tag's prefixes to: name at least one with --feature")]
    NoFeatures,
}

/// Which tag to read and what its prefixes serve.
#[derive(Clone, Copy, Debug)]
pub struct TagOptions<'a> {
    /// The service's tag name; its regional tags are `NAME.Region`.
    pub tag: &'a str,
    pub features: &'a [Feature],
}

impl Default for TagOptions<'_> {
    fn default() -> Self {
        TagOptions {
            tag: DEFAULT_TAG,
            features: &DEFAULT_FEATURES,
        }
    }
}

#[derive(Deserialize)]
struct TagFile<'a> {
    #[serde(rename = "changeNumber")]
    change_number: u64,
    #[serde(borrow)]
    cloud: Cow<'a, str>,
    #[serde(borrow)]
    values: Vec<TagValue<'a>>,
}

#[derive(Deserialize)]
struct TagValue<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    properties: TagProperties<'a>,
}

#[derive(Deserialize)]
struct TagProperties<'a> {
    #[serde(rename = "changeNumber", default)]
    change_number: u64,
    #[serde(borrow, default)]
    region: Cow<'a, str>,
    #[serde(rename = "addressPrefixes", borrow, default)]
    address_prefixes: Vec<Cow<'a, str>>,
}

/// Reads a service tags file into a catalog of `options.tag` and its regional tags.
/// `file` (usually the file name) is recorded as each entry's origin.
pub fn parse_service_tags(bytes: &[u8], file: &str, options: TagOptions<'_>) -> Result<Catalog, ServiceTagError> {
    if bytes.len() > MAX_TAG_FILE_BYTES {
        return Err(ServiceTagError::TooLarge {
            bytes: bytes.len(),
            max: MAX_TAG_FILE_BYTES,
        });
    }
    if options.features.is_empty() {
        return Err(ServiceTagError::NoFeatures);
    }
    let parsed: TagFile<'_> = serde_json::from_slice(bytes).map_err(|e| ServiceTagError::Json {
        line: e.line(),
        column: e.column(),
        // serde_json ends its message with the position, which the error names already.
        message: one_line(&e.to_string())
            .rsplit_once(" at line ")
            .map_or_else(|| one_line(&e.to_string()), |(m, _)| m.to_string()),
    })?;

    let regional_prefix = format!("{}.", options.tag);
    let mut catalog = Catalog {
        source: String::new(),
        origins: Vec::new(),
        regions: Vec::new(),
        entries: Vec::new(),
        warnings: Vec::new(),
    };
    for value in &parsed.values {
        let name: &str = &value.name;
        let region = if name.eq_ignore_ascii_case(options.tag) {
            Region {
                id: ALL_REGIONS.to_string(),
                label: format!("every region of {name}"),
                kind: RegionKind::All,
            }
        } else if let Some(suffix) = name
            .get(..regional_prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(&regional_prefix))
            .map(|_| &name[regional_prefix.len()..])
        {
            let from = if value.properties.region.is_empty() {
                suffix
            } else {
                &value.properties.region
            };
            let id = region_key(from);
            if id.is_empty() {
                return Err(ServiceTagError::BadRegion {
                    tag: name.to_string(),
                    region: from.to_string(),
                });
            }
            Region {
                id,
                label: suffix.to_string(),
                kind: RegionKind::AzureRegion,
            }
        } else {
            continue;
        };

        let origin = catalog.origins.len();
        catalog.origins.push(Origin::ServiceTag {
            file: file.to_string(),
            tag: name.to_string(),
            change: value.properties.change_number,
            file_change: parsed.change_number,
            cloud: parsed.cloud.to_string(),
        });
        for prefix in &value.properties.address_prefixes {
            let net = parse_prefix(prefix).map_err(|reason| ServiceTagError::BadPrefix {
                tag: name.to_string(),
                prefix: prefix.to_string(),
                reason,
            })?;
            for &feature in options.features {
                let spec = feature.spec();
                for &direction in spec.directions {
                    catalog.entries.push(CatalogEntry {
                        region: Some(region.id.clone()),
                        feature,
                        peer: Peer::Net(net),
                        direction,
                        proto: Proto::Tcp,
                        ports: vec![PortRange::single(spec.port)],
                        line: 0,
                        offering: None,
                        origin,
                    });
                }
            }
        }
        if !catalog.regions.iter().any(|r| r.id == region.id) {
            catalog.regions.push(region);
        }
    }
    if catalog.origins.is_empty() {
        // `nearest` compares lowercase names; the suggestion is given as the file spells it.
        let lowercase: Vec<String> = parsed
            .values
            .iter()
            .map(|v| v.name.to_ascii_lowercase())
            .filter(|n| !n.contains('.'))
            .collect();
        let suggestion = nearest(&options.tag.to_ascii_lowercase(), lowercase.iter().map(String::as_str))
            .and_then(|lower| parsed.values.iter().find(|v| v.name.eq_ignore_ascii_case(&lower)))
            .map(|v| v.name.to_string());
        return Err(ServiceTagError::NoSuchTag {
            tag: options.tag.to_string(),
            cloud: parsed.cloud.to_string(),
            suggestion,
        });
    }
    // The same prefix in two regional tags is two entries (each region lists it);
    // the same prefix twice in one tag is one.
    let mut seen = std::collections::HashSet::new();
    catalog.entries.retain(|e| seen.insert(super::EntryKey::of(e)));
    catalog.source = format!(
        "{file} ({} {}, changeNumber {})",
        parsed.cloud, options.tag, parsed.change_number
    );
    Ok(catalog)
}

/// A prefix of the file: an address with a length and no host bits, or an address.
fn parse_prefix(text: &str) -> Result<IpNet, &'static str> {
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => text.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| "")?,
    };
    if net.trunc() != net {
        return Err(" (host bits set)");
    }
    if let IpNet::V6(v6) = net
        && v6.addr().to_ipv4_mapped().is_some()
    {
        return Err(" (an IPv4-mapped IPv6 prefix; the data plane never passes those)");
    }
    Ok(net)
}

fn one_line(message: &str) -> String {
    message.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;
    use crate::catalog::Direction;

    /// A small file in the shape Azure publishes: the service's global and regional
    /// tags, another service's tags around them, IPv6, a duplicate prefix.
    const FILE: &str = r#"{
  "changeNumber": 412,
  "cloud": "Public",
  "values": [
    {
      "name": "AzureCloud.westeurope",
      "id": "AzureCloud.westeurope",
      "properties": {
        "changeNumber": 90, "region": "westeurope", "regionId": 18, "platform": "Azure",
        "systemService": "", "addressPrefixes": ["192.0.2.128/25"], "networkFeatures": ["API", "NSG"]
      }
    },
    {
      "name": "MicrosoftCloudAppSecurity",
      "id": "MicrosoftCloudAppSecurity",
      "properties": {
        "changeNumber": 31, "region": "", "regionId": 0, "platform": "Azure",
        "systemService": "MicrosoftCloudAppSecurity",
        "addressPrefixes": ["192.0.2.0/28", "198.51.100.7/32", "2001:db8:10::/48", "192.0.2.0/28"],
        "networkFeatures": ["API", "NSG", "UDR", "FW"]
      }
    },
    {
      "name": "MicrosoftCloudAppSecurity.WestEurope",
      "id": "MicrosoftCloudAppSecurity.WestEurope",
      "properties": {
        "changeNumber": 7, "region": "westeurope", "regionId": 18, "platform": "Azure",
        "systemService": "MicrosoftCloudAppSecurity",
        "addressPrefixes": ["192.0.2.0/28", "2001:db8:10::/48"], "networkFeatures": ["API"]
      }
    },
    {
      "name": "MicrosoftCloudAppSecurity.WestUS2",
      "id": "MicrosoftCloudAppSecurity.WestUS2",
      "properties": {
        "changeNumber": 4, "region": "westus2", "regionId": 33, "platform": "Azure",
        "systemService": "MicrosoftCloudAppSecurity", "addressPrefixes": ["198.51.100.7/32"]
      }
    }
  ]
}"#;

    fn nets(c: &Catalog, region: &str, feature: Feature, direction: Direction) -> BTreeSet<String> {
        c.entries
            .iter()
            .filter(|e| e.region.as_deref() == Some(region) && e.feature == feature && e.direction == direction)
            .map(|e| e.peer.to_string())
            .collect()
    }

    #[test]
    fn global_and_regional_tags_become_regions() {
        let c = parse_service_tags(
            FILE.as_bytes(),
            "ServiceTags_Public_20260601.json",
            TagOptions::default(),
        )
        .unwrap();
        let regions: Vec<(&str, RegionKind)> = c.regions.iter().map(|r| (r.id.as_str(), r.kind)).collect();
        assert_eq!(
            regions,
            [
                ("all", RegionKind::All),
                ("westeurope", RegionKind::AzureRegion),
                ("westus2", RegionKind::AzureRegion)
            ]
        );
        assert_eq!(
            nets(&c, "all", Feature::Portal, Direction::Egress),
            BTreeSet::from([
                "192.0.2.0/28".to_string(),
                "198.51.100.7/32".into(),
                "2001:db8:10::/48".into()
            ])
        );
        assert_eq!(
            nets(&c, "westeurope", Feature::Siem, Direction::Egress),
            BTreeSet::from(["192.0.2.0/28".to_string(), "2001:db8:10::/48".into()])
        );
        // Other services' tags are not read: 192.0.2.128/25 is AzureCloud's.
        assert!(c.entries.iter().all(|e| e.peer.to_string() != "192.0.2.128/25"));
        assert_eq!(
            c.source,
            "ServiceTags_Public_20260601.json (Public MicrosoftCloudAppSecurity, changeNumber 412)"
        );
    }

    #[test]
    fn features_get_their_own_directions_and_ports() {
        let c = parse_service_tags(FILE.as_bytes(), "tags.json", TagOptions::default()).unwrap();
        // App connector: the service connects in on 443; proxy goes both ways.
        assert_eq!(
            nets(&c, "westus2", Feature::AppConnector, Direction::Ingress),
            BTreeSet::from(["198.51.100.7/32".to_string()])
        );
        assert!(nets(&c, "westus2", Feature::AppConnector, Direction::Egress).is_empty());
        assert_eq!(nets(&c, "westus2", Feature::Proxy, Direction::Ingress).len(), 1);
        assert_eq!(nets(&c, "westus2", Feature::Proxy, Direction::Egress).len(), 1);
        assert!(
            c.entries
                .iter()
                .all(|e| e.ports == [PortRange::single(e.feature.spec().port)] && e.line == 0)
        );
        // The duplicate prefix of the global tag is one entry per feature and direction.
        let dup = c
            .entries
            .iter()
            .filter(|e| e.region.as_deref() == Some("all") && e.peer.to_string() == "192.0.2.0/28")
            .count();
        assert_eq!(dup, 5, "portal, proxy x2, siem, app-connector");
    }

    #[test]
    fn features_can_be_named_and_each_entry_cites_its_tag() {
        let features = [Feature::Mail];
        let options = TagOptions {
            tag: "MicrosoftCloudAppSecurity",
            features: &features,
        };
        let c = parse_service_tags(FILE.as_bytes(), "tags.json", options).unwrap();
        assert!(
            c.entries
                .iter()
                .all(|e| e.feature == Feature::Mail && e.direction == Direction::Ingress)
        );
        let we = c
            .entries
            .iter()
            .find(|e| e.region.as_deref() == Some("westeurope"))
            .unwrap();
        assert_eq!(
            we.cite(&c),
            "service tag MicrosoftCloudAppSecurity.WestEurope changeNumber 7 (tags.json)"
        );
    }

    #[test]
    fn bad_files_are_named() {
        let err = |text: &str, options: TagOptions<'_>| {
            parse_service_tags(text.as_bytes(), "t.json", options)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err(
                r#"{"changeNumber": 1, "cloud": "Public", "values": [ {"name": 3} ]}"#,
                TagOptions::default()
            ),
            "line 1, column 61: not an Azure service tags file: invalid type: integer `3`, expected a string"
        );
        assert!(
            err("# Network requirements\n", TagOptions::default())
                .starts_with("line 1, column 1: not an Azure service tags file")
        );
        assert_eq!(
            err(
                FILE,
                TagOptions {
                    tag: "MicrosoftCloudAppSecurty",
                    features: &DEFAULT_FEATURES
                }
            ),
            "the file has no tag `MicrosoftCloudAppSecurty` (cloud Public): did you mean `MicrosoftCloudAppSecurity`?"
        );
        let host_bits = FILE.replace("198.51.100.7/32\", \"2001", "198.51.100.7/24\", \"2001");
        assert_eq!(
            err(&host_bits, TagOptions::default()),
            "tag MicrosoftCloudAppSecurity: \"198.51.100.7/24\" is not an address prefix (host bits set)"
        );
        let mapped = FILE.replace("2001:db8:10::/48\", \"192", "::ffff:192.0.2.0/120\", \"192");
        assert!(err(&mapped, TagOptions::default()).contains("IPv4-mapped"));
        let truncated = &FILE[..FILE.len() / 2];
        assert!(err(truncated, TagOptions::default()).contains("not an Azure service tags file"));
        assert_eq!(
            err(
                FILE,
                TagOptions {
                    tag: DEFAULT_TAG,
                    features: &[]
                }
            ),
            "no feature to give the tag's prefixes to: name at least one with --feature"
        );
    }

    #[test]
    fn a_government_cloud_file_reads_alike() {
        let gov = FILE
            .replace("\"Public\"", "\"AzureGovernment\"")
            .replace("MicrosoftCloudAppSecurity.WestEurope", "MicrosoftCloudAppSecurity.USGovVirginia")
            .replace("\"region\": \"westeurope\", \"regionId\": 18, \"platform\": \"Azure\",\n        \"systemService\": \"MicrosoftCloudAppSecurity\"", "\"region\": \"usgovvirginia\", \"regionId\": 18, \"platform\": \"Azure\",\n        \"systemService\": \"MicrosoftCloudAppSecurity\"");
        let c = parse_service_tags(
            gov.as_bytes(),
            "ServiceTags_AzureGovernment.json",
            TagOptions::default(),
        )
        .unwrap();
        assert!(
            c.regions
                .iter()
                .any(|r| r.id == "usgovvirginia" && r.label == "USGovVirginia")
        );
        assert!(c.source.contains("AzureGovernment"));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..600)) {
            let _ = parse_service_tags(&bytes, "x.json", TagOptions::default());
        }

        #[test]
        fn mangled_file_never_panics(cut in 0usize..FILE.len(), byte in proptest::prelude::any::<u8>()) {
            let mut bytes = FILE.as_bytes().to_vec();
            bytes[cut] = byte;
            let _ = parse_service_tags(&bytes, "x.json", TagOptions::default());
        }
    }
}
