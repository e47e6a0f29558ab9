//! `quarry.information_schema.columns`: each discovered column with its source and Arrow
//! types.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};

use super::{field, ints, strings};
use crate::connections::Connections;

pub(super) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("connection_name", DataType::Utf8),
        field("table_schema", DataType::Utf8),
        field("table_name", DataType::Utf8),
        field("column_name", DataType::Utf8),
        field("ordinal_position", DataType::Int64),
        field("source_type", DataType::Utf8),
        field("arrow_type", DataType::Utf8),
        field("is_nullable", DataType::Boolean),
    ]))
}

pub(super) async fn rows(connections: &Connections) -> crate::Result<Vec<ArrayRef>> {
    let (mut names, mut schemas, mut tables, mut columns) = (vec![], vec![], vec![], vec![]);
    let (mut sources, mut arrows, mut position, mut nullable) = (vec![], vec![], vec![], vec![]);
    for c in connections.connections().await? {
        for t in connections.tables(&c).await? {
            for col in &t.columns {
                names.push(Some(c.name.to_string()));
                schemas.push(Some(t.schema.clone()));
                tables.push(Some(t.name.clone()));
                columns.push(Some(col.name.clone()));
                sources.push(Some(col.source_type.clone()));
                arrows.push(Some(col.arrow_type.clone()));
                position.push(Some(col.ordinal_position));
                nullable.push(Some(col.is_nullable));
            }
        }
    }
    Ok(vec![
        strings(names),
        strings(schemas),
        strings(tables),
        strings(columns),
        ints(position),
        strings(sources),
        strings(arrows),
        Arc::new(BooleanArray::from(nullable)),
    ])
}
