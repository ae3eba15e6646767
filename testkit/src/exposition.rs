//! Reading a Prometheus text exposition (format 0.0.4) back into samples, for tests that
//! scrape `/metrics`: one parser, strict enough that a line a scraper would refuse fails
//! the test.

use std::collections::BTreeMap;

/// A sample's name and labels.
pub type Series = (String, BTreeMap<String, String>);

/// Parses the text exposition: every line a comment (`# HELP`, `# TYPE`) or a sample
/// `name{label="value",...} value` with the format's escapes in label values; anything
/// else, or a series given twice, fails the test.
pub fn parse(text: &str) -> BTreeMap<Series, f64> {
    assert!(
        text.is_empty() || text.ends_with('\n'),
        "the exposition ends with a newline"
    );
    let mut samples = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            assert!(
                rest.starts_with("HELP ") || rest.starts_with("TYPE "),
                "bad comment line: {line:?}"
            );
            continue;
        }
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| panic!("no value: {line:?}"));
        let name = &line[..name_end];
        assert!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "bad metric name: {line:?}"
        );
        let mut rest = &line[name_end..];
        let mut labels = BTreeMap::new();
        if let Some(mut after) = rest.strip_prefix('{') {
            while let Some((key, value)) = after.split_once("=\"") {
                let key = key.strip_prefix(',').unwrap_or(key);
                assert!(
                    !key.is_empty() && !key.contains(['{', '}', ' ']),
                    "bad label name: {line:?}"
                );
                let (value, tail) = label_value(value).unwrap_or_else(|| panic!("unterminated label: {line:?}"));
                assert!(
                    labels.insert(key.to_string(), value).is_none(),
                    "repeated label: {line:?}"
                );
                after = tail;
            }
            rest = after
                .strip_prefix('}')
                .unwrap_or_else(|| panic!("unclosed labels: {line:?}"));
        }
        let value = rest.strip_prefix(' ').unwrap_or_else(|| panic!("no value: {line:?}"));
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("bad value: {line:?}"));
        assert!(
            samples.insert((name.to_string(), labels), value).is_none(),
            "repeated series: {line:?}"
        );
    }
    samples
}

/// A quoted label value up to its closing quote (unescaped), and what follows it.
fn label_value(quoted: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &quoted[i + 1..])),
            '\\' => match chars.next()?.1 {
                '\\' => value.push('\\'),
                '"' => value.push('"'),
                'n' => value.push('\n'),
                other => panic!("bad escape \\{other} in a label value"),
            },
            c => value.push(c),
        }
    }
    None
}

/// A series' labels from pairs.
pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}
