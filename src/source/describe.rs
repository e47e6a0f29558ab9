//! Describing a native statement for `source_query`: the Arrow schema of its rows, learnt
//! from the prepared statement without running it, and the rules every source applies.

use std::collections::HashMap;

use datafusion::arrow::datatypes::SchemaRef;

use super::Endpoint;
use crate::error::{FailureClass, Result};

/// What preparing a statement told about it.
#[derive(Debug)]
pub(crate) struct Described {
    /// Its result columns, mapped as fetches map a table's.
    pub schema: SchemaRef,
    /// How many parameter placeholders it has.
    pub parameters: usize,
}

impl Described {
    /// The schema of a statement `source_query` can run: one that returns rows and has no
    /// placeholders to bind.
    pub(crate) fn into_schema(self, endpoint: &Endpoint) -> Result<SchemaRef> {
        if self.parameters > 0 {
            return Err(endpoint.error(
                FailureClass::Query,
                format!(
                    "the statement has {} parameter placeholder{}; source_query sends its text \
                     as it is, so write the values into it",
                    self.parameters,
                    if self.parameters == 1 { "" } else { "s" }
                ),
            ));
        }
        if self.schema.fields().is_empty() {
            return Err(endpoint.error(
                FailureClass::Query,
                "the statement returns no rows, and source_query only reads: its session is \
                 read-only, so writes, DDL and SET are refused. Run them with the source's \
                 own client",
            ));
        }
        Ok(self.schema)
    }
}

/// How many parameter placeholders a prepared statement has.
pub(crate) fn placeholders<S: sqlx::Statement>(statement: &S) -> usize {
    match statement.parameters() {
        Some(sqlx::Either::Left(types)) => types.len(),
        Some(sqlx::Either::Right(n)) => n,
        None => 0,
    }
}

/// Result column names made unique, as a table's must be: a repeated name gets `_2`, `_3`, …
pub(crate) fn unique_names(names: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let names: Vec<String> = names.collect();
    let taken: std::collections::HashSet<String> = names.iter().cloned().collect();
    names
        .into_iter()
        .map(|name| {
            let count = seen.entry(name.clone()).or_insert(0);
            *count += 1;
            if *count == 1 {
                return name;
            }
            let mut n = *count;
            loop {
                let candidate = format!("{name}_{n}");
                if !taken.contains(&candidate) {
                    return candidate;
                }
                n += 1;
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_names_get_a_suffix() {
        let names = unique_names(
            ["a", "?column?", "?column?", "a", "a_2"]
                .into_iter()
                .map(String::from),
        );
        assert_eq!(names, ["a", "?column?", "?column?_2", "a_3", "a_2"]);
    }
}
