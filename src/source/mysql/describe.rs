//! The Arrow schema of a native statement's rows, from the column definitions the server
//! returns when it prepares the statement: the statement is never run.

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
            sqlx::ColumnOrigin::Table(origin) => {
                table_column_type(conn, &origin.table, &origin.name, endpoint).await?
            }
            _ => None,
        };
        let arrow = match discovered {
            Some(column) => arrow_type(&column),
            None => wire_type(wire),
        };
        fields.push(Field::new(name, arrow, true));
    }
    Ok(Described {
        schema: Arc::new(Schema::new(fields)),
        parameters,
    })
}

/// The discovered type of `table.column` (`table` may be `database.table`), if the
/// catalog lists it.
async fn table_column_type(
    conn: &mut MySqlConnection,
    table: &str,
    column: &str,
    endpoint: &Endpoint,
) -> Result<Option<MySqlColumnType>> {
    let (schema, table) = match table.split_once('.') {
        Some((schema, table)) => (Some(schema), table),
        None => (None, table),
    };
    let row: Option<(String, String, Option<i64>, Option<i64>)> = sqlx::query_as(
        "SELECT CAST(DATA_TYPE AS CHAR), CAST(COLUMN_TYPE AS CHAR),
                CAST(NUMERIC_PRECISION AS SIGNED), CAST(NUMERIC_SCALE AS SIGNED)
         FROM information_schema.COLUMNS
         WHERE TABLE_SCHEMA = COALESCE(?, DATABASE()) AND TABLE_NAME = ? AND COLUMN_NAME = ?",
    )
    .bind(schema)
    .bind(table)
    .bind(column)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| endpoint.classify(&e))?;
    Ok(row.map(
        |(data_type, column_type, precision, scale)| MySqlColumnType {
            data_type,
            column_type,
            precision,
            scale,
        },
    ))
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
