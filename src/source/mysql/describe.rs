//! The Arrow schema of a native statement's rows, from the column definitions the server
//! returns when it prepares the statement: the statement is never run.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema};
use sqlx::{AssertSqlSafe, Column, Executor, MySqlConnection, SqlSafeStr, Statement, TypeInfo};

use super::types::{MySqlColumnType, arrow_type};
use crate::error::{FailureClass, Result};
use crate::source::Endpoint;
use crate::source::describe::{Described, placeholders, unique_names};

/// Wire types the binary protocol sends in a form the row decoder does not read as text.
const NEEDS_CAST: &[&str] = &["TIME", "BIT", "GEOMETRY"];

/// Prepares `sql` on `conn` and maps its columns: one read from a table as discovery maps
/// that table's column, a computed one by its wire type (a computed DECIMAL, whose
/// precision the description does not carry, as exact text).
pub(super) async fn describe(
    conn: &mut MySqlConnection,
    endpoint: &Endpoint,
    sql: &str,
) -> Result<Described> {
    let classify = |e: sqlx::Error| endpoint.classify(&e);
    let statement = (&mut *conn)
        .prepare(AssertSqlSafe(sql.to_owned()).into_sql_str())
        .await
        .map_err(classify)?;
    let parameters = placeholders(&statement);
    let columns = statement.columns();
    let names = unique_names(columns.iter().map(|c| c.name().to_owned()));
    // The catalog's columns of each table the result reads from, one query per table.
    let mut tables: HashMap<String, HashMap<String, MySqlColumnType>> = HashMap::new();
    for column in columns {
        if let sqlx::ColumnOrigin::Table(origin) = column.origin()
            && !tables.contains_key(origin.table.as_ref())
        {
            let listed = table_columns(conn, &origin.table, endpoint).await?;
            tables.insert(origin.table.to_string(), listed);
        }
    }
    let mut fields = Vec::with_capacity(columns.len());
    for (i, (column, name)) in columns.iter().zip(names).enumerate() {
        let wire = column.type_info().name();
        if NEEDS_CAST.contains(&wire) {
            return Err(endpoint.error(
                FailureClass::Query,
                format!(
                    "result column {} ('{name}') is {wire}, which source_query cannot read as \
                     it comes; CAST it AS CHAR in the statement",
                    i + 1
                ),
            ));
        }
        let discovered = match column.origin() {
            sqlx::ColumnOrigin::Table(origin) => tables
                .get(origin.table.as_ref())
                .and_then(|listed| listed.get(origin.name.as_ref())),
            _ => None,
        };
        let arrow = match discovered {
            Some(column) => arrow_type(column),
            None => wire_type(wire),
        };
        fields.push(Field::new(name, arrow, true));
    }
    Ok(Described {
        schema: Arc::new(Schema::new(fields)),
        parameters,
    })
}

/// A row of `information_schema.COLUMNS`: name, data type, column type, precision, scale.
type CatalogColumn = (String, String, String, Option<i64>, Option<i64>);

/// The discovered types of the columns of `table` (which may be `database.table`), by
/// name, as the catalog lists them.
async fn table_columns(
    conn: &mut MySqlConnection,
    table: &str,
    endpoint: &Endpoint,
) -> Result<HashMap<String, MySqlColumnType>> {
    let (schema, table) = match table.split_once('.') {
        Some((schema, table)) => (Some(schema), table),
        None => (None, table),
    };
    let rows: Vec<CatalogColumn> = sqlx::query_as(
        "SELECT CAST(COLUMN_NAME AS CHAR), CAST(DATA_TYPE AS CHAR), CAST(COLUMN_TYPE AS CHAR),
                CAST(NUMERIC_PRECISION AS SIGNED), CAST(NUMERIC_SCALE AS SIGNED)
         FROM information_schema.COLUMNS
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ?",
    )
    .bind(schema)
    .bind(table)
    .fetch_all(&mut *conn)
    .await
    .map_err(|e| endpoint.classify(&e))?;
    Ok(rows
        .into_iter()
        .map(|(name, data_type, column_type, precision, scale)| {
            let column = MySqlColumnType {
                data_type,
                column_type,
                precision,
                scale,
            };
            (name, column)
        })
        .collect())
}

/// The Arrow type of a computed column of wire type `wire` (`BIGINT UNSIGNED`, `DOUBLE`, ...).
fn wire_type(wire: &str) -> DataType {
    let data_type = wire
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_ascii_lowercase();
    match data_type.as_str() {
        // Its precision is not in the description: exact text rather than a guess.
        "decimal" => DataType::Utf8,
        "boolean" => DataType::Int8,
        _ => arrow_type(&MySqlColumnType {
            data_type,
            column_type: wire.to_ascii_lowercase(),
            precision: None,
            scale: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn computed_columns_map_by_wire_type() {
        assert_eq!(wire_type("BIGINT UNSIGNED"), DataType::UInt64);
        assert_eq!(wire_type("BIGINT"), DataType::Int64);
        assert_eq!(wire_type("DOUBLE"), DataType::Float64);
        assert_eq!(wire_type("DECIMAL"), DataType::Utf8);
        assert_eq!(wire_type("VARBINARY"), DataType::Binary);
        assert_eq!(wire_type("VARCHAR"), DataType::Utf8);
        assert_eq!(wire_type("BOOLEAN"), DataType::Int8);
    }
}
