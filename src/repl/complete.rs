//! The line editor's helper: tab completion of commands, SQL keywords, function names and
//! the catalog objects themselves (connections, schemas, tables, columns) from the engine's
//! in-memory snapshot, so typing never waits on a source. Unqualified names complete in
//! the session's default schema.

use std::collections::BTreeSet;

use rustyline::completion::{Completer, Pair};
use rustyline::highlight::Highlighter;
use rustyline::hint::Hinter;
use rustyline::validate::Validator;
use rustyline::{Context, Helper};

use super::commands::COMMANDS;
use crate::engine::Engine;
use crate::engine::Snapshot;
use crate::session::DefaultSchema;

/// Completion and validation for the REPL's editor.
pub struct QuarryHelper {
    engine: Engine,
    functions: Vec<String>,
}

impl QuarryHelper {
    /// A helper completing from `engine`'s catalogs and functions.
    pub fn new(engine: Engine) -> Self {
        let functions = engine.function_names();
        QuarryHelper { engine, functions }
    }

    /// The candidates for the word ending at `pos` in `line`: where it starts, and the
    /// replacements.
    pub fn candidates(&self, line: &str, pos: usize) -> (usize, Vec<String>) {
        let start = line[..pos]
            .char_indices()
            .rev()
            .take_while(|(_, c)| c.is_alphanumeric() || matches!(c, '_' | '.' | '"' | '\\'))
            .last()
            .map_or(pos, |(i, _)| i);
        let word = &line[start..pos];
        let at_line_start = line[..start].trim().is_empty();
        if at_line_start && (word.starts_with('.') || word.starts_with('\\')) {
            let matches = COMMANDS
                .iter()
                .flat_map(|c| c.names.iter())
                .filter(|name| name.starts_with(word))
                .map(|name| name.to_string())
                .collect();
            return (start, matches);
        }
        let snapshot = self.engine.snapshot();
        let default = self.engine.default_session().default_schema();
        if let Some(dot) = word.rfind('.') {
            let path: Vec<String> = word[..dot].split('.').map(unquote).collect();
            let prefix = &word[dot + 1..];
            let names = qualified_names(&snapshot, &qualify(&snapshot, &default, path));
            return (start + dot + 1, matching(names, prefix));
        }
        let mut names: BTreeSet<String> = snapshot.connections.keys().cloned().collect();
        // Unqualified names resolve in the default schema: its tables, and the schemas of
        // its catalog.
        names.extend(qualified_names(
            &snapshot,
            std::slice::from_ref(&default.catalog),
        ));
        names.extend(qualified_names(
            &snapshot,
            &[default.catalog.clone(), default.schema.clone()],
        ));
        names.extend(referenced_columns(&snapshot, &default, line));
        let mut matches = matching(names, word);
        let upper = word.chars().next().is_some_and(char::is_uppercase);
        let prefix = word.to_ascii_uppercase();
        let keywords = datafusion::sql::sqlparser::keywords::ALL_KEYWORDS
            .iter()
            .filter(|k| !word.is_empty() && k.starts_with(&prefix))
            .map(|k| {
                if upper {
                    k.to_string()
                } else {
                    k.to_ascii_lowercase()
                }
            });
        let functions = self
            .functions
            .iter()
            .filter(|f| !word.is_empty() && f.starts_with(&word.to_ascii_lowercase()))
            .cloned();
        let mut rest: Vec<String> = keywords.chain(functions).collect();
        rest.sort();
        rest.dedup();
        rest.retain(|r| !matches.contains(r));
        matches.extend(rest);
        (start, matches)
    }
}

/// The names one level below `path` (connection → schemas → tables → columns).
fn qualified_names(snapshot: &Snapshot, path: &[String]) -> BTreeSet<String> {
    let Some(connection) = path.first().and_then(|c| snapshot.connections.get(c)) else {
        return BTreeSet::new();
    };
    match path {
        [_] => connection.schemas.keys().cloned().collect(),
        [_, schema] => connection
            .schemas
            .get(schema)
            .map(|tables| tables.keys().cloned().collect())
            .unwrap_or_default(),
        [_, schema, table] => connection
            .schemas
            .get(schema)
            .and_then(|tables| tables.get(table))
            .map(|t| t.schema.fields().iter().map(|f| f.name().clone()).collect())
            .unwrap_or_default(),
        _ => BTreeSet::new(),
    }
}

/// `path` (a dotted name being typed) completed with the default catalog and schema
/// where it does not start with a connection, as the planner resolves it.
fn qualify(snapshot: &Snapshot, default: &DefaultSchema, path: Vec<String>) -> Vec<String> {
    if snapshot.connections.contains_key(&path[0]) {
        return path;
    }
    let in_catalog = snapshot
        .connections
        .get(&default.catalog)
        .is_some_and(|c| c.schemas.contains_key(&path[0]));
    if in_catalog {
        [vec![default.catalog.clone()], path].concat()
    } else {
        [vec![default.catalog.clone(), default.schema.clone()], path].concat()
    }
}

/// Columns of the tables named anywhere in `line`, qualified or resolved in the default.
fn referenced_columns(
    snapshot: &Snapshot,
    default: &DefaultSchema,
    line: &str,
) -> BTreeSet<String> {
    line.split(|c: char| !(c.is_alphanumeric() || matches!(c, '_' | '.' | '"')))
        .filter(|word| !word.is_empty())
        .filter_map(|word| {
            let parts = qualify(snapshot, default, word.split('.').map(unquote).collect());
            (parts.len() == 3).then(|| qualified_names(snapshot, &parts))
        })
        .flatten()
        .collect()
}

/// The names starting with `prefix` (case-insensitively), quoted where SQL needs it.
fn matching(names: BTreeSet<String>, prefix: &str) -> Vec<String> {
    let prefix = unquote(prefix).to_lowercase();
    names
        .into_iter()
        .filter(|name| name.to_lowercase().starts_with(&prefix))
        .map(|name| quote(&name))
        .collect()
}

fn unquote(part: &str) -> String {
    part.trim_matches('"').to_owned()
}

/// `name` as an identifier: plain when it is lowercase letters, digits and `_`.
fn quote(name: &str) -> String {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        name.to_owned()
    } else {
        format!("\"{}\"", name.replace('"', "\"\""))
    }
}

impl Completer for QuarryHelper {
    type Candidate = Pair;

    fn complete(
        &self,
        line: &str,
        pos: usize,
        _ctx: &Context<'_>,
    ) -> rustyline::Result<(usize, Vec<Pair>)> {
        let (start, names) = self.candidates(line, pos);
        Ok((
            start,
            names
                .into_iter()
                .map(|name| Pair {
                    display: name.clone(),
                    replacement: name,
                })
                .collect(),
        ))
    }
}

/// Every line is accepted as typed: the shell collects a statement's lines itself, so
/// each gets its own prompt.
impl Validator for QuarryHelper {}

impl Hinter for QuarryHelper {
    type Hint = String;
}

impl Highlighter for QuarryHelper {}

impl Helper for QuarryHelper {}
