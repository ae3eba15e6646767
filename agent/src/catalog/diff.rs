//! What changed between two catalogs, per region and feature (`allowgate catalog diff`,
//! and what `catalog apply` reports).

use std::collections::BTreeSet;

use serde::Serialize;

use super::{Catalog, CatalogEntry, Direction, Feature, Offering, Peer, Proto};

/// One thing a catalog lists, without where it comes from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Listed {
    /// `*`: every region.
    pub region: String,
    pub feature: Feature,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offering: Option<Offering>,
    pub peer: String,
    pub direction: Direction,
    pub proto: Proto,
    pub ports: String,
}

impl Listed {
    fn of(e: &CatalogEntry) -> Listed {
        Listed {
            region: e.region.clone().unwrap_or_else(|| "*".into()),
            feature: e.feature,
            offering: e.offering,
            peer: match &e.peer {
                Peer::Net(n) => n.to_string(),
                Peer::Name(n) => n.to_string(),
            },
            direction: e.direction,
            proto: e.proto,
            ports: e.ports.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
        }
    }
}

impl std::fmt::Display for Listed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.region, self.feature)?;
        if let Some(o) = self.offering {
            write!(f, " ({o})")?;
        }
        write!(f, " {} {} {}/{}", self.direction, self.peer, self.proto, self.ports)
    }
}

/// The difference from an old catalog to a new one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CatalogDiff {
    pub old_source: String,
    pub new_source: String,
    pub regions_added: Vec<String>,
    pub regions_removed: Vec<String>,
    pub added: Vec<Listed>,
    pub removed: Vec<Listed>,
}

impl CatalogDiff {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.regions_added.is_empty()
            && self.regions_removed.is_empty()
    }
}

pub fn diff(old: &Catalog, new: &Catalog) -> CatalogDiff {
    let listed = |c: &Catalog| c.entries.iter().map(Listed::of).collect::<BTreeSet<_>>();
    let (before, after) = (listed(old), listed(new));
    let ids = |c: &Catalog| c.regions.iter().map(|r| r.id.clone()).collect::<BTreeSet<_>>();
    let (old_ids, new_ids) = (ids(old), ids(new));
    CatalogDiff {
        old_source: old.source.clone(),
        new_source: new.source.clone(),
        regions_added: new_ids.difference(&old_ids).cloned().collect(),
        regions_removed: old_ids.difference(&new_ids).cloned().collect(),
        added: after.difference(&before).cloned().collect(),
        removed: before.difference(&after).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_catalog_has_no_difference_from_itself() {
        let c = Catalog::builtin();
        assert!(diff(&c, &c).is_empty());
    }

    #[test]
    fn added_and_removed_entries_and_regions() {
        let old = Catalog::builtin();
        let mut new = old.clone();
        let gone = new
            .entries
            .iter()
            .position(|e| e.region.as_deref() == Some("eu2"))
            .unwrap();
        let removed = new.entries.remove(gone);
        new.regions.retain(|r| r.id != "us3");
        let mut extra = new.entries[0].clone();
        extra.peer = Peer::Net("192.0.2.9/32".parse().unwrap());
        new.entries.push(extra.clone());
        let d = diff(&old, &new);
        assert_eq!(d.removed, [Listed::of(&removed)]);
        assert_eq!(d.added, [Listed::of(&extra)]);
        assert_eq!(d.regions_removed, ["us3"]);
        assert!(d.regions_added.is_empty());
        assert!(d.added[0].to_string().contains("192.0.2.9/32"));
    }
}
