//! Parquet readers for in-place scans whose errors name the file and say what to do: a
//! file removed since discovery, or one whose size is no longer the one discovery recorded
//! (rewritten). A failed read asks the store what the file is now, so the cause is told by
//! the file's state, not by the error's text. DataFusion's own reader (with its footer
//! cache) does the work.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::ParquetFileReaderFactory;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::{ParquetError, Result};
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};

/// Wraps the readers `inner` makes for the files of connection `connection` in `store`.
#[derive(Debug)]
pub(super) struct ExplainedReaders {
    pub(super) inner: Arc<dyn ParquetFileReaderFactory>,
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) connection: String,
}

impl ParquetFileReaderFactory for ExplainedReaders {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::error::Result<Box<dyn AsyncFileReader + Send>> {
        let (location, recorded_size) = (file.object_meta.location.clone(), file.object_meta.size);
        let inner = self
            .inner
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(ExplainedReader {
            inner,
            file: Arc::new(FileAsRecorded {
                store: Arc::clone(&self.store),
                location,
                recorded_size,
                connection: self.connection.clone(),
            }),
        }))
    }
}

struct ExplainedReader {
    inner: Box<dyn AsyncFileReader + Send>,
    file: Arc<FileAsRecorded>,
}

/// A file as discovery recorded it, to explain a failed read.
struct FileAsRecorded {
    store: Arc<dyn ObjectStore>,
    location: Path,
    /// The size discovery recorded, which the reader trusts.
    recorded_size: u64,
    connection: String,
}

impl FileAsRecorded {
    /// `error` in the user's terms, after looking at the file as it is now.
    async fn explain(&self, error: ParquetError) -> ParquetError {
        let (path, connection) = (&self.location, &self.connection);
        ParquetError::General(match self.store.head(path).await {
            Err(object_store::Error::NotFound { .. }) => {
                removed_after_discovery(path.as_ref(), connection)
            }
            Ok(now) if now.size != self.recorded_size => format!(
                "file '{path}' changed after discovery ({} bytes then, {} now); run \
                 discover_connection('{connection}') to pick up the change",
                self.recorded_size, now.size
            ),
            _ => format!("cannot read file '{path}' of connection '{connection}': {error}"),
        })
    }
}

/// What to tell the user when file `path` of `connection` is gone since discovery (a
/// fetch says it too).
pub(super) fn removed_after_discovery(path: &str, connection: &str) -> String {
    format!(
        "file '{path}' was removed after discovery; run discover_connection('{connection}') \
         to pick up the change"
    )
}

/// `read` of `file`, with its error explained.
fn explained<'a, T: Send + 'a>(
    file: Arc<FileAsRecorded>,
    read: BoxFuture<'a, Result<T>>,
) -> BoxFuture<'a, Result<T>> {
    async move {
        match read.await {
            Ok(value) => Ok(value),
            Err(e) => Err(file.explain(e).await),
        }
    }
    .boxed()
}

impl AsyncFileReader for ExplainedReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        explained(Arc::clone(&self.file), self.inner.get_bytes(range))
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>>> {
        explained(Arc::clone(&self.file), self.inner.get_byte_ranges(ranges))
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>>> {
        explained(Arc::clone(&self.file), self.inner.get_metadata(options))
    }
}
