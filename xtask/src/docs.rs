//! Man pages and shell completions, generated from the agent's clap definitions
//! (`allowgate::cli::Cli`) here in xtask, so the agent binary carries none of it.
//!
//! - `allowgate(8)` and one page per verb (`allowgate-status(8)`, `allowgate-catalog-fetch(8)`);
//! - `allowgate.toml(5)`, written from `packaging/config.example.toml`: each key with the
//!   comment above it, so the page and the example cannot drift apart;
//! - bash, zsh and fish completions that also complete region and feature names: regions
//!   from `allowgate regions --names` at the time of the Tab (an imported catalog brings
//!   new ones), features from `Feature::ALL`.

use std::{
    fs,
    path::{Path, PathBuf},
};

use allowgate::catalog::Feature;
use anyhow::Context as _;
use clap::{Arg, Command, CommandFactory as _, builder::PossibleValuesParser};
use clap_complete::Shell;

const EXAMPLE_CONFIG: &str = include_str!("../../packaging/config.example.toml");
/// Put in place of the region names in the generated scripts, then replaced by each
/// shell's way of running `allowgate regions --names`.
const REGION_PLACEHOLDER: &str = "__ALLOWGATE_REGION_NAMES__";
const MANUAL: &str = "System Administration";

#[derive(Debug, clap::Args)]
pub struct DocsArgs {
    /// Where to write man/ and completions/.
    #[arg(long, value_name = "DIR", default_value = "target/docs")]
    out: PathBuf,
}

pub fn run(args: &DocsArgs) -> anyhow::Result<()> {
    let files = write_all(&args.out)?;
    for f in files {
        println!("{}", f.display());
    }
    Ok(())
}

/// Writes every man page under `out/man/manN/` and the completions under
/// `out/completions/{bash,zsh,fish}/`; returns the files written.
pub fn write_all(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let mut write = |path: PathBuf, text: &[u8]| -> anyhow::Result<()> {
        fs::create_dir_all(path.parent().expect("a file in a directory"))
            .with_context(|| format!("cannot create the directory of {}", path.display()))?;
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        written.push(path);
        Ok(())
    };
    for (name, page) in man_pages()? {
        write(out.join("man/man8").join(format!("{name}.8")), &page)?;
    }
    write(out.join("man/man5/allowgate.toml.5"), config_page().as_bytes())?;
    for (shell, file) in [
        (Shell::Bash, "bash/allowgate"),
        (Shell::Zsh, "zsh/_allowgate"),
        (Shell::Fish, "fish/allowgate.fish"),
    ] {
        write(out.join("completions").join(file), completion(shell)?.as_bytes())?;
    }
    Ok(written)
}

fn cli() -> Command {
    let mut cmd = allowgate::cli::Cli::command();
    // Fills in what parsing would: global args on every verb, each verb's bin name.
    cmd.build();
    cmd
}

/// `allowgate(8)` and a page for every verb, nested verbs included, as (name, roff).
fn man_pages() -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let cmd = cli();
    let mut pages = Vec::new();
    push_pages(&cmd, "allowgate", &mut pages)?;
    Ok(pages)
}

