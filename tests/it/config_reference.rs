//! One source of truth for the configuration reference.
//!
//! The keys the parser accepts, the keys `docs/configuration.md` documents and the keys
//! `proxy.toml` shows must be the same, table by table:
//!
//! - the parser's keys are read from its own refusal of an unknown key: a minimal valid
//!   configuration with a bogus key added to one table is parsed through the public API
//!   (`Config::from_toml_str`), and serde's "unknown field `x`, expected one of `a`, `b`"
//!   names every key that table knows;
//! - the documented keys are the backticked names in the first column of each table that
//!   `docs/configuration.md` marks with `<!-- config-table: ID -->`;
//! - `proxy.toml`'s keys are its `key = value` lines, set or commented out (`# key = value`),
//!   sorted into tables by the (possibly commented) `[table]` headers above them, and, for
//!   sinks, by their `type`.
//!
//! Every documented key must also parse with the value `proxy.toml` shows for it, and every
//! value `proxy.toml` sets (not commented out) must equal the default the reference gives.
//!
//! Standalone on purpose (no `mod support`): it only reads files and calls the parser.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use scimtap::config::Config;

const BOGUS: &str = "zz_not_a_config_key";
const SINK_TYPES: [&str; 5] = ["file", "stdout", "syslog", "http", "kafka"];
/// Sub-tables of every sink, documented once each (`sinks.batch`, ...).
const SINK_SUB_TABLES: [&str; 3] = ["batch", "retry", "buffer"];
/// Tables with a table of their own in the reference (besides `top`, the sinks and sub-tables).
const TABLES: [&str; 14] = [
    "listen",
    "upstream",
    "routes",
    "admin",
    "capture",
    "scim",
    "clients",
    "redact",
    "privacy",
    "integrity",
    "audit",
    "state",
    "alerts",
    "ui",
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

// === building configurations ===

type Entries = Vec<(String, String)>;

fn entries(pairs: &[(&str, &str)]) -> Entries {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// `base` with `extra` added; a key in both takes `extra`'s value.
fn merge(base: Entries, extra: &Entries) -> Entries {
    let mut out: Entries = base
        .into_iter()
        .filter(|(k, _)| !extra.iter().any(|(e, _)| e == k))
        .collect();
    out.extend(extra.iter().cloned());
    out
}

fn lines(entries: &Entries) -> String {
    entries
        .iter()
        .map(|(k, v)| format!("{k} = {v}\n"))
        .collect()
}

fn inline(entries: &Entries) -> String {
    let body: Vec<String> = entries.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!("{{ {} }}", body.join(", "))
}

/// What a sink of `kind` needs to be valid.
fn sink_base(kind: &str) -> Entries {
    let mut base = entries(&[("type", &format!("\"{kind}\""))]);
    base.extend(match kind {
        "file" => entries(&[("path", "\"config-reference-audit.jsonl\"")]),
        "syslog" => entries(&[("address", "\"127.0.0.1:514\"")]),
        "http" => entries(&[("url", "\"http://127.0.0.1:9/events\"")]),
        "kafka" => entries(&[("brokers", "[\"127.0.0.1:9092\"]"), ("topic", "\"audit\"")]),
        _ => Vec::new(),
    });
    base
}

/// A minimal valid configuration with `extra` added to the table `id`. Sinks are
/// `sinks.<type>` and their sub-tables `sinks.<type>.batch`; `scim.resource_types` is one
/// entry of that array.
fn config_with(id: &str, extra: &Entries) -> String {
    let none = Entries::new();
    let pick = |table: &str| if id == table { extra } else { &none };
    let mut text = lines(pick("top"));
    text += "[listen]\n";
    text += &lines(&merge(
        entries(&[("address", "\"127.0.0.1:1\"")]),
        pick("listen"),
    ));
    if id == "routes" {
        // [upstream] and [[routes]] exclude each other.
        text += "[[routes]]\n";
        text += &lines(&merge(
            entries(&[
                ("name", "\"r\""),
                ("upstream", "{ url = \"http://127.0.0.1:9\" }"),
            ]),
            extra,
        ));
    } else {
        text += "[upstream]\n";
        text += &lines(&merge(
            entries(&[("url", "\"http://127.0.0.1:9\"")]),
            pick("upstream"),
        ));
    }
    if id == "admin" {
        text += "[admin]\n";
        text += &lines(&merge(entries(&[("address", "\"127.0.0.1:2\"")]), extra));
    }
    if id == "clients" {
        let hash = "\"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\"";
        text += "[[clients]]\n";
        text += &lines(&merge(
            entries(&[("name", "\"idp\""), ("token_sha256", hash)]),
            extra,
        ));
    }
    if id == "alerts" {
        text += "[[alerts]]\n";
        text += &lines(&merge(
            entries(&[
                ("name", "\"a\""),
                ("kind", "\"retry_storm\""),
                ("window_secs", "60"),
                ("threshold", "5"),
            ]),
            extra,
        ));
    }
    if id == "scim.resource_types" {
        let entry = merge(
            entries(&[("name", "\"Device\""), ("endpoint", "\"/Devices\"")]),
            extra,
        );
        text += &format!("[scim]\nresource_types = [{}]\n", inline(&entry));
    }
    for table in [
        "capture",
        "scim",
        "redact",
        "privacy",
        "integrity",
        "audit",
        "state",
        "ui",
    ] {
        if id == table {
            text += &format!("[{table}]\n{}", lines(extra));
        }
    }
    let (kind, sub) = match id.strip_prefix("sinks.") {
        Some(rest) => match rest.split_once('.') {
            Some((kind, sub)) => (kind, Some(sub)),
            None => (rest, None),
        },
        None => ("stdout", None),
    };
    let mut sink = sink_base(kind);
    match sub {
        Some(sub) => sink = merge(sink, &vec![(sub.to_owned(), inline(extra))]),
        None if id.starts_with("sinks.") => sink = merge(sink, extra),
        None => {}
    }
    text += &format!("[[sinks]]\n{}", lines(&sink));
    text
}

/// The problems the parser reports for `text`, one line each (`file:line: key: message`);
/// empty when the configuration is valid.
fn problems(text: &str) -> Vec<String> {
    match Config::from_toml_str(text, Path::new("reference.toml")) {
        Ok(_) => Vec::new(),
        Err(error) => error
            .to_string()
            .lines()
            .skip(1)
            .map(|l| l.trim().to_owned())
            .collect(),
    }
}

/// Serde's own refusals: a key the parser does not know, or a value it cannot read.
fn is_parse_error(problem: &str) -> bool {
    [
        "unknown field",
        "invalid type",
        "unknown variant",
        "invalid value",
        "invalid length",
        "missing field",
        "invalid TOML",
    ]
    .iter()
    .any(|p| problem.contains(p))
}

fn backticked(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The keys the parser knows in table `id`, from its refusal of a bogus key there.
fn parser_keys(id: &str) -> BTreeSet<String> {
    let text = config_with(id, &entries(&[(BOGUS, "1")]));
    let found = problems(&text);
    let needle = format!("unknown field `{BOGUS}`");
    let line = found
        .iter()
        .find(|p| p.contains(&needle))
        .unwrap_or_else(|| {
            panic!("table `{id}` did not refuse an unknown key; problems: {found:?}\n{text}")
        });
    let (_, expected) = line.split_once(&needle).expect("the needle is in the line");
    if expected.contains("there are no fields") {
        return BTreeSet::new();
    }
    let keys: BTreeSet<String> = backticked(expected).into_iter().collect();
    assert!(
        !keys.is_empty(),
        "cannot read the known keys of `{id}` from: {line}"
    );
    keys
}

// === the reference ===

struct Row {
    keys: Vec<String>,
    default: String,
}

/// Splits a Markdown table row on the `|` that are not escaped.
fn cells(row: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cell = String::new();
    let mut escaped = false;
    for c in row.trim().trim_start_matches('|').chars() {
        match c {
            '|' if !escaped => out.push(std::mem::take(&mut cell)),
            _ => cell.push(c),
        }
        escaped = c == '\\';
    }
    if !cell.trim().is_empty() {
        out.push(cell);
    }
    out.into_iter().map(|c| c.trim().to_owned()).collect()
}

/// Table id → its rows, for every `<!-- config-table: ID -->` in `text`.
fn documented(text: &str) -> BTreeMap<String, Vec<Row>> {
    let mut tables = BTreeMap::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(id) = line
            .trim()
            .strip_prefix("<!-- config-table:")
            .and_then(|rest| rest.strip_suffix("-->"))
        else {
            continue;
        };
        let id = id.trim().to_owned();
        let mut rows = Vec::new();
        while let Some(row) = lines.next_if(|l| l.trim_start().starts_with('|')) {
            let cells = cells(row);
            let first = cells.first().cloned().unwrap_or_default();
            if first == "key" || first.chars().all(|c| matches!(c, '-' | ':')) {
                continue; // header and separator rows
            }
            let keys = backticked(&first);
            assert!(!keys.is_empty(), "table `{id}`: a row without a key: {row}");
            rows.push(Row {
                keys,
                default: cells.get(2).cloned().unwrap_or_default(),
            });
        }
        assert!(!rows.is_empty(), "table `{id}` has no rows");
        assert!(
            tables.insert(id.clone(), rows).is_none(),
            "table `{id}` is marked twice"
        );
    }
    tables
}

fn doc_keys(doc: &BTreeMap<String, Vec<Row>>, id: &str) -> BTreeSet<String> {
    doc.get(id)
        .map(|rows| rows.iter().flat_map(|r| r.keys.iter().cloned()).collect())
        .unwrap_or_default()
}

fn reference() -> BTreeMap<String, Vec<Row>> {
    documented(&read("docs/configuration.md"))
}

// === proxy.toml ===

/// One `key = value` line of proxy.toml.
#[derive(Clone, Debug)]
struct Shown {
    value: toml::Value,
    /// Set, not commented out.
    active: bool,
    line: usize,
}

/// Table id (`listen`, `sinks.file`, `sinks.batch`, `scim.resource_types`, ...) → key → every
/// line that shows it.
type ProxyKeys = BTreeMap<String, BTreeMap<String, Vec<Shown>>>;

fn proxy_keys(text: &str) -> ProxyKeys {
    fn add(out: &mut ProxyKeys, table: &str, key: &str, shown: Shown) {
        out.entry(table.to_owned())
            .or_default()
            .entry(key.to_owned())
            .or_default()
            .push(shown);
    }
    // Keys of the current block, assigned when the block ends (a sink's table depends on
    // its `type`).
    fn flush(out: &mut ProxyKeys, header: &str, block: &mut Vec<(String, Shown)>) {
        let table = match header {
            "sinks" => {
                let kind = block
                    .iter()
                    .find(|(k, _)| k == "type")
                    .and_then(|(_, s)| s.value.as_str().map(str::to_owned))
                    .unwrap_or_else(|| panic!("proxy.toml: a [[sinks]] block without a type"));
                format!("sinks.{kind}")
            }
            "" => "top".to_owned(),
            other => other.to_owned(),
        };
        for (key, shown) in block.drain(..) {
            let subs: Vec<(String, toml::Value)> = match (&table[..], &key[..], &shown.value) {
                (t, k, toml::Value::Table(sub))
                    if t.starts_with("sinks.") && SINK_SUB_TABLES.contains(&k) =>
                {
                    sub.iter()
                        .map(|(sk, sv)| (format!("sinks.{k}.{sk}"), sv.clone()))
                        .collect()
                }
                ("scim", "resource_types", toml::Value::Array(items)) => items
                    .iter()
                    .filter_map(toml::Value::as_table)
                    .flat_map(|t| t.iter())
                    .map(|(sk, sv)| (format!("scim.resource_types.{sk}"), sv.clone()))
                    .collect(),
                _ => Vec::new(),
            };
            for (path, value) in subs {
                let (sub_table, sub_key) = path.rsplit_once('.').expect("dotted");
                let sub = Shown {
                    value,
                    ..shown.clone()
                };
                add(out, sub_table, sub_key, sub);
            }
            add(out, &table, &key, shown);
        }
    }
    let mut out = ProxyKeys::new();
    let mut header = String::new();
    let mut block = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let trimmed = raw.trim();
        let (active, body) = match trimmed.strip_prefix('#') {
            Some(rest) => (false, rest.trim()),
            None => (true, trimmed),
        };
        if let Some(name) = body
            .strip_prefix('[')
            .and_then(|rest| rest.split(']').next())
            .map(|n| n.trim_start_matches('[').trim())
            .filter(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        {
            flush(&mut out, &header, &mut block);
            header = name.to_owned();
            continue;
        }
        // A line that parses as one TOML `key = value` (a trailing comment is allowed).
        if let Ok(table) = body.parse::<toml::Table>() {
            if table.len() == 1 {
                let (key, value) = table.into_iter().next().expect("one entry");
                block.push((
                    key,
                    Shown {
                        value,
                        active,
                        line: index + 1,
                    },
                ));
            }
        }
    }
    flush(&mut out, &header, &mut block);
    out
}

fn proxy() -> ProxyKeys {
    proxy_keys(&read("proxy.toml"))
}

fn set(keys: &[&str]) -> BTreeSet<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

fn diff(what: &str, left: &BTreeSet<String>, right: &BTreeSet<String>) -> Vec<String> {
    let mut out = Vec::new();
    let only_left: Vec<_> = left.difference(right).collect();
    let only_right: Vec<_> = right.difference(left).collect();
    if !only_left.is_empty() || !only_right.is_empty() {
        out.push(format!(
            "{what}: documented but unknown to the parser: {only_left:?}; known to the parser but not documented: {only_right:?}"
        ));
    }
    out
}

// === the checks ===

/// Every documented key is known to the parser, and every key the parser knows is documented.
#[test]
fn the_reference_documents_exactly_the_keys_the_parser_knows() {
    let doc = reference();
    let mut failures = Vec::new();

    // Every marked table is one this test knows how to check.
    let mut expected_ids: BTreeSet<String> = set(&TABLES);
    expected_ids.extend(set(&["top", "sinks", "scim.resource_types"]));
    expected_ids.extend(SINK_SUB_TABLES.iter().map(|s| format!("sinks.{s}")));
    expected_ids.extend(
        SINK_TYPES
            .iter()
            .filter(|&&t| t != "stdout")
            .map(|t| format!("sinks.{t}")),
    );
    let mut marked: BTreeSet<String> = doc.keys().cloned().collect();
    marked.remove("sinks.stdout"); // optional: stdout has no keys of its own today
    if marked != expected_ids {
        failures.push(format!(
            "docs/configuration.md marks tables {marked:?}; expected {expected_ids:?}"
        ));
    }

    // Top level: the documented keys, plus one table per section.
    let mut top = doc_keys(&doc, "top");
    top.extend(set(&TABLES));
    top.insert("sinks".to_owned());
    failures.extend(diff("top level", &top, &parser_keys("top")));

    for id in TABLES.iter().chain(&["scim.resource_types"]) {
        failures.extend(diff(
            &format!("[{id}]"),
            &doc_keys(&doc, id),
            &parser_keys(id),
        ));
    }

    // Sinks: the shared keys and the type's own; `type` itself selects the struct, so the
    // parser's list does not name it: a wrong type must be refused at `type`.
    let bad_type = config_with("sinks.stdout", &entries(&[("type", "\"carrier-pigeon\"")]));
    assert!(
        problems(&bad_type)
            .iter()
            .any(|p| p.contains("sinks[0].type: unknown sink type")),
        "a sink's `type` is not where the parser picks the sink: {:?}",
        problems(&bad_type)
    );
    let shared = doc_keys(&doc, "sinks");
    for kind in SINK_TYPES {
        let id = format!("sinks.{kind}");
        let mut documented = shared.clone();
        documented.extend(doc_keys(&doc, &id));
        let mut known = parser_keys(&id);
        known.insert("type".to_owned());
        failures.extend(diff(
            &format!("[[sinks]] type = \"{kind}\" (shared keys and its own)"),
            &documented,
            &known,
        ));
        let own = doc_keys(&doc, &id);
        let overlap: Vec<_> = shared.intersection(&own).collect();
        if !overlap.is_empty() {
            failures.push(format!("{id} documents shared keys again: {overlap:?}"));
        }
        for sub in SINK_SUB_TABLES {
            failures.extend(diff(
                &format!("[[sinks]] type = \"{kind}\", {sub}"),
                &doc_keys(&doc, &format!("sinks.{sub}")),
                &parser_keys(&format!("sinks.{kind}.{sub}")),
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// proxy.toml shows every documented key (set, or commented out as an example) and no other,
/// and what it sets is the documented default.
#[test]
fn proxy_toml_shows_every_key_with_its_default() {
    let doc = reference();
    let shown = proxy();
    let mut failures = Vec::new();
    let keys_of = |id: &str| -> BTreeSet<String> {
        shown
            .get(id)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    };
    let shared = doc_keys(&doc, "sinks");
    let mut all_sinks = BTreeSet::new();
    for id in doc.keys().cloned().chain(["sinks.stdout".to_owned()]) {
        if id == "sinks" {
            continue; // checked across every sink block below
        }
        let mut documented = doc_keys(&doc, &id);
        let in_proxy = keys_of(&id);
        if let Some(kind) = id.strip_prefix("sinks.") {
            if SINK_TYPES.contains(&kind) {
                all_sinks.extend(in_proxy.iter().cloned());
                documented.extend(shared.iter().cloned());
                let missing: Vec<_> = doc_keys(&doc, &id).difference(&in_proxy).cloned().collect();
                let unknown: Vec<_> = in_proxy.difference(&documented).cloned().collect();
                if !missing.is_empty() || !unknown.is_empty() || in_proxy.is_empty() {
                    failures.push(format!(
                        "proxy.toml [[sinks]] type = \"{kind}\": missing {missing:?}, not in the reference {unknown:?}{}",
                        if in_proxy.is_empty() { " (no such block)" } else { "" }
                    ));
                }
                continue;
            }
        }
        let missing: Vec<_> = documented.difference(&in_proxy).cloned().collect();
        let unknown: Vec<_> = in_proxy.difference(&documented).cloned().collect();
        if !missing.is_empty() || !unknown.is_empty() {
            failures.push(format!(
                "proxy.toml {id}: missing {missing:?}, not in the reference {unknown:?}"
            ));
        }
    }
    let missing_shared: Vec<_> = shared.difference(&all_sinks).collect();
    if !missing_shared.is_empty() {
        failures.push(format!(
            "proxy.toml: shared sink keys in no [[sinks]] block: {missing_shared:?}"
        ));
    }
    // Tables proxy.toml shows that the reference does not have.
    for id in shown.keys() {
        if !doc.contains_key(id) && id != "sinks.stdout" {
            failures.push(format!(
                "proxy.toml shows a table `{id}` the reference lacks"
            ));
        }
    }

    // Values proxy.toml sets must be the documented defaults.
    for (id, rows) in &doc {
        for row in rows {
            let [key] = &row.keys[..] else { continue };
            let Some(default) = backticked(&row.default).into_iter().next() else {
                continue;
            };
            let Ok(parsed) = format!("v = {default}").parse::<toml::Table>() else {
                continue; // "required", "none", prose
            };
            let expected = &parsed["v"];
            let tables: Vec<String> = if id == "sinks" {
                SINK_TYPES.iter().map(|t| format!("sinks.{t}")).collect()
            } else {
                vec![id.clone()]
            };
            for table in tables {
                for s in shown
                    .get(&table)
                    .and_then(|m| m.get(key))
                    .into_iter()
                    .flatten()
                {
                    if s.active && !same_value(&s.value, expected) {
                        failures.push(format!(
                            "proxy.toml:{}: {table}.{key} = {} but the reference says the default is {default}",
                            s.line, s.value
                        ));
                    }
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

fn same_value(a: &toml::Value, b: &toml::Value) -> bool {
    use toml::Value::{Array, Float, Integer, Table};
    match (a, b) {
        (Integer(x), Float(y)) | (Float(y), Integer(x)) => (*x as f64) == *y,
        (Array(x), Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_value(a, b))
        }
        (Table(x), Table(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
        }
        _ => a == b,
    }
}

/// Every documented key parses with the value proxy.toml shows for it (a file that does not
/// exist, or a key that needs another one, is the validator's business, not the parser's).
#[test]
fn every_documented_key_parses_with_the_value_proxy_toml_shows() {
    let doc = reference();
    let shown = proxy();
    let mut failures = Vec::new();
    let sample = |table: &str, key: &str| -> Option<String> {
        let candidates: Vec<String> = if table == "sinks" {
            SINK_TYPES.iter().map(|t| format!("sinks.{t}")).collect()
        } else {
            vec![table.to_owned()]
        };
        candidates.iter().find_map(|t| {
            shown
                .get(t)
                .and_then(|m| m.get(key))
                .and_then(|v| v.first())
                .map(|s| s.value.to_string())
        })
    };
    for (id, rows) in &doc {
        for key in rows.iter().flat_map(|r| &r.keys) {
            if id == "sinks" && key == "type" {
                continue; // picks the sink: checked by the test above
            }
            let Some(value) = sample(id, key) else {
                failures.push(format!("{id}.{key}: proxy.toml shows no value to try"));
                continue;
            };
            let extra = vec![(key.clone(), value.clone())];
            let targets: Vec<String> = match id.as_str() {
                "sinks" => SINK_TYPES.iter().map(|t| format!("sinks.{t}")).collect(),
                sub if sub.starts_with("sinks.")
                    && SINK_SUB_TABLES.contains(&&sub["sinks.".len()..]) =>
                {
                    vec![format!("sinks.stdout.{}", &sub["sinks.".len()..])]
                }
                other => vec![other.to_owned()],
            };
            for target in targets {
                let text = config_with(&target, &extra);
                let refused: Vec<String> = problems(&text)
                    .into_iter()
                    .filter(|p| is_parse_error(p))
                    .collect();
                if !refused.is_empty() {
                    failures.push(format!(
                        "{target}: `{key} = {value}` is refused: {refused:?}"
                    ));
                }
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

/// The bundled proxy.toml is valid as it is.
#[test]
fn proxy_toml_is_valid() {
    let text = read("proxy.toml");
    assert_eq!(problems(&text), Vec::<String>::new());
}

/// The checks above can fail: a key missing from the reference, a key the parser does not
/// know, and a key missing from proxy.toml are each noticed.
#[test]
fn the_checks_notice_a_missing_or_unknown_key() {
    let doc_text = read("docs/configuration.md");
    let doc = documented(&doc_text);
    assert_eq!(
        doc_keys(&doc, "listen"),
        parser_keys("listen"),
        "precondition"
    );

    // A documented key removed: the parser knows more than the reference.
    let without: String = doc_text
        .lines()
        .filter(|l| !l.starts_with("| `max_headers` |"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(
        doc_keys(&documented(&without), "listen"),
        parser_keys("listen")
    );

    // A bogus key documented: the reference knows more than the parser.
    let with_bogus = doc_text.replace(
        "<!-- config-table: listen -->\n| key | type | default | meaning |\n|---|---|---|---|\n",
        &format!(
            "<!-- config-table: listen -->\n| key | type | default | meaning |\n|---|---|---|---|\n| `{BOGUS}` | bool | `false` | nothing |\n"
        ),
    );
    assert!(doc_keys(&documented(&with_bogus), "listen").contains(BOGUS));
    assert_ne!(
        doc_keys(&documented(&with_bogus), "listen"),
        parser_keys("listen")
    );

    // A key dropped from proxy.toml, commented or not, is no longer shown.
    let proxy_text = read("proxy.toml");
    assert!(proxy_keys(&proxy_text)["listen"].contains_key("max_headers"));
    let dropped: String = proxy_text
        .lines()
        .filter(|l| !l.trim_start_matches(['#', ' ']).starts_with("max_headers"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(!proxy_keys(&dropped)["listen"].contains_key("max_headers"));

    // A value the parser cannot read is a parse error; an unknown key is too.
    assert!(problems(&config_with(
        "listen",
        &entries(&[("max_headers", "\"many\"")])
    ))
    .iter()
    .any(|p| is_parse_error(p)));
    assert!(
        problems(&config_with("sinks.file.batch", &entries(&[(BOGUS, "1")])))
            .iter()
            .any(|p| p.contains(&format!("unknown field `{BOGUS}`")))
    );
}
