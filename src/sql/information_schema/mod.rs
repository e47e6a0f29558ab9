//! `quarry.information_schema`: one view per file (`connections`, `tables` with cache
//! state, `columns`, `key_column_usage`, `audit_log`), also reachable as `quarry.catalog.*`. Each is read from the metadata
//! store when a query scans it. No config and no secret is ever shown.

mod audit_log;
mod columns;
mod connections;
mod key_column_usage;
mod tables;

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use datafusion::arrow::array::{ArrayRef, Int64Array, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::datatypes::{DataType, Field, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, Session};
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::connections::Connections;

/// The views, by the name a query uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum View {
    /// `connections`: one row per connection, with its last test.
    Connections,
    /// `tables`: one row per discovered table, with its cache and memory state.
    Tables,
    /// `columns`: one row per discovered column.
    Columns,
    /// `key_column_usage`: one row per column of each discovered key, constraint and index.
    KeyColumnUsage,
    /// `audit_log`: one row per connection operation, newest first.
    AuditLog,
}

impl View {
    /// Every view.
    pub const ALL: [View; 5] = [
        View::Connections,
        View::Tables,
        View::Columns,
        View::KeyColumnUsage,
        View::AuditLog,
    ];

    /// The name a query uses.
    pub fn name(self) -> &'static str {
        match self {
            View::Connections => "connections",
            View::Tables => "tables",
            View::Columns => "columns",
            View::KeyColumnUsage => "key_column_usage",
            View::AuditLog => "audit_log",
        }
    }

    /// The view called `name`.
    pub fn named(name: &str) -> Option<View> {
        View::ALL.into_iter().find(|v| v.name() == name)
    }

    fn schema(self) -> SchemaRef {
        match self {
            View::Connections => connections::schema(),
            View::Tables => tables::schema(),
            View::Columns => columns::schema(),
            View::KeyColumnUsage => key_column_usage::schema(),
            View::AuditLog => audit_log::schema(),
        }
    }

    async fn rows(self, connections: &Connections) -> crate::Result<Vec<ArrayRef>> {
        match self {
            View::Connections => connections::rows(connections).await,
            View::Tables => tables::rows(connections).await,
            View::Columns => columns::rows(connections).await,
            View::KeyColumnUsage => key_column_usage::rows(connections).await,
            View::AuditLog => audit_log::rows(connections).await,
        }
    }
}

/// The schema holding the views.
#[derive(Debug)]
pub(crate) struct InformationSchema {
    pub(crate) connections: Arc<Connections>,
}

#[async_trait]
impl SchemaProvider for InformationSchema {
    fn table_names(&self) -> Vec<String> {
        View::ALL.iter().map(|v| v.name().to_owned()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        Ok(View::named(name).map(|view| {
            Arc::new(ViewTable {
                view,
                connections: Arc::clone(&self.connections),
                actor: crate::audit::Actor::current(),
            }) as Arc<dyn TableProvider>
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        View::named(name).is_some()
    }
}

/// One view as a table: its rows are read when the scan is planned, as the user who named
/// it sees them (whichever task plans the scan).
struct ViewTable {
    view: View,
    connections: Arc<Connections>,
    actor: crate::audit::Actor,
}

impl fmt::Debug for ViewTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "quarry.information_schema.{}", self.view.name())
    }
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        self.view.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let columns = self
            .actor
            .clone()
            .scope(self.view.rows(&self.connections))
            .await
            .map_err(super::deferred::external)?;
        let batch = RecordBatch::try_new(self.schema(), columns)?;
        MemTable::try_new(self.schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

fn field(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, true)
}

fn utc() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn strings<I: IntoIterator<Item = Option<String>>>(values: I) -> ArrayRef {
    Arc::new(StringArray::from_iter(values))
}

fn ints<I: IntoIterator<Item = Option<i64>>>(values: I) -> ArrayRef {
    Arc::new(Int64Array::from_iter(values))
}

fn times<I: IntoIterator<Item = Option<DateTime<Utc>>>>(values: I) -> ArrayRef {
    Arc::new(
        TimestampMicrosecondArray::from_iter(
            values.into_iter().map(|t| t.map(|t| t.timestamp_micros())),
        )
        .with_timezone("UTC"),
    )
}
