//! "Did you mean" for misspelled connection, schema and table names, from the snapshot.

use datafusion::error::DataFusionError;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{ObjectNamePart, visit_relations};

use super::snapshot::Snapshot;

/// `error` explained where DataFusion's own words leave a user stuck: an ORDER BY of a
/// qualified column that shares its name with an output column. DataFusion adds the
/// sort key to the projection beside the alias and then refuses the two names as
/// ambiguous (a relative of apache/datafusion#8391, still open for this case in 55).
pub fn explain_ambiguity(error: DataFusionError) -> DataFusionError {
    use datafusion::common::SchemaError;
    let DataFusionError::SchemaError(schema_error, _) = error.find_root() else {
        return error;
    };
    let SchemaError::AmbiguousReference { field } = schema_error.as_ref() else {
        return error;
    };
    let Some(relation) = &field.relation else {
        return error;
    };
    DataFusionError::Plan(format!(
        "{error}. This happens when ORDER BY names {relation}.{name} while an output column is \
         also called {name}: select {relation}.{name} under another alias and order by that \
         alias, or rename the output column",
        name = field.name
    ))
}

/// `error` with the closest existing name added, when it is about a name that does not
/// exist and a close one does.
pub fn with_suggestion(
    statement: &Statement,
    snapshot: &Snapshot,
    error: DataFusionError,
) -> DataFusionError {
    let message = error.to_string();
    if !(message.contains("not found") || message.contains("failed to resolve")) {
        return error;
    }
    let mut names: Vec<Vec<String>> = Vec::new();
    if let Statement::Statement(inner) = statement {
        let _ = visit_relations(inner.as_ref(), |name| {
            names.push(
                name.0
                    .iter()
                    .map(|part| match part {
                        ObjectNamePart::Identifier(i) => i.value.clone(),
                        _ => String::new(),
                    })
                    .collect(),
            );
            std::ops::ControlFlow::<()>::Continue(())
        });
    }
    match names.iter().find_map(|parts| hint(parts, snapshot)) {
        Some(hint) => DataFusionError::Plan(format!("{message}; did you mean {hint}?")),
        None => error,
    }
}

fn hint(parts: &[String], snapshot: &Snapshot) -> Option<String> {
    let [catalog, schema, table] = parts else {
        return None;
    };
    if catalog == "datafusion" || catalog == "quarry" {
        return None;
    }
    let Some(connection) = snapshot.connections.get(catalog) else {
        return closest(catalog, snapshot.connections.keys())
            .map(|c| format!("'{c}.{schema}.{table}'"));
    };
    let Some(tables) = connection.schemas.get(schema) else {
        return closest(schema, connection.schemas.keys())
            .map(|s| format!("'{catalog}.{s}.{table}'"));
    };
    if tables.contains_key(table) {
        return None;
    }
    closest(table, tables.keys()).map(|t| format!("'{catalog}.{schema}.{t}'"))
}

/// The candidate nearest to `name`, if it is near enough to be a likely typo.
pub fn closest<'a>(name: &str, candidates: impl Iterator<Item = &'a String>) -> Option<String> {
    let lowered = name.to_lowercase();
    candidates
        .map(|c| (strsim::damerau_levenshtein(&lowered, &c.to_lowercase()), c))
        .filter(|(distance, c)| *distance <= (c.chars().count() / 3).max(2))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c.clone())
}
