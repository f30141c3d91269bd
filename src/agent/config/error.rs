//! The error of loading a configuration file, located in it (file, line,
//! column, dotted field), and the text scanning that finds those locations.
//! It does not decide what is wrong: parsing and `validate` do.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// A configuration error, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFileError {
    pub file: PathBuf,
    /// 1-based; 0 when the error has no location (unreadable file).
    pub line: usize,
    pub column: usize,
    /// Dotted field path, e.g. `peer[1].endpoint`; empty when unknown.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ConfigFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if self.line > 0 {
            write!(f, ":{}:{}", self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigFileError {}

/// The span of `table.key` in `text` (the table header if the key is not
/// written, e.g. a default that conflicts with another field).
pub(super) fn field_span(text: &str, field: &str) -> Range<usize> {
    let (table, key) = field.rsplit_once('.').unwrap_or(("", field));
    let mut offset = 0;
    let mut in_table = table.is_empty();
    let mut table_pos = 0..0;
    for raw in text.split_inclusive('\n') {
        let line = raw.trim();
        if line.starts_with('[') {
            let name = line.trim_matches(|c| c == '[' || c == ']').trim();
            in_table = name == table;
            if in_table {
                table_pos = offset..offset + raw.len();
            }
        } else if in_table {
            if let Some((k, _)) = line.split_once('=') {
                if k.trim() == key {
                    let col = raw.len() - raw.trim_start().len();
                    return offset + col..offset + raw.len();
                }
            }
        }
        offset += raw.len();
    }
    table_pos
}

/// Turns a byte span into line/column and names the field found there.
pub(super) fn locate(
    path: &Path,
    text: &str,
    span: Range<usize>,
    message: String,
) -> ConfigFileError {
    let start = span.start.min(text.len());
    let before = text.get(..start).unwrap_or("");
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let column = before.get(line_start..).map_or(0, |s| s.chars().count()) + 1;
    ConfigFileError {
        file: path.to_path_buf(),
        line,
        column,
        field: field_at(text, start),
        message,
    }
}

/// The dotted field at byte `pos`: the enclosing table (with an index for
/// arrays of tables) and the key on that line, if any.
fn field_at(text: &str, pos: usize) -> String {
    let mut table = String::new();
    let mut counts: std::collections::HashMap<String, usize> = Default::default();
    let mut offset = 0;
    let mut key = String::new();
    for raw in text.split_inclusive('\n') {
        let line = raw.trim();
        let line_end = offset + raw.len();
        if let Some(name) = line.strip_prefix("[[").and_then(|l| l.split("]]").next()) {
            let name = name.trim().to_string();
            let c = counts.entry(name.clone()).or_insert(0);
            table = format!("{name}[{c}]");
            *c += 1;
        } else if let Some(name) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            table = name.trim().to_string();
        } else if pos >= offset && pos < line_end.max(offset + 1) {
            if let Some((k, _)) = line.split_once('=') {
                key = k.trim().to_string();
            }
        }
        if pos < line_end {
            break;
        }
        offset = line_end;
    }
    match (table.is_empty(), key.is_empty()) {
        (true, _) => key,
        (false, true) => table,
        (false, false) => format!("{table}.{key}"),
    }
}
