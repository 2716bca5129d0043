//! Loading: from text to [`Config`] in passes that list every problem with its line.
//!
//! `${NAME}` is expanded from the environment first. Then each pass parses the text; a field
//! of the wrong type or an unknown key is recorded with its line, the offending entry is
//! blanked out (offsets kept) and the text is parsed again, so one run names every bad key
//! instead of the first one only. What parses is then validated ([`super::validate`]).

use std::path::{Path, PathBuf};

use super::{Config, RawConfig};
use crate::sinks::config::{deserialize_sink, RawSink};

/// How many repair passes are tried before giving up listing problems.
const MAX_PASSES: usize = 64;

/// One thing wrong with the file: where, which key, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

/// Why a configuration was refused. Display lists every problem, one per line, each as
/// `file:line: key: message`.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}", render_problems(file, problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

fn render_problems(file: &Path, problems: &[Problem]) -> String {
    let mut out = format!(
        "{} has {} problem{}:",
        file.display(),
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        out.push_str("\n  ");
        out.push_str(&file.display().to_string());
        if let Some(line) = p.line {
            out.push_str(&format!(":{line}"));
        }
        if p.key.is_empty() {
            out.push_str(&format!(": {}", p.message));
        } else {
            out.push_str(&format!(": {}: {}", p.key, p.message));
        }
    }
    out
}

// === loading ===

impl Config {
    /// Reads and validates `path`.
    ///
    /// # Errors
    /// [`ConfigError::Read`] if the file cannot be read, [`ConfigError::Invalid`] listing every
    /// problem otherwise.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::from_toml_str(&text, path)
    }

    /// Parses and validates `text`; `origin` names the file in messages and anchors relative
    /// paths (TLS files, sink paths are taken as written, relative to the working directory).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] with every problem found.
    pub fn from_toml_str(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        Config::from_toml_str_unsorted(text, origin).map_err(|error| match error {
            ConfigError::Invalid { file, problems } => ConfigError::Invalid {
                file,
                problems: sorted_by_line(problems),
            },
            other => other,
        })
    }

    fn from_toml_str_unsorted(text: &str, origin: &Path) -> Result<Config, ConfigError> {
        let (expanded, unset) = expand_env(text, |name| std::env::var(name).ok());
        if !unset.is_empty() {
            return Err(ConfigError::Invalid {
                file: origin.to_owned(),
                problems: unset,
            });
        }
        let mut src = expanded;
        let mut problems = Vec::new();
        for _ in 0..MAX_PASSES {
            match parse_pass(&src) {
                Ok((raw, sinks)) => {
                    if problems.is_empty() {
                        return raw.validate(&src, sinks, origin);
                    }
                    // Still report what validation finds in the parts that did parse.
                    if let Err(ConfigError::Invalid { problems: more, .. }) =
                        raw.validate(&src, sinks, origin)
                    {
                        // One problem per key: a key already reported (an unknown sink
                        // type, then that sink's missing type) is not reported again.
                        // A sink table refused above was blanked out for the later passes:
                        // "no [[sinks]] configured" would then be wrong.
                        let sink_refused = problems
                            .iter()
                            .any(|q: &Problem| q.key.starts_with("sinks["));
                        for p in more {
                            if sink_refused && p.key == "sinks" {
                                continue;
                            }
                            if !problems.iter().any(|q: &Problem| q.key == p.key) {
                                problems.push(p);
                            }
                        }
                    }
                    break;
                }
                Err(PassError::Syntax(p)) => {
                    // A syntax error in the original text is reported; one caused by our own
                    // blanking of a multi-line value is not the user's and is dropped.
                    if problems.is_empty() {
                        problems.push(p);
                    }
                    break;
                }
                Err(PassError::Field(p)) => {
                    let line = p.line;
                    if !problems.iter().any(|q| q.key == p.key) {
                        problems.push(p);
                    }
                    match line {
                        Some(line) => blank_entry(&mut src, line),
                        None => break,
                    }
                }
            }
        }
        problems.dedup();
        Err(ConfigError::Invalid {
            file: origin.to_owned(),
            problems,
        })
    }
}

/// Problems in the order of their lines, those without a line last; equal lines keep the
/// order they were found in. Exact repeats are reported once; every other problem is kept.
fn sorted_by_line(mut problems: Vec<Problem>) -> Vec<Problem> {
    problems.sort_by_key(|p| (p.line.is_none(), p.line));
    let mut kept: Vec<Problem> = Vec::with_capacity(problems.len());
    for p in problems {
        if !kept.contains(&p) {
            kept.push(p);
        }
    }
    kept
}

enum PassError {
    Syntax(Problem),
    Field(Problem),
}