fn push_pages(cmd: &Command, name: &str, pages: &mut Vec<(String, Vec<u8>)>) -> anyhow::Result<()> {
    let mut page = Vec::new();
    // clap takes a command's name as &'static str (its `string` feature aside); xtask
    // makes a few dozen pages and exits.
    let page_name: &'static str = name.to_string().leak();
    let man = clap_mangen::Man::new(cmd.clone().name(page_name))
        .section("8")
        // Without a date the header's fields shift (the version is read as the date).
        .date(page_date())
        .manual(MANUAL)
        .source(format!("allowgate {}", env!("CARGO_PKG_VERSION")));
    man.render(&mut page).context("cannot render a man page")?;
    let mut also: Vec<String> = cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help" && !s.is_hide_set())
        .map(|s| format!("{name}-{}", s.get_name()))
        .collect();
    if name == "allowgate" {
        also.push("allowgate.toml(5)".into());
    } else {
        also.insert(0, "allowgate(8)".into());
    }
    if !also.is_empty() {
        let refs: Vec<String> = also
            .iter()
            .map(|n| {
                if n.ends_with(')') {
                    format!("\\fB{}\\fR{}", roff_escape(&n[..n.len() - 3]), &n[n.len() - 3..])
                } else {
                    format!("\\fB{}\\fR(8)", roff_escape(n))
                }
            })
            .collect();
        page.extend_from_slice(format!(".SH \"SEE ALSO\"\n{}\n", refs.join(", ")).as_bytes());
    }
    pages.push((name.to_string(), page));
    for sub in cmd
        .get_subcommands()
        .filter(|s| s.get_name() != "help" && !s.is_hide_set())
    {
        push_pages(sub, &format!("{name}-{}", sub.get_name()), pages)?;
    }
    Ok(())
}

/// The pages' date, YYYY-MM-DD: SOURCE_DATE_EPOCH's when set (reproducible builds),
/// else today's (UTC).
fn page_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs())
        });
    civil_date(secs)
}

fn civil_date(secs: u64) -> String {
    // Days since 1970-01-01 to a civil date (Howard Hinnant's days_from_civil, inverted).
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// Region and feature arguments (known by their value names) take the names as possible
/// values, for completion only: parsing stays the agent's, which accepts any spelling.
fn with_name_values(cmd: Command) -> Command {
    let cmd = cmd.mut_args(
        |arg: Arg| match arg.get_value_names().and_then(|v| v.first()).map(|v| v.as_str()) {
            Some("REGION") => arg.value_parser(PossibleValuesParser::new([REGION_PLACEHOLDER])),
            Some("FEATURE") => arg.value_parser(PossibleValuesParser::new(Feature::ALL.map(Feature::as_str))),
            _ => arg,
        },
    );
    cmd.mut_subcommands(with_name_values)
}

fn completion(shell: Shell) -> anyhow::Result<String> {
    let mut cmd = with_name_values(allowgate::cli::Cli::command());
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "allowgate", &mut out);
    let script = String::from_utf8(out).context("a completion script is not UTF-8")?;
    // The generators list hidden arguments too: `regions --names` is the completions'
    // own helper, not something to offer.
    let script: String = match shell {
        Shell::Bash => script.replace(" --names", ""),
        _ => script
            .lines()
            .filter(|l| !l.contains("--names[") && !l.contains(" -l names "))
            .map(|l| format!("{l}\n"))
            .collect(),
    };
    let uses = script.matches(REGION_PLACEHOLDER).count();
    // `show -r` and `check -r` at least.
    anyhow::ensure!(
        uses >= 2,
        "the {shell} completion names regions {uses} times: did the REGION arguments change?"
    );
    let script = match shell {
        Shell::Bash => script.replace(REGION_PLACEHOLDER, "$(allowgate regions --names 2>/dev/null)"),
        Shell::Fish => {
            // fish's generator offers no values for positional arguments: the regions
            // `enable` and `disable` take are added here.
            let mut script = script.replace(
                &format!("\"{REGION_PLACEHOLDER}\\t''\""),
                "\"(allowgate regions --names 2>/dev/null)\"",
            );
            for verb in ["enable", "disable"] {
                script.push_str(&format!(
                    "complete -c allowgate -n \"__fish_allowgate_using_subcommand {verb}\" -f -a \"(allowgate regions --names 2>/dev/null)\"\n"
                ));
            }
            script
        }
        Shell::Zsh => {
            let helper = "(( $+functions[_allowgate_region_names] )) ||\n\
                _allowgate_region_names() {\n    \
                local -a names\n    \
                names=(${(f)\"$(_call_program regions allowgate regions --names 2>/dev/null)\"})\n    \
                _describe -t regions 'region' names\n\
                }\n\n";
            let script = script.replace(&format!("({REGION_PLACEHOLDER})"), "_allowgate_region_names");
            let at = script.find("if [ \"$funcstack[1]\" = \"_allowgate\" ]").context(
                "the zsh completion has no closing `if [ \"$funcstack[1]\" ...` block to put the helper before",
            )?;
            format!("{}{helper}{}", &script[..at], &script[at..])
        }
        _ => script,
    };
    anyhow::ensure!(
        !script.contains(REGION_PLACEHOLDER),
        "the {shell} completion still holds the region placeholder"
    );
    Ok(script)
}

