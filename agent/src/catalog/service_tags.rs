//! Reads Azure's "IP Ranges and Service Tags" files (`ServiceTags_Public_*.json`, and
//! the government clouds' files) into a catalog: the prefixes of the service's tags.
//!
//! The file is `{changeNumber, cloud, values: [{name, id, properties: {changeNumber,
//! region, regionId, platform, systemService, addressPrefixes, networkFeatures}}]}`.
//! The service's tags are those its page names (`SERVICE_TAGS`):
//! `MicrosoftCloudAppSecurity` with its regional tags, and since 2025
//! `AzureFrontDoor.MicrosoftSecurity` for the portal and the SIEM agent. A global tag
//! becomes the region `all`; each regional tag (`MicrosoftCloudAppSecurity.FranceCentral`,
//! `region: "centralfrance"`) the Azure region both spellings name, in Azure's form
//! (`francecentral`, see `azure.rs`). Other services' tags are skipped. The prefixes
//! serve the features the operator names, with those features' directions and port
//! (`FeatureSpec`), because the tag itself does not say which feature uses what.
//!
//! The file is large (about 5 MB, tens of thousands of prefixes of every service), so
//! it is read with borrowed strings: only the chosen tags' prefixes are copied.

use std::borrow::Cow;

use ipnet::IpNet;
use serde::Deserialize;

use super::{
    Catalog, CatalogEntry, Feature, Origin, Peer, PortRange, Proto, Region, RegionKind, azure::azure_region, nearest,
    region_key,
};

/// A tag of the service, as its page's service tag table names it.
#[derive(Clone, Copy, Debug)]
pub struct ServiceTag {
    pub name: &'static str,
    /// The features the page says it serves; `None`: whichever the operator names.
    pub serves: Option<&'static [Feature]>,
    /// Since when the page names it, for the warning when a file lacks it.
    pub since: Option<&'static str>,
}

/// The service's tags, read when the operator names none.
pub const SERVICE_TAGS: [ServiceTag; 2] = [
    ServiceTag {
        name: "MicrosoftCloudAppSecurity",
        serves: None,
        since: None,
    },
    ServiceTag {
        name: "AzureFrontDoor.MicrosoftSecurity",
        serves: Some(&[Feature::Portal, Feature::Siem]),
        since: Some("2025"),
    },
];

/// The service's own tag, whose absence means the file is not one to read.
pub const DEFAULT_TAG: &str = SERVICE_TAGS[0].name;

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

    #[error("no tag was read: none serves the features named (--feature)")]
    NoFeatures,
}

/// Which tags to read and what their prefixes serve.
#[derive(Clone, Copy, Debug, Default)]
pub struct TagOptions<'a> {
    /// The tags to read, each with its regional tags (`NAME.Region`); empty: the
    /// service's (`SERVICE_TAGS`).
    pub tags: &'a [String],
    /// The features their prefixes serve; empty: `DEFAULT_FEATURES`. A tag the page
    /// says serves fewer (`AzureFrontDoor.MicrosoftSecurity`) serves only those of them.
    pub features: &'a [Feature],
}

