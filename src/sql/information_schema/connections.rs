//! `quarry.information_schema.connections`: each connection, its last test and its live
//! status in this process.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};

use super::{field, ints, strings, times, utc};
use crate::connections::Connections;

pub(super) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("id", DataType::Utf8),
        field("name", DataType::Utf8),
        field("source_type", DataType::Utf8),
        field("created_at", utc()),
        field("updated_at", utc()),
        field("last_tested_at", utc()),
        field("test_status", DataType::Utf8),
        field("test_latency_ms", DataType::Int64),
        field("test_error", DataType::Utf8),
        field("status", DataType::Utf8),
        field("status_since", utc()),
        field("status_error", DataType::Utf8),
    ]))
}

pub(super) async fn rows(connections: &Connections) -> crate::Result<Vec<ArrayRef>> {
    let all = connections.connections().await?;
    let live: Vec<_> = all
        .iter()
        .map(|c| connections.connection_status(&c.id))
        .collect();
    Ok(vec![
        strings(all.iter().map(|c| Some(c.id.to_string()))),
        strings(all.iter().map(|c| Some(c.name.to_string()))),
        strings(all.iter().map(|c| Some(c.source_type.to_string()))),
        times(all.iter().map(|c| Some(c.created_at))),
        times(all.iter().map(|c| Some(c.updated_at))),
        times(all.iter().map(|c| c.status.last_tested_at)),
        strings(all.iter().map(|c| c.status.test_status.clone())),
        ints(all.iter().map(|c| c.status.test_latency_ms)),
        strings(all.iter().map(|c| c.status.test_error.clone())),
        strings(live.iter().map(|s| Some(s.state.as_str().to_owned()))),
        times(live.iter().map(|s| Some(s.since))),
        strings(live.iter().map(|s| s.error.clone())),
    ])
}
