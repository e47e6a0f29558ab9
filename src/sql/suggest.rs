//! "Did you mean" for misspelled connection, schema and table names, from the snapshot,
//! and clearer words for errors DataFusion leaves terse.

use datafusion::catalog::CatalogProviderList;
use datafusion::common::TableReference;
use datafusion::error::DataFusionError;
use datafusion::sql::parser::Statement;
use datafusion::sql::resolve::resolve_table_references;

use super::default_schema::DefaultSchema;
use crate::connections::snapshot::Snapshot;
use crate::error::Error;

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

/// `error` as a not-found error with a hint when the statement names a table that does not
/// exist (the existing tables nearest to it, or where unqualified names are looked up);
/// any other error as it is.
pub fn with_suggestion(
    statement: &Statement,
    snapshot: &Snapshot,
    catalogs: &dyn CatalogProviderList,
    default: &DefaultSchema,
    is_table_function: impl Fn(&str) -> bool,
    error: DataFusionError,
) -> Error {
    let Ok((references, _ctes)) = resolve_table_references(statement, true) else {
        return error.into();
    };
    let missing = references.iter().find(|reference| {
        if matches!(reference, TableReference::Bare { table } if is_table_function(table)) {
            return false;
        }
        let resolved = TableReference::clone(reference).resolve(&default.catalog, &default.schema);
        resolved.schema.as_ref() != "information_schema"
            && !catalogs
                .catalog(&resolved.catalog)
                .and_then(|c| c.schema(&resolved.schema))
                .is_some_and(|s| s.table_exist(&resolved.table))
    });
    let Some(missing) = missing else {
        return error.into();
    };
    let parts: Vec<String> = match missing {
        TableReference::Bare { table } => vec![table.to_string()],
        TableReference::Partial { schema, table } => vec![schema.to_string(), table.to_string()],
        TableReference::Full {
            catalog,
            schema,
            table,
        } => vec![catalog.to_string(), schema.to_string(), table.to_string()],
    };
    let hint = match snapshot.nearest_tables(&parts).as_slice() {
        [] if parts.len() < 3 => format!(
            " (unqualified names are looked up in {default}; write connection.schema.table, \
             or USE connection.schema)"
        ),
        [] => String::new(),
        names => format!("; did you mean {}?", names.join(" or ")),
    };
    Error::NotFound(format!("{error}{hint}"))
}