impl TagOptions<'_> {
    /// The tags to read: (name, the features its prefixes serve, named by the operator).
    fn plan(&self) -> Vec<(String, Vec<Feature>, bool)> {
        let asked: &[Feature] = if self.features.is_empty() {
            &DEFAULT_FEATURES
        } else {
            self.features
        };
        let serves = |name: &str| -> Vec<Feature> {
            let known = SERVICE_TAGS.iter().find(|t| t.name.eq_ignore_ascii_case(name));
            match known.and_then(|t| t.serves) {
                Some(serves) => asked.iter().copied().filter(|f| serves.contains(f)).collect(),
                None => asked.to_vec(),
            }
        };
        if self.tags.is_empty() {
            SERVICE_TAGS
                .iter()
                .map(|t| (t.name.to_string(), serves(t.name), false))
                .collect()
        } else {
            self.tags.iter().map(|t| (t.clone(), serves(t), true)).collect()
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
    let parsed: TagFile<'_> = serde_json::from_slice(bytes).map_err(|e| ServiceTagError::Json {
        line: e.line(),
        column: e.column(),
        // serde_json ends its message with the position, which the error names already.
        message: one_line(&e.to_string())
            .rsplit_once(" at line ")
            .map_or_else(|| one_line(&e.to_string()), |(m, _)| m.to_string()),
    })?;

    let mut catalog = Catalog {
        source: String::new(),
        origins: Vec::new(),
        regions: Vec::new(),
        entries: Vec::new(),
        warnings: Vec::new(),
    };
    let mut read = Vec::new();
    for (tag, features, named) in options.plan() {
        if features.is_empty() {
            let serves = SERVICE_TAGS
                .iter()
                .find(|t| t.name.eq_ignore_ascii_case(&tag))
                .and_then(|t| t.serves)
                .unwrap_or(&[]);
            let serves: Vec<&str> = serves.iter().map(|f| f.as_str()).collect();
            catalog.warnings.push(format!(
                "tag {tag} serves {} (per the page), none of the features named: not imported",
                serves.join(" and ")
            ));
            continue;
        }
        let before = catalog.origins.len();
        read_tag(&parsed, file, &tag, &features, &mut catalog)?;
        if catalog.origins.len() > before {
            read.push(tag);
            continue;
        }
        let since = SERVICE_TAGS
            .iter()
            .find(|t| t.name.eq_ignore_ascii_case(&tag))
            .and_then(|t| t.since);
        match since {
            Some(since) if !named => catalog.warnings.push(format!(
                "the file has no tag {tag} (the page names it since {since}): its addresses are not in this catalog"
            )),
            _ => return Err(no_such_tag(&parsed, &tag)),
        }
    }
    if read.is_empty() {
        return Err(ServiceTagError::NoFeatures);
    }
    // The same prefix in two regional tags is two entries (each region lists it);
    // the same prefix twice in one tag is one.
    let mut seen = std::collections::HashSet::new();
    catalog.entries.retain(|e| seen.insert(super::EntryKey::of(e)));
    catalog.source = format!(
        "{file} ({} {}, changeNumber {})",
        parsed.cloud,
        read.join(" + "),
        parsed.change_number
    );
    Ok(catalog)
}

