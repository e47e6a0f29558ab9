//! `quarry.information_schema.key_column_usage`: one row per column of each discovered
//! primary key, unique constraint, foreign key and index, like the SQL standard's view with
//! MySQL's referenced columns and the constraint's kind beside it.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};

use super::{field, ints, strings};
use crate::connections::Connections;

pub(super) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("connection_name", DataType::Utf8),
        field("table_schema", DataType::Utf8),
        field("table_name", DataType::Utf8),
        field("constraint_name", DataType::Utf8),
        field("constraint_type", DataType::Utf8),
        field("column_name", DataType::Utf8),
        field("ordinal_position", DataType::Int64),
        field("referenced_table_schema", DataType::Utf8),
        field("referenced_table_name", DataType::Utf8),
        field("referenced_column_name", DataType::Utf8),
    ]))
}

pub(super) async fn rows(connections: &Connections) -> crate::Result<Vec<ArrayRef>> {
    let mut columns: [Vec<Option<String>>; 9] = Default::default();
    let mut positions = Vec::new();
    for c in connections.connections().await? {
        for t in connections.tables(&c).await? {
            for constraint in &t.constraints {
                for row in constraint.column_rows(&t.schema, &t.name) {
                    let (ref_schema, ref_table, ref_column) = row.referenced_parts();
                    let values = [
                        Some(c.name.to_string()),
                        Some(row.schema),
                        Some(row.table),
                        Some(row.name),
                        Some(row.kind.as_str().to_owned()),
                        Some(row.column),
                        ref_schema,
                        ref_table,
                        ref_column,
                    ];
                    for (column, value) in columns.iter_mut().zip(values) {
                        column.push(value);
                    }
                    positions.push(Some(row.position));
                }
            }
        }
    }
    let [
        name,
        schema,
        table,
        constraint,
        kind,
        column,
        ref_schema,
        ref_table,
        ref_column,
    ] = columns;
    Ok(vec![
        strings(name),
        strings(schema),
        strings(table),
        strings(constraint),
        strings(kind),
        strings(column),
        ints(positions),
        strings(ref_schema),
        strings(ref_table),
        strings(ref_column),
    ])
}
