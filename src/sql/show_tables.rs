//! `SHOW TABLES [FROM catalog[.schema]] [LIKE 'pattern']` as a query of
//! `information_schema.tables`. The information_schema views are left out unless the
//! statement names that schema, as psql's `\dt` and DuckDB's `SHOW TABLES` do.

use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{
    self, ShowStatementFilter, ShowStatementFilterPosition, ShowStatementOptions,
};

use super::default_schema::DefaultSchema;
use super::system_catalog::{SYSTEM_CATALOG, VIEWS_SCHEMA};

/// The query `statement` stands for, when it is a `SHOW TABLES` Quarry answers.
pub fn query(statement: &Statement, default: &DefaultSchema) -> Option<String> {
    let Statement::Statement(inner) = statement else {
        return None;
    };
    let ast::Statement::ShowTables {
        extended: false,
        full: false,
        terse: false,
        history: false,
        external: false,
        show_options:
            ShowStatementOptions {
                show_in,
                starts_with: None,
                limit: None,
                limit_from: None,
                filter_position,
            },
    } = inner.as_ref()
    else {
        return None;
    };
    let mut conditions = Vec::new();
    let parent: Vec<String> = show_in
        .as_ref()
        .and_then(|show_in| show_in.parent_name.as_ref())
        .map(super::names::parts)
        .unwrap_or_default();
    match parent.as_slice() {
        [] => {}
        [catalog, schema] => {
            conditions.push(format!("table_catalog = {}", literal(catalog)));
            conditions.push(format!("table_schema = {}", literal(schema)));
        }
        // One name is a catalog, or a schema of the default catalog (as in MySQL).
        [name] => conditions.push(format!(
            "(table_catalog = {name} OR (table_catalog = {catalog} AND table_schema = {name}))",
            name = literal(name),
            catalog = literal(&default.catalog)
        )),
        _ => return None,
    }
    if !parent
        .iter()
        .any(|p| p == "information_schema" || p == VIEWS_SCHEMA)
    {
        conditions.push(format!(
            "table_schema <> 'information_schema' AND NOT (table_catalog = '{SYSTEM_CATALOG}' \
             AND table_schema = '{VIEWS_SCHEMA}')"
        ));
    }
    match filter_position {
        None => {}
        Some(
            ShowStatementFilterPosition::Infix(filter)
            | ShowStatementFilterPosition::Suffix(filter),
        ) => match filter {
            ShowStatementFilter::Like(pattern) => {
                conditions.push(format!("table_name LIKE {}", literal(pattern)))
            }
            ShowStatementFilter::ILike(pattern) => {
                conditions.push(format!("table_name ILIKE {}", literal(pattern)))
            }
            _ => return None,
        },
    }
    Some(format!(
        "SELECT table_catalog, table_schema, table_name, table_type \
         FROM information_schema.tables WHERE {} ORDER BY 1, 2, 3",
        conditions.join(" AND ")
    ))
}

fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
