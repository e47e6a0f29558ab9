//! The Arrow schema of a native statement's rows, from the server's description of the
//! prepared statement: the statement is parsed and planned, never run.

use std::sync::Arc;

use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use sqlx::{AssertSqlSafe, Column, Executor, PgConnection, Row, SqlSafeStr, Statement};

use super::types::{PgColumnType, arrow_type};
use crate::error::Result;
use crate::source::Endpoint;
use crate::source::describe::{Described, placeholders, unique_names};

/// Each result column's base type, array element and type modifier. The modifier (a
/// numeric's precision and scale) is known for columns read from a table, as the
/// description carries only the type; a computed column has none, as in PostgreSQL itself.
const COLUMN_TYPES: &str = r"
SELECT bt.typname::text AS type_name,
       bt.typtype::text AS type_kind,
       et.typname::text AS element_name,
       (CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE coalesce(a.atttypmod, -1) END)::int8
           AS typmod
FROM unnest($1::int8[], $2::int8[], $3::int4[]) WITH ORDINALITY AS c(typ, rel, att, n)
JOIN pg_type t ON t.oid = c.typ::oid
JOIN pg_type bt ON bt.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
LEFT JOIN pg_type et ON et.oid = bt.typelem AND bt.typcategory = 'A'
LEFT JOIN pg_attribute a ON a.attrelid = c.rel::oid AND a.attnum = c.att
ORDER BY c.n";

/// Describes `sql` on `conn` and maps its columns as discovery maps a table's.
pub(super) async fn describe(
    conn: &mut PgConnection,
    endpoint: &Endpoint,
    sql: &str,
    numeric_as_float: bool,
) -> Result<Described> {
    let classify = |e: sqlx::Error| endpoint.classify(&e);
    let statement = (&mut *conn)
        .prepare(AssertSqlSafe(sql.to_owned()).into_sql_str())
        .await
        .map_err(classify)?;
    let parameters = placeholders(&statement);
    let columns = statement.columns();
    let (mut types, mut relations, mut attributes) = (vec![], vec![], vec![]);
    for column in columns {
        let oid = column.type_info().oid().map_or(0, |oid| i64::from(oid.0));
        types.push(oid);
        relations.push(column.relation_id().map_or(0, |oid| i64::from(oid.0)));
        attributes.push(column.relation_attribute_no().map_or(0, i32::from));
    }
    let rows = sqlx::query(COLUMN_TYPES)
        .bind(&types)
        .bind(&relations)
        .bind(&attributes)
        .fetch_all(&mut *conn)
        .await
        .map_err(classify)?;
    if rows.len() != columns.len() {
        return Err(endpoint.error(
            crate::error::FailureClass::Other,
            "the server described a result column of a type it does not list".to_owned(),
        ));
    }
    let names = unique_names(columns.iter().map(|c| c.name().to_owned()));
    let mut fields = Vec::with_capacity(columns.len());
    for (row, name) in rows.iter().zip(names) {
        let read = || -> std::result::Result<PgColumnType, sqlx::Error> {
            Ok(PgColumnType {
                name: row.try_get("type_name")?,
                kind: row.try_get("type_kind")?,
                element: row.try_get("element_name")?,
                typmod: row.try_get::<i64, _>("typmod")? as i32,
            })
        };
        let column = read().map_err(classify)?;
        fields.push(Field::new(
            name,
            arrow_type(&column, numeric_as_float),
            true,
        ));
    }
    let schema: SchemaRef = Arc::new(Schema::new(fields));
    Ok(Described { schema, parameters })
}
