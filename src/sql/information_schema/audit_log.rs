//! `quarry.information_schema.audit_log`: the connection operations recorded in the store,
//! newest first: who, what, when and the outcome. Never a config or a secret.

use std::sync::Arc;

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::{DataType, Schema, SchemaRef};

use super::{field, strings, times, utc};
use crate::connections::Connections;

/// The most rows the view shows; the REST API pages further.
const ROWS: i64 = 10_000;

pub(super) fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        field("at", utc()),
        field("actor", DataType::Utf8),
        field("action", DataType::Utf8),
        field("connection_id", DataType::Utf8),
        field("connection_name", DataType::Utf8),
        field("outcome", DataType::Utf8),
        field("detail", DataType::Utf8),
    ]))
}

pub(super) async fn rows(connections: &Connections) -> crate::Result<Vec<ArrayRef>> {
    let log = connections.audit_log(ROWS).await?;
    Ok(vec![
        times(log.iter().map(|r| Some(r.at))),
        strings(log.iter().map(|r| Some(r.actor.clone()))),
        strings(log.iter().map(|r| Some(r.action.clone()))),
        strings(
            log.iter()
                .map(|r| r.connection_id.as_ref().map(|id| id.to_string())),
        ),
        strings(log.iter().map(|r| Some(r.connection_name.clone()))),
        strings(log.iter().map(|r| Some(r.outcome.clone()))),
        strings(log.iter().map(|r| r.detail.clone())),
    ])
}
