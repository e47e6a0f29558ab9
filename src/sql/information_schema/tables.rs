//! `quarry.information_schema.tables`: each discovered table with its cache entry and the
//! bytes it holds in the memory tier, its size estimate and the access mode its queries use
//! (the table's own or its connection's).

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};

use super::{field, ints, strings, times, utc};
use crate::connections::Connections;
use crate::source::CommonOptions;

pub(super) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("connection_id", DataType::Utf8),
        field("connection_name", DataType::Utf8),
        field("table_schema", DataType::Utf8),
        field("table_name", DataType::Utf8),
        field("table_type", DataType::Utf8),
        field("row_estimate", DataType::Int64),
        field("byte_estimate", DataType::Int64),
        field("access_mode", DataType::Utf8),
        field("cached", DataType::Boolean),
        field("cache_rows", DataType::Int64),
        field("cache_bytes", DataType::Int64),
        field("fetched_at", utc()),
        field("cache_version", DataType::Int64),
        field("fetch_count", DataType::Int64),
        field("memory_bytes", DataType::Int64),
    ]))
}

pub(super) async fn rows(connections: &Connections) -> crate::Result<Vec<ArrayRef>> {
    let (mut ids, mut names, mut schemas, mut tables, mut kinds) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut estimate, mut cached, mut rows, mut bytes, mut fetched) =
        (vec![], vec![], vec![], vec![], vec![]);
    let (mut version, mut count, mut memory) = (vec![], vec![], vec![]);
    let (mut byte_estimate, mut mode) = (vec![], vec![]);
    let cache = connections.cache();
    for c in connections.connections().await? {
        let entries = connections.cache_entries(&c).await?;
        let access = CommonOptions::access_of(c.source_type, &c.config);
        for t in connections.tables(&c).await? {
            let entry = t.current_entry(&entries);
            ids.push(Some(c.id.to_string()));
            names.push(Some(c.name.to_string()));
            schemas.push(Some(t.schema.clone()));
            tables.push(Some(t.name.clone()));
            kinds.push(Some(t.table_type.clone()));
            estimate.push(t.row_estimate);
            byte_estimate.push(t.byte_estimate);
            mode.push(Some(t.options.mode(&access).to_string()));
            cached.push(Some(entry.is_some()));
            rows.push(entry.map(|e| e.row_count));
            bytes.push(entry.map(|e| e.byte_size));
            fetched.push(entry.map(|e| e.fetched_at));
            version.push(entry.map(|e| e.version));
            count.push(Some(t.fetch_count));
            memory.push(entry.map(|e| cache.resident_bytes(e) as i64));
        }
    }
    Ok(vec![
        strings(ids),
        strings(names),
        strings(schemas),
        strings(tables),
        strings(kinds),
        ints(estimate),
        ints(byte_estimate),
        strings(mode),
        Arc::new(BooleanArray::from(cached)),
        ints(rows),
        ints(bytes),
        times(fetched),
        ints(version),
        ints(count),
        ints(memory),
    ])
}
