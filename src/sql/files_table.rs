//! A table of a `files` connection read in place: its recorded files scanned with
//! DataFusion's readers (Parquet row-group and page pruning, projection), files pruned by
//! filters on hive partition columns, nothing copied.

use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableProvider};
use datafusion::datasource::TableType;
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;

use crate::file_set::FileSet;
use crate::source::Source;

/// A files table read in place.
#[derive(Debug)]
pub(super) struct FilesTable {
    source: Arc<dyn Source>,
    set: FileSet,
    schema: SchemaRef,
}

impl FilesTable {
    /// The table whose recorded files are `set` and schema `schema`, in `source`'s store.
    pub(super) fn new(source: Arc<dyn Source>, set: FileSet, schema: SchemaRef) -> Self {
        FilesTable {
            source,
            set,
            schema,
        }
    }
}

#[async_trait]
impl TableProvider for FilesTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        // Filters on partition columns are answered whole by choosing files; the rest also
        // prune row groups and pages, but rows are still filtered above the scan.
        Ok(filters
            .iter()
            .map(|f| {
                if crate::source::files::prunes_exactly(&self.set, f) {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Inexact
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let files_source = self.source.files().ok_or_else(|| {
            DataFusionError::Internal("a files table whose source reads no files".into())
        })?;
        let files = crate::source::files::prune(&self.set, filters)?;
        // A limit applies to the rows that pass every filter: only pushed when all were
        // answered by pruning.
        let exact = filters
            .iter()
            .all(|f| crate::source::files::prunes_exactly(&self.set, f));
        files_source
            .scan(
                state,
                &self.set,
                &self.schema,
                files,
                projection.cloned(),
                if exact { limit } else { None },
            )
            .await
    }
}
