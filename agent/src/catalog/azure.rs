//! One vocabulary of Azure regions for every source: the page names a region by its
//! display name ("France Central"), a service tag by a suffix of its name
//! (`MicrosoftCloudAppSecurity.FranceCentral`) and by `properties.region`, which is
//! often an older short spelling (`centralfrance`). All of them name one catalog region
//! whose id is Azure's own name (`francecentral`), so that page and tag entries of a
//! region merge and `check -r centralfrance` finds both. Other spellings are aliases,
//! accepted wherever a region is named and shown in the Azure form.
//!
//! The older spellings are those of the service tag files (`AzureCloud.centralfrance`,
//! `region: "germanywc"`). A region this table does not know is still read (its id is
//! its name without spaces, lowercased), with a warning: its tag may spell it otherwise.

use super::region_key;

/// An Azure region: its name (`francecentral`, the id in the catalog), its display
/// name and the other spellings sources use for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AzureRegion {
    pub name: &'static str,
    pub display: &'static str,
    /// Older or shorter spellings: the service tag files' `properties.region`.
    pub aliases: &'static [&'static str],
}

const fn region(name: &'static str, display: &'static str, aliases: &'static [&'static str]) -> AzureRegion {
    AzureRegion { name, display, aliases }
}

/// The Azure regions of the public and US Government clouds.
#[rustfmt::skip]
pub const AZURE_REGIONS: &[AzureRegion] = &[
    region("australiacentral", "Australia Central", &[]),
    region("australiacentral2", "Australia Central 2", &[]),
    region("australiaeast", "Australia East", &[]),
    region("australiasoutheast", "Australia Southeast", &[]),
    region("austriaeast", "Austria East", &[]),
    region("belgiumcentral", "Belgium Central", &[]),
    region("brazilsouth", "Brazil South", &[]),
    region("brazilsoutheast", "Brazil Southeast", &["brazilse"]),
    region("canadacentral", "Canada Central", &[]),
    region("canadaeast", "Canada East", &[]),
    region("centralindia", "Central India", &[]),
    region("centralus", "Central US", &[]),
    region("centraluseuap", "Central US EUAP", &[]),
    region("chilecentral", "Chile Central", &[]),
    region("denmarkeast", "Denmark East", &[]),
    region("eastasia", "East Asia", &[]),
    region("eastus", "East US", &[]),
    region("eastus2", "East US 2", &[]),
    region("eastus2euap", "East US 2 EUAP", &[]),
    region("francecentral", "France Central", &["centralfrance"]),
    region("francesouth", "France South", &["southfrance"]),
    region("germanynorth", "Germany North", &["germanyn"]),
    region("germanywestcentral", "Germany West Central", &["germanywc"]),
    region("indonesiacentral", "Indonesia Central", &[]),
    region("israelcentral", "Israel Central", &[]),
    region("italynorth", "Italy North", &[]),
    region("japaneast", "Japan East", &[]),
    region("japanwest", "Japan West", &[]),
    region("jioindiacentral", "Jio India Central", &[]),
    region("jioindiawest", "Jio India West", &[]),
    region("koreacentral", "Korea Central", &[]),
    region("koreasouth", "Korea South", &[]),
    region("malaysiawest", "Malaysia West", &[]),
    region("mexicocentral", "Mexico Central", &[]),
    region("newzealandnorth", "New Zealand North", &[]),
    region("northcentralus", "North Central US", &[]),
    region("northeurope", "North Europe", &[]),
    region("norwayeast", "Norway East", &["norwaye"]),
    region("norwaywest", "Norway West", &["norwayw"]),
    region("polandcentral", "Poland Central", &[]),
    region("qatarcentral", "Qatar Central", &[]),
    region("southafricanorth", "South Africa North", &[]),
    region("southafricawest", "South Africa West", &[]),
    region("southcentralus", "South Central US", &[]),
    region("southeastasia", "Southeast Asia", &[]),
    region("southindia", "South India", &[]),
    region("spaincentral", "Spain Central", &[]),
    region("swedencentral", "Sweden Central", &[]),
    region("swedensouth", "Sweden South", &[]),
    region("switzerlandnorth", "Switzerland North", &["switzerlandn"]),
    region("switzerlandwest", "Switzerland West", &["switzerlandw"]),
    region("taiwannorth", "Taiwan North", &[]),
    region("uaecentral", "UAE Central", &[]),
    region("uaenorth", "UAE North", &[]),
    region("uksouth", "UK South", &[]),
    region("ukwest", "UK West", &[]),
    region("westcentralus", "West Central US", &[]),
    region("westeurope", "West Europe", &[]),
    region("westindia", "West India", &[]),
    region("westus", "West US", &[]),
    region("westus2", "West US 2", &[]),
    region("westus3", "West US 3", &[]),
    // US Government.
    region("usdodcentral", "US DoD Central", &[]),
    region("usdodeast", "US DoD East", &[]),
    region("usgovarizona", "US Gov Arizona", &[]),
    region("usgoviowa", "US Gov Iowa", &[]),
    region("usgovtexas", "US Gov Texas", &[]),
    region("usgovvirginia", "US Gov Virginia", &[]),
];

/// The Azure region `spelling` names: its name, display name or an alias, matched
/// as region names are (case, spaces and separators do not matter).
pub fn azure_region(spelling: &str) -> Option<&'static AzureRegion> {
    let key = region_key(spelling);
    if key.is_empty() {
        return None;
    }
    AZURE_REGIONS
        .iter()
        .find(|r| r.name == key || region_key(r.display) == key || r.aliases.iter().any(|a| region_key(a) == key))
}

/// The catalog id of an Azure region spelled `spelling`: Azure's name when the table
/// knows it, else the spelling without separators, lowercased.
pub fn azure_id(spelling: &str) -> String {
    azure_region(spelling).map_or_else(|| region_key(spelling), |r| r.name.to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_spelling_names_one_region() {
        for (spelling, name) in [
            ("France Central", "francecentral"),
            ("centralfrance", "francecentral"),
            ("FranceCentral", "francecentral"),
            ("germanywc", "germanywestcentral"),
            ("Germany West Central", "germanywestcentral"),
            ("GermanyWestCentral", "germanywestcentral"),
            ("US Gov Virginia", "usgovvirginia"),
            ("USGovVirginia", "usgovvirginia"),
            ("switzerlandn", "switzerlandnorth"),
            ("brazilse", "brazilsoutheast"),
            ("West US 2", "westus2"),
            ("west-us-2", "westus2"),
        ] {
            assert_eq!(azure_region(spelling).map(|r| r.name), Some(name), "{spelling}");
        }
        for unknown in ["", "US1", "gov-us1", "gcc", "all", "Atlantis North"] {
            assert_eq!(azure_region(unknown), None, "{unknown}");
        }
        assert_eq!(azure_id("Atlantis North"), "atlantisnorth");
        assert_eq!(azure_id("centralfrance"), "francecentral");
    }

    /// No spelling may name two regions, and a region's name is its display name
    /// without spaces: the page's labels and the tags' suffixes are both that.
    #[test]
    fn the_table_is_unambiguous() {
        let mut seen = HashSet::new();
        for r in AZURE_REGIONS {
            assert_eq!(region_key(r.display), r.name, "{r:?}");
            for spelling in std::iter::once(&r.name).chain(r.aliases) {
                assert!(seen.insert(region_key(spelling)), "{spelling} names two regions");
            }
        }
    }
}