/// Reads `tag` and its regional tags into `catalog`, their prefixes serving `features`.
fn read_tag(
    parsed: &TagFile<'_>,
    file: &str,
    tag: &str,
    features: &[Feature],
    catalog: &mut Catalog,
) -> Result<(), ServiceTagError> {
    let regional_prefix = format!("{tag}.");
    for value in &parsed.values {
        let name: &str = &value.name;
        let region = if name.eq_ignore_ascii_case(tag) {
            Region {
                id: ALL_REGIONS.to_string(),
                label: "every region (the service's global tags)".to_string(),
                kind: RegionKind::All,
            }
        } else if let Some(suffix) = name
            .get(..regional_prefix.len())
            .filter(|p| p.eq_ignore_ascii_case(&regional_prefix))
            .map(|_| &name[regional_prefix.len()..])
        {
            match tag_region(name, suffix, &value.properties.region, &mut catalog.warnings)? {
                Some(region) => region,
                None => continue,
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
            for &feature in features {
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
    Ok(())
}

/// The Azure region of a regional tag: the one its name's suffix (`FranceCentral`) or
/// its `properties.region` (`centralfrance`) names, in Azure's spelling. `None` for a
/// tag that names no region at all (`AzureFrontDoor.Frontend` under `AzureFrontDoor`):
/// not a regional tag, skipped with a warning.
fn tag_region(
    name: &str,
    suffix: &str,
    property: &str,
    warnings: &mut Vec<String>,
) -> Result<Option<Region>, ServiceTagError> {
    if let Some(known) = azure_region(suffix).or_else(|| azure_region(property)) {
        return Ok(Some(Region {
            id: known.name.to_string(),
            label: known.display.to_string(),
            kind: RegionKind::AzureRegion,
        }));
    }
    if property.is_empty() {
        warnings.push(format!(
            "tag {name} names no region: skipped (name it with --tag to import it as a tag of its own)"
        ));
        return Ok(None);
    }
    let id = region_key(suffix);
    if id.is_empty() {
        return Err(ServiceTagError::BadRegion {
            tag: name.to_string(),
            region: suffix.to_string(),
        });
    }
    warnings.push(format!(
        "tag {name}: region \"{property}\" is not an Azure region allowgate knows: read as the region `{id}`"
    ));
    Ok(Some(Region {
        id,
        label: suffix.to_string(),
        kind: RegionKind::AzureRegion,
    }))
}

fn no_such_tag(parsed: &TagFile<'_>, tag: &str) -> ServiceTagError {
    // `nearest` compares lowercase names; the suggestion is given as the file spells it.
    let lowercase: Vec<String> = parsed.values.iter().map(|v| v.name.to_ascii_lowercase()).collect();
    let suggestion = nearest(&tag.to_ascii_lowercase(), lowercase.iter().map(String::as_str))
        .and_then(|lower| parsed.values.iter().find(|v| v.name.eq_ignore_ascii_case(&lower)))
        .map(|v| v.name.to_string());
    ServiceTagError::NoSuchTag {
        tag: tag.to_string(),
        cloud: parsed.cloud.to_string(),
        suggestion,
    }
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
    /// tags (one whose `region` is the older spelling), Front Door's security tag and
    /// another of its tags, another service's tags around them, IPv6, a duplicate prefix.
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
      "name": "AzureFrontDoor.Frontend",
      "id": "AzureFrontDoor.Frontend",
      "properties": {
        "changeNumber": 12, "region": "", "regionId": 0, "platform": "Azure",
        "systemService": "AzureFrontDoor", "addressPrefixes": ["203.0.113.0/26"]
      }
    },
    {
      "name": "AzureFrontDoor.MicrosoftSecurity",
      "id": "AzureFrontDoor.MicrosoftSecurity",
      "properties": {
        "changeNumber": 3, "region": "", "regionId": 0, "platform": "Azure",
        "systemService": "AzureFrontDoor", "addressPrefixes": ["203.0.113.128/25", "2001:db8:afd::/48"]
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
      "name": "MicrosoftCloudAppSecurity.FranceCentral",
      "id": "MicrosoftCloudAppSecurity.FranceCentral",
      "properties": {
        "changeNumber": 2, "region": "centralfrance", "regionId": 60, "platform": "Azure",
        "systemService": "MicrosoftCloudAppSecurity", "addressPrefixes": ["198.51.100.64/27"]
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

    fn set(items: &[&str]) -> BTreeSet<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn global_and_regional_tags_become_regions() {
        let c = parse_service_tags(
            FILE.as_bytes(),
            "ServiceTags_Public_20260601.json",
            TagOptions::default(),
        )
        .unwrap();
        let regions: Vec<(&str, &str, RegionKind)> = c
            .regions
            .iter()
            .map(|r| (r.id.as_str(), r.label.as_str(), r.kind))
            .collect();
        assert_eq!(
            regions,
            [
                ("all", "every region (the service's global tags)", RegionKind::All),
                ("francecentral", "France Central", RegionKind::AzureRegion),
                ("westeurope", "West Europe", RegionKind::AzureRegion),
                ("westus2", "West US 2", RegionKind::AzureRegion),
            ]
        );
        assert_eq!(
            nets(&c, "westeurope", Feature::Siem, Direction::Egress),
            set(&["192.0.2.0/28", "2001:db8:10::/48"])
        );
        // The tag's `region` says `centralfrance`; the region is Azure's `francecentral`.
        assert_eq!(
            nets(&c, "francecentral", Feature::Portal, Direction::Egress),
            set(&["198.51.100.64/27"])
        );
        // Other services' tags are not read: 192.0.2.128/25 is AzureCloud's, 203.0.113.0/26
        // the other Front Door tag's.
        assert!(
            c.entries
                .iter()
                .all(|e| !["192.0.2.128/25", "203.0.113.0/26"].contains(&e.peer.to_string().as_str()))
        );
        assert_eq!(
            c.source,
            "ServiceTags_Public_20260601.json (Public MicrosoftCloudAppSecurity + AzureFrontDoor.MicrosoftSecurity, changeNumber 412)"
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    /// The page names Front Door's security tag for the portal and the SIEM agent
    /// only: its prefixes serve those, IPv6 included, however many features are asked.
    #[test]
    fn front_door_serves_the_portal_and_siem_only() {
        let afd = set(&["203.0.113.128/25", "2001:db8:afd::/48"]);
        let c = parse_service_tags(FILE.as_bytes(), "tags.json", TagOptions::default()).unwrap();
        let from_afd = |c: &Catalog| -> BTreeSet<Feature> {
            c.entries
                .iter()
                .filter(|e| afd.contains(&e.peer.to_string()))
                .map(|e| e.feature)
                .collect()
        };
        assert_eq!(from_afd(&c), BTreeSet::from([Feature::Portal, Feature::Siem]));
        assert_eq!(
            nets(&c, "all", Feature::Portal, Direction::Egress)
                .intersection(&afd)
                .count(),
            2
        );
        let cite = c
            .entries
            .iter()
            .find(|e| e.peer.to_string() == "2001:db8:afd::/48")
            .map(|e| e.cite(&c));
        assert_eq!(
            cite.as_deref(),
            Some("service tag AzureFrontDoor.MicrosoftSecurity changeNumber 3 (tags.json)")
        );
        // Asked for the proxy alone, Front Door has nothing to give and says so.
        let proxy = [Feature::Proxy];
        let only_proxy = TagOptions {
            tags: &[],
            features: &proxy,
        };
        let c = parse_service_tags(FILE.as_bytes(), "tags.json", only_proxy).unwrap();
        assert!(from_afd(&c).is_empty());
        assert_eq!(
            c.warnings,
            [
                "tag AzureFrontDoor.MicrosoftSecurity serves portal and siem (per the page), none of the features named: not imported"
            ]
        );
        // Named alone and asked for what it does not serve: nothing is read, an error.
        let named = tags(&["AzureFrontDoor.MicrosoftSecurity"]);
        let err = parse_service_tags(
            FILE.as_bytes(),
            "tags.json",
            TagOptions {
                tags: &named,
                features: &proxy,
            },
        )
        .unwrap_err();
        assert_eq!(err, ServiceTagError::NoFeatures);
    }

    #[test]
    fn tag_narrows_to_one_tag() {
        let named = tags(&["MicrosoftCloudAppSecurity"]);
        let options = TagOptions {
            tags: &named,
            features: &[],
        };
        let c = parse_service_tags(FILE.as_bytes(), "tags.json", options).unwrap();
        assert!(c.entries.iter().all(|e| !e.peer.to_string().starts_with("203.0.113.")));
        assert!(
            c.origins
                .iter()
                .all(|o| matches!(o, Origin::ServiceTag { tag, .. } if tag.starts_with("MicrosoftCloudAppSecurity")))
        );
        // Another tag of the file that names no region is not taken for a regional tag.
        let named = tags(&["AzureFrontDoor"]);
        let options = TagOptions {
            tags: &named,
            features: &[],
        };
        let err = parse_service_tags(FILE.as_bytes(), "tags.json", options).unwrap_err();
        assert!(matches!(err, ServiceTagError::NoSuchTag { .. }), "{err}");
    }

    /// A file from before 2025 has no Front Door tag: the import says so and goes on.
    #[test]
    fn a_file_without_front_door_warns() {
        let old = FILE.replace("AzureFrontDoor.MicrosoftSecurity", "AzureFrontDoor.Backend");
        let c = parse_service_tags(old.as_bytes(), "tags.json", TagOptions::default()).unwrap();
        assert_eq!(
            c.warnings,
            [
                "the file has no tag AzureFrontDoor.MicrosoftSecurity (the page names it since 2025): its addresses are not in this catalog"
            ]
        );
        assert!(c.entries.iter().all(|e| !e.peer.to_string().starts_with("203.0.113.")));
    }

    #[test]
    fn features_get_their_own_directions_and_ports() {
        let c = parse_service_tags(FILE.as_bytes(), "tags.json", TagOptions::default()).unwrap();
        // App connector: the service connects in on 443; proxy goes both ways.
        assert_eq!(
            nets(&c, "westus2", Feature::AppConnector, Direction::Ingress),
            set(&["198.51.100.7/32"])
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
        let named = tags(&["MicrosoftCloudAppSecurity"]);
        let options = TagOptions {
            tags: &named,
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
        let typo = tags(&["MicrosoftCloudAppSecurty"]);
        assert_eq!(
            err(
                FILE,
                TagOptions {
                    tags: &typo,
                    features: &[]
                }
            ),
            "the file has no tag `MicrosoftCloudAppSecurty` (cloud Public): did you mean `MicrosoftCloudAppSecurity`?"
        );
        // The service's own tag missing: not a file to read, whatever else it holds.
        let other = FILE.replace("MicrosoftCloudAppSecurity", "SomethingElse");
        assert!(err(&other, TagOptions::default()).starts_with("the file has no tag `MicrosoftCloudAppSecurity`"));
        let host_bits = FILE.replace("198.51.100.7/32\", \"2001", "198.51.100.7/24\", \"2001");
        assert_eq!(
            err(&host_bits, TagOptions::default()),
            "tag MicrosoftCloudAppSecurity: \"198.51.100.7/24\" is not an address prefix (host bits set)"
        );
        let mapped = FILE.replace("2001:db8:10::/48\", \"192", "::ffff:192.0.2.0/120\", \"192");
        assert!(err(&mapped, TagOptions::default()).contains("IPv4-mapped"));
        let truncated = &FILE[..FILE.len() / 2];
        assert!(err(truncated, TagOptions::default()).contains("not an Azure service tags file"));
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
                .any(|r| r.id == "usgovvirginia" && r.label == "US Gov Virginia")
        );
        assert!(c.source.contains("AzureGovernment"));
    }

    /// A regional tag of a region the vocabulary does not know is read under the
    /// tag's suffix, with a warning; one of a known region under Azure's name whichever
    /// of its two spellings is known.
    #[test]
    fn unknown_regions_are_read_and_named() {
        let atlantis = FILE.replace(
            "MicrosoftCloudAppSecurity.WestUS2\",\n      \"id\": \"MicrosoftCloudAppSecurity.WestUS2\",\n      \"properties\": {\n        \"changeNumber\": 4, \"region\": \"westus2\"",
            "MicrosoftCloudAppSecurity.AtlantisNorth\",\n      \"id\": \"MicrosoftCloudAppSecurity.AtlantisNorth\",\n      \"properties\": {\n        \"changeNumber\": 4, \"region\": \"atlantisn\"",
        );
        assert_ne!(atlantis, FILE);
        let c = parse_service_tags(atlantis.as_bytes(), "t.json", TagOptions::default()).unwrap();
        assert!(c.regions.iter().any(|r| r.id == "atlantisnorth"));
        assert_eq!(
            c.warnings,
            [
                "tag MicrosoftCloudAppSecurity.AtlantisNorth: region \"atlantisn\" is not an Azure region allowgate knows: read as the region `atlantisnorth`"
            ]
        );
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
