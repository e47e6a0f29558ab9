//! `quarry.information_schema.tables`: each discovered table with its cache entry and the
//! bytes it holds in the memory tier, its size estimate, the access mode its queries use
//! (the table's own or its connection's), and its freshness: the refresh mode, what its
//! last refresh did, the age of its copy and its last refresh error.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray};
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};

use super::{field, ints, strings, times, utc};
use crate::connections::{Connections, TableFreshness};
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
        field("cache_files", DataType::Int64),
        field("fetch_count", DataType::Int64),
        field("memory_bytes", DataType::Int64),
        field("refresh_mode", DataType::Utf8),
        field("last_refresh_kind", DataType::Utf8),
        field("last_refresh_at", utc()),
        field("last_refresh_rows", DataType::Int64),
        field("last_refresh_ms", DataType::Int64),
        field("age_seconds", DataType::Int64),
        field("next_refresh_at", utc()),
        field("last_error", DataType::Utf8),
        field("last_error_at", utc()),
        field("file_format", DataType::Utf8),
        field("file_count", DataType::Int64),
        field("skipped_rows", DataType::Int64),
    ]))
}

pub(super) async fn rows(connections: &Connections) -> crate::Result<Vec<ArrayRef>> {
    let cache = connections.cache();
    let mut rows = Vec::new();
    for c in connections.connections().await? {
        let entries = connections.cache_entries(&c).await?;
        let access = CommonOptions::access_of(c.source_type, &c.config);
        for t in connections.tables(&c).await? {
            let entry = t.current_entry(&entries).cloned();
            let fresh = connections.freshness(&c, &t, entry.as_ref());
            let mode = t.options.mode(&access);
            rows.push((c.clone(), t, entry, mode, fresh));
        }
    }
    let column = |f: &dyn Fn(&Row) -> Option<String>| strings(rows.iter().map(f));
    let int = |f: &dyn Fn(&Row) -> Option<i64>| ints(rows.iter().map(f));
    let fresh =
        |f: &dyn Fn(&TableFreshness) -> Option<String>| strings(rows.iter().map(|(.., r)| f(r)));
    let fresh_int =
        |f: &dyn Fn(&TableFreshness) -> Option<i64>| ints(rows.iter().map(|(.., r)| f(r)));
    Ok(vec![
        column(&|(c, ..)| Some(c.id.to_string())),
        column(&|(c, ..)| Some(c.name.to_string())),
        column(&|(_, t, ..)| Some(t.schema.clone())),
        column(&|(_, t, ..)| Some(t.name.clone())),
        column(&|(_, t, ..)| Some(t.table_type.clone())),
        int(&|(_, t, ..)| t.row_estimate),
        int(&|(_, t, ..)| t.byte_estimate),
        column(&|(_, _, _, mode, _)| Some(mode.to_string())),
        Arc::new(BooleanArray::from_iter(
            rows.iter().map(|(_, _, e, ..)| Some(e.is_some())),
        )),
        int(&|(_, _, e, ..)| e.as_ref().map(|e| e.row_count)),
        int(&|(_, _, e, ..)| e.as_ref().map(|e| e.byte_size)),
        times(
            rows.iter()
                .map(|(_, _, e, ..)| e.as_ref().map(|e| e.fetched_at)),
        ),
        int(&|(_, _, e, ..)| e.as_ref().map(|e| e.version)),
        fresh_int(&|r| r.cache_files),
        int(&|(_, t, ..)| Some(t.fetch_count)),
        int(&|(_, _, e, ..)| e.as_ref().map(|e| cache.resident_bytes(e) as i64)),
        fresh(&|r| Some(r.refresh_mode.clone())),
        fresh(&|r| r.last_refresh_kind.clone()),
        times(rows.iter().map(|(.., r)| r.last_refresh_at)),
        fresh_int(&|r| r.last_refresh_rows),
        fresh_int(&|r| r.last_refresh_ms),
        fresh_int(&|r| r.age_seconds),
        times(rows.iter().map(|(.., r)| r.next_refresh_at)),
        fresh(&|r| r.last_error.clone()),
        times(rows.iter().map(|(.., r)| r.last_error_at)),
        column(&|(_, t, ..)| t.files.as_ref().map(|f| f.format.as_str().to_owned())),
        int(&|(_, t, ..)| t.files.as_ref().map(|f| f.files.len() as i64)),
        int(&|(_, _, e, ..)| e.as_ref().map(|e| e.skipped_rows)),
    ])
}

type Row = (
    crate::connection::Connection,
    crate::table::TableRecord,
    Option<crate::table::CacheEntry>,
    crate::access::AccessMode,
    TableFreshness,
);