/// Replaces `${NAME}` with the environment variable NAME (so secrets and paths such as
/// systemd's `${CREDENTIALS_DIRECTORY}` can come from the environment); `$${` stands for a
/// literal `${`. Unset variables are problems, reported by line, never by value.
pub(super) fn expand_env(
    text: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> (String, Vec<Problem>) {
    let mut out = String::with_capacity(text.len());
    let mut problems = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        if let Some(after) = tail.strip_prefix("$${") {
            out.push_str("${");
            rest = after;
        } else if let Some(after) = tail.strip_prefix("${") {
            match after.find('}') {
                Some(end)
                    if end > 0
                        && after[..end]
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'_') =>
                {
                    let name = &after[..end];
                    match lookup(name) {
                        Some(value) => out.push_str(&value),
                        None => problems.push(Problem {
                            line: Some(line_of(text, text.len() - tail.len())),
                            key: format!("${{{name}}}"),
                            message: format!("environment variable {name} is not set"),
                        }),
                    }
                    rest = &after[end + 1..];
                }
                _ => {
                    out.push_str("${");
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = &tail[1..];
        }
    }
    out.push_str(rest);
    (out, problems)
}

/// One parse of the (possibly repaired) text: the top level, then each sink on its own.
fn parse_pass(src: &str) -> Result<(RawConfig, Vec<(usize, RawSink)>), PassError> {
    let de = toml::Deserializer::parse(src).map_err(|e| {
        PassError::Syntax(Problem {
            line: e.span().map(|s| line_of(src, s.start)),
            key: String::new(),
            message: format!("invalid TOML: {}", e.message()),
        })
    })?;
    let raw: RawConfig = serde_path_to_error::deserialize(de).map_err(|e| {
        let key = error_key(&e.path().to_string(), e.inner().message());
        let line = e
            .inner()
            .span()
            .map(|s| line_of(src, s.start))
            .filter(|_| !key.is_empty());
        PassError::Field(Problem {
            line,
            key,
            message: e.inner().message().to_owned(),
        })
    })?;
    let mut sinks = Vec::new();
    for (index, table) in raw.sinks.iter().flatten().enumerate() {
        let start = table.span().start;
        let value = toml::Value::Table(table.get_ref().clone());
        match deserialize_sink(value) {
            Ok(sink) => sinks.push((line_of(src, start), sink)),
            Err((field, message)) => {
                let line = find_key_line(src, table.span(), last_segment(&field))
                    .unwrap_or_else(|| line_of(src, start));
                let key = if field.is_empty() {
                    format!("sinks[{index}]")
                } else {
                    format!("sinks[{index}].{field}")
                };
                return Err(PassError::Field(Problem {
                    line: Some(line),
                    key,
                    message,
                }));
            }
        }
    }
    Ok((raw, sinks))
}

/// The dotted key of an error: serde's path without the `Spanned` wrapper's internal
/// segments, and, for an unknown key (reported at its parent), the key itself.
pub(crate) fn error_key(path: &str, message: &str) -> String {
    let mut segments: Vec<&str> = path
        .split('.')
        .filter(|s| !s.is_empty() && !s.starts_with("$__"))
        .collect();
    let unknown = message
        .strip_prefix("unknown field `")
        .or_else(|| message.strip_prefix("missing field `"))
        .and_then(|rest| rest.split('`').next());
    if let Some(field) = unknown {
        if segments.last() != Some(&field) {
            segments.push(field);
        }
    }
    segments.join(".")
}

pub(crate) fn last_segment(key: &str) -> &str {
    key.rsplit('.').next().unwrap_or(key)
}

/// 1-based line of byte offset `at`.
pub(crate) fn line_of(src: &str, at: usize) -> usize {
    let at = at.min(src.len());
    src.as_bytes()[..at].iter().filter(|&&b| b == b'\n').count() + 1
}

/// The line of `key` inside the table whose header starts at `span` (toml gives an
/// array-of-tables entry the span of its header only, and no position for errors found after
/// the entry was read as a whole).
fn find_key_line(src: &str, span: std::ops::Range<usize>, key: &str) -> Option<usize> {
    if key.is_empty() || key.contains('[') {
        return None;
    }
    let table = header_name(src.get(span.clone())?);
    let mut offset = span.end.min(src.len());
    for line in src.get(offset..)?.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') && !is_sub_table(trimmed, table) {
            break;
        }
        if let Some(rest) = trimmed.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                return Some(line_of(src, offset));
            }
        }
        offset += line.len();
    }
    None
}

/// `sinks` for `[[sinks]]`, `upstream` for `[upstream]` (comments and spaces ignored).
fn header_name(header: &str) -> &str {
    header
        .split('#')
        .next()
        .unwrap_or("")
        .trim()
        .trim_start_matches('[')
        .trim_end_matches(']')
        .trim()
}

/// Whether a header line opens a sub-table of `table` (`[sinks.buffer]` of `sinks`).
fn is_sub_table(line: &str, table: &str) -> bool {
    !table.is_empty()
        && header_name(line.lines().next().unwrap_or("")).starts_with(&format!("{table}."))
}

/// Blanks the entry at `line` so the next pass can see past it. Spaces keep every byte offset
/// (and so every later line number) where it was. A table header takes its whole table with it,
/// so its keys are not misread as belonging to the table before.
fn blank_entry(src: &mut String, line: usize) {
    let mut starts: Vec<usize> = vec![0];
    starts.extend(src.match_indices('\n').map(|(i, _)| i + 1));
    let Some(&start) = starts.get(line - 1) else {
        return;
    };
    let first = src[start..].trim_start();
    let is_header = first.starts_with('[');
    let mut end_line = line;
    if is_header {
        // The table's own sub-tables (`[sinks.buffer]` under `[[sinks]]`) go with it.
        let table = header_name(first.lines().next().unwrap_or("")).to_owned();
        while let Some(&s) = starts.get(end_line) {
            let next = src[s..].trim_start();
            if next.starts_with('[') && !is_sub_table(next, &table) {
                break;
            }
            end_line += 1;
        }
    }
    let end = starts.get(end_line).copied().unwrap_or(src.len());
    let blanked: String = src[start..end]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    // Multi-byte characters become one space each; pad so offsets after stay put.
    let pad = (end - start).saturating_sub(blanked.len());
    let mut replacement = blanked;
    if pad > 0 {
        let newline_at_end = replacement.ends_with('\n');
        if newline_at_end {
            replacement.pop();
        }
        replacement.push_str(&" ".repeat(pad));
        if newline_at_end {
            replacement.push('\n');
        }
    }
    src.replace_range(start..end, &replacement);
}