fn roff_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\e"),
            '-' => out.push_str("\\-"),
            _ => out.push(c),
        }
    }
    // A line starting with . or ' would be read as a request.
    if out.starts_with('.') || out.starts_with('\'') {
        out.insert_str(0, "\\&");
    }
    out
}

/// One key of the example, with the comment above it.
struct Key {
    /// `key = value` as the example shows it, uncommented.
    setting: String,
    /// Whether the example leaves it commented out (optional, off unless set).
    optional: bool,
    text: Vec<String>,
}

/// What a table holds, in the example's order: keys, and comments about no one key.
enum Item {
    Key(Key),
    Text(Vec<String>),
}

/// A `[table]` of the example (the top level has none) with its comment and keys.
struct Table {
    name: Option<String>,
    text: Vec<String>,
    keys: Vec<Item>,
}

fn is_key_line(line: &str) -> bool {
    let Some((key, _)) = line.split_once(" = ") else {
        return false;
    };
    !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Reads the example: its opening comment, then each table's comment and keys. A
/// comment block followed by a key describes that key; one followed by a table header,
/// the table. `# key = value` lines are optional keys; indented comment lines
/// (`#   interfaces = ["eth0"]`) are examples, kept verbatim.
fn read_example(text: &str) -> (Vec<String>, Vec<Table>) {
    let mut lines = text.lines().peekable();
    let mut intro = Vec::new();
    // The opening comment runs to the first blank line; its first line is the title.
    lines.next();
    while let Some(line) = lines.next_if(|l| l.starts_with('#')) {
        intro.push(line.trim_start_matches('#').strip_prefix(' ').unwrap_or("").to_string());
    }
    while intro.first().is_some_and(|l| l.is_empty()) {
        intro.remove(0);
    }
    let mut tables = vec![Table {
        name: None,
        text: Vec::new(),
        keys: Vec::new(),
    }];
    let mut comment: Vec<String> = Vec::new();
    for line in lines {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            // A comment that no key follows is about the table (before its first key)
            // or about the keys around it (kept in its place).
            if !comment.is_empty() {
                let table = tables.last_mut().expect("one table at least");
                if table.keys.is_empty() {
                    if !table.text.is_empty() {
                        table.text.push(String::new());
                    }
                    table.text.append(&mut comment);
                } else {
                    table.keys.push(Item::Text(std::mem::take(&mut comment)));
                }
            }
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('#') {
            let rest = rest.strip_prefix(' ').unwrap_or(rest);
            if rest.starts_with('[') && rest.ends_with(']') || is_key_line(rest) && !rest.starts_with(' ') {
                // A commented-out table or key: optional.
                if rest.starts_with('[') {
                    tables.push(Table {
                        name: Some(rest.to_string()),
                        text: std::mem::take(&mut comment),
                        keys: Vec::new(),
                    });
                } else {
                    tables.last_mut().expect("a table").keys.push(Item::Key(Key {
                        setting: rest.to_string(),
                        optional: true,
                        text: std::mem::take(&mut comment),
                    }));
                }
            } else {
                comment.push(rest.to_string());
            }
            continue;
        }
        if trimmed.starts_with('[') {
            tables.push(Table {
                name: Some(trimmed.to_string()),
                text: std::mem::take(&mut comment),
                keys: Vec::new(),
            });
        } else {
            tables.last_mut().expect("a table").keys.push(Item::Key(Key {
                setting: trimmed.to_string(),
                optional: false,
                text: std::mem::take(&mut comment),
            }));
        }
    }
    if !comment.is_empty() {
        tables.last_mut().expect("a table").keys.push(Item::Text(comment));
    }
    (intro, tables)
}

/// Comment lines as roff: prose refilled by the reader, indented lines (examples) kept
/// as they are.
fn roff_text(lines: &[String]) -> String {
    let mut out = String::new();
    let mut in_example = false;
    for line in lines {
        let example = line.starts_with("  ");
        if example && !in_example {
            out.push_str(".sp\n.nf\n.in +4n\n");
        } else if !example && in_example {
            out.push_str(".in\n.fi\n");
        }
        in_example = example;
        if line.is_empty() {
            out.push_str(".sp\n");
        } else if example {
            out.push_str(&roff_escape(line.trim_start()));
            out.push('\n');
        } else {
            out.push_str(&roff_escape(line));
            out.push('\n');
        }
    }
    if in_example {
        out.push_str(".in\n.fi\n");
    }
    out
}

/// `allowgate.toml(5)`, from the example config.
fn config_page() -> String {
    let (intro, tables) = read_example(EXAMPLE_CONFIG);
    let mut page = format!(
        ".TH ALLOWGATE.TOML 5 \"\" \"allowgate {}\" \"File Formats\"\n\
         .SH NAME\nallowgate.toml \\- configuration of the allowgate daemon\n\
         .SH SYNOPSIS\n/etc/allowgate/config.toml\n\
         .SH DESCRIPTION\n\
         The configuration of \\fBallowgate daemon\\fR (see \\fBallowgate\\fR(8)), in TOML. \
         Read at start and at \\fBsystemctl reload allowgate\\fR (SIGHUP); \
         a file that does not parse or compile is refused and the running policy stays. \
         The package installs it from the example that follows, which is also in \
         /usr/share/doc/allowgate/config.example.toml.\n.PP\n",
        env!("CARGO_PKG_VERSION")
    );
    page.push_str(&roff_text(&intro));
    for table in &tables {
        match &table.name {
            None => page.push_str(".SH \"TOP-LEVEL KEYS\"\n"),
            Some(name) => page.push_str(&format!(".SH \"{}\"\n", roff_escape(name))),
        }
        page.push_str(&roff_text(&table.text));
        for item in &table.keys {
            match item {
                Item::Key(key) => {
                    page.push_str(&format!(
                        ".TP\n\\fB{}\\fR{}\n",
                        roff_escape(&key.setting),
                        if key.optional {
                            " (optional, off unless set)"
                        } else {
                            ""
                        }
                    ));
                    page.push_str(&roff_text(&key.text));
                }
                Item::Text(text) => {
                    page.push_str(".PP\n");
                    page.push_str(&roff_text(text));
                }
            }
        }
    }
    page.push_str(
        ".SH FILES\n.TP\n/etc/allowgate/config.toml\nthe configuration (a conffile of the package)\n\
         .TP\n/var/lib/allowgate\nthe daemon's state: runtime toggles, applied catalogs\n\
         .TP\n/sys/fs/bpf/allowgate\nthe pinned programs, links and maps that keep the policy enforced\n\
         .SH \"SEE ALSO\"\n\\fBallowgate\\fR(8), \\fBallowgate\\-show\\fR(8), \\fBallowgate\\-check\\fR(8), \
         \\fBsystemctl\\fR(1)\n",
    );
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_verb_has_a_page_and_the_pages_name_each_other() {
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for verb in [
            "allowgate",
            "allowgate-status",
            "allowgate-daemon",
            "allowgate-show",
            "allowgate-check",
            "allowgate-enable",
            "allowgate-catalog",
            "allowgate-catalog-fetch",
            "allowgate-catalog-apply",
        ] {
            assert!(names.contains(&verb), "no page {verb}: {names:?}");
        }
        let (_, main) = &pages[0];
        let main = String::from_utf8_lossy(main);
        assert!(main.starts_with(".ie") || main.contains(".TH allowgate 8"), "{main}");
        assert!(main.contains("\\fBallowgate\\-status\\fR(8)"), "{main}");
        let status = &pages.iter().find(|(n, _)| n == "allowgate-status").unwrap().1;
        let status = String::from_utf8_lossy(status);
        assert!(
            status.contains(".TH allowgate-status 8 ")
                && status.contains(" \"allowgate 0.1.0\" \"System Administration\""),
            "{status}"
        );
        assert!(status.contains("\\-\\-json"), "{status}");
        // The hidden completion helper stays out of the pages.
        assert!(
            !pages
                .iter()
                .any(|(_, p)| String::from_utf8_lossy(p).contains("\\-\\-names"))
        );
    }

    #[test]
    fn page_dates_are_civil_dates() {
        for (epoch, date) in [
            (0, "1970-01-01"),
            (951_782_400, "2000-02-29"),
            (1_796_083_200, "2026-12-01"),
        ] {
            assert_eq!(civil_date(epoch), date);
        }
    }

    #[test]
    fn the_config_page_has_every_key_of_the_example_with_its_comment() {
        let page = config_page();
        for key in [
            "interfaces = []",
            "mode = \"monitor\"",
            "socket_group = \"allowgate\"",
            "metrics = \"127.0.0.1:9464\"",
            "[essentials]",
            "ipv6_nd = true",
            "[management]",
            "[[allow]]",
            "ttl_floor = 30",
        ] {
            assert!(page.contains(&roff_escape(key)), "the page lacks {key}:\n{page}");
        }
        // A key's comment comes with it, and examples are kept as lines.
        let socket_group = page.find("socket_group").unwrap();
        assert!(page[socket_group..].contains("A group whose members may use the control socket"));
        assert!(
            page.contains(".nf\n.in +4n\ninterfaces = [\"eth0\"]\n.in\n.fi"),
            "{page}"
        );
        assert!(page.contains("(optional, off unless set)"));
        // No line starts with a stray request.
        for line in page.lines() {
            assert!(!(line.starts_with('\'') || line.starts_with(". ")), "{line}");
        }
    }

    #[test]
    fn completions_offer_regions_from_the_agent_and_the_features() {
        for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
            let script = completion(shell).unwrap();
            assert!(
                script.contains("allowgate regions --names"),
                "{shell} does not ask for region names"
            );
            assert!(script.contains("log-collector"), "{shell} does not offer the features");
            assert!(script.contains("catalog"), "{shell} lacks the verbs");
            // The hidden helper is run, never offered.
            let offered: Vec<&str> = script
                .lines()
                .filter(|l| {
                    (l.contains("--names") && !l.contains("regions --names 2>/dev/null")) || l.contains("-l names")
                })
                .collect();
            assert!(offered.is_empty(), "{shell} offers the hidden --names: {offered:?}");
            // The shell itself reads it, where it is installed (bash always is).
            let (program, file) = match shell {
                Shell::Bash => ("bash", "allowgate"),
                Shell::Zsh => ("zsh", "_allowgate"),
                _ => ("fish", "allowgate.fish"),
            };
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join(file);
            fs::write(&path, &script).unwrap();
            match std::process::Command::new(program).arg("-n").arg(&path).output() {
                Ok(out) => assert!(
                    out.status.success(),
                    "{program} -n rejects the completion: {}",
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(_) if shell != Shell::Bash => eprintln!("{program} not installed: its syntax is not checked"),
                Err(e) => panic!("cannot run bash: {e}"),
            }
        }
    }
}
