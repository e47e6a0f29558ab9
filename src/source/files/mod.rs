//! `files` connections: a local folder, an S3-compatible bucket or one HTTP(S) file,
//! through `object_store`. Discovery lists the files and makes tables of them
//! (`layout.rs`), reading schemas from Parquet and Arrow footers or a sample of CSV and
//! JSON rows; a fetch reads a table's recorded files with DataFusion's readers
//! (`scan.rs`), or row by row where bad rows are skipped or must be found
//! (`bad_rows.rs`).

mod bad_rows;
mod config;
mod explained;
mod layout;
mod scan;
mod store;

pub use config::{
    CONFIG_KEYS, DEFAULT_SAMPLE_ROWS, DeclaredTable, FilesConfig, LOCATION_KEYS, ParseOptions,
    S3Options, SECRET_KEYS,
};
pub use scan::{prune, prunes_exactly};

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::error::DataFusionError;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::{SessionConfig, SessionContext};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use tokio::sync::mpsc;

use super::{FetchRequest, QueryRequest, Source, TestOutcome};
use crate::error::{Error, FailureClass, Result};
use crate::file_set::{FileEntry, FileSet};
use crate::table::{ColumnRecord, TableRecord, schema_to_json};
use layout::Listed;
use store::RootedStore;

/// The schema every table of a files connection is in.
pub const SCHEMA: &str = "main";

/// A folder, bucket or HTTP file as a source.
pub struct FilesSource {
    connection: String,
    config: FilesConfig,
    root: RootedStore,
    /// Reads files: the store registered under its URL.
    context: SessionContext,
}

impl std::fmt::Debug for FilesSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FilesSource")
            .field("connection", &self.connection)
            .field("url", &self.config.url.as_str())
            .finish_non_exhaustive()
    }
}

impl FilesSource {
    /// Opens the store of `config` (no request is made yet).
    pub fn new(connection: &str, config: &FilesConfig) -> Result<Self> {
        let root = store::open(connection, config)?;
        let context = SessionContext::new_with_config(SessionConfig::new());
        context.register_object_store(root.url.as_ref(), Arc::clone(&root.store));
        Ok(FilesSource {
            connection: connection.to_owned(),
            config: config.clone(),
            root,
            context,
        })
    }

    /// The URL DataFusion finds this connection's store under.
    pub fn store_url(&self) -> &ObjectStoreUrl {
        &self.root.url
    }

    /// The store, rooted at the connection's folder or prefix.
    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        Arc::clone(&self.root.store)
    }

    /// A failed listing, classified (see `RootedStore::listing_failure`).
    async fn listing_error(&self, e: &object_store::Error) -> Error {
        let class = self.root.listing_failure(classify(e)).await;
        self.classified_error("listing", e, class)
    }

    /// A failure of the store, classified as database connection failures are.
    fn store_error(&self, doing: &str, e: &object_store::Error) -> Error {
        self.classified_error(doing, e, classify(e))
    }

    fn classified_error(&self, doing: &str, e: &object_store::Error, class: FailureClass) -> Error {
        let advice = match class {
            FailureClass::NoDatabase => ": check the url (the bucket or folder may not exist)",
            FailureClass::Authentication => {
                ": check access_key_id and secret_access_key, and the bucket's policy"
            }
            FailureClass::Refused => ": check the endpoint and that the server is running",
            _ => "",
        };
        Error::Source {
            connection: self.connection.clone(),
            class,
            message: format!(
                "{doing} {} failed{advice}: {}",
                self.config.url,
                first_line(&e.to_string())
            ),
        }
    }

    /// Every file under the root (or the one file the URL names).
    async fn list(&self) -> Result<Vec<Listed>> {
        let store = &self.root.store;
        let listed = |meta: ObjectMeta| Listed {
            path: meta.location.to_string(),
            size: meta.size,
            modified_ms: meta.last_modified.timestamp_millis(),
            etag: meta.e_tag,
        };
        if let Some(file) = &self.root.single_file {
            let meta = store
                .head(file)
                .await
                .map_err(|e| self.store_error("reading", &e))?;
            return Ok(vec![listed(meta)]);
        }
        let metas: Vec<ObjectMeta> = match store.list(None).try_collect().await {
            Ok(metas) => metas,
            Err(e) => return Err(self.listing_error(&e).await),
        };
        Ok(metas.into_iter().map(listed).collect())
    }

    /// The table `planned` with its schema read from its files.
    async fn describe_table(&self, mut planned: layout::PlannedTable) -> Result<TableRecord> {
        let sample = planned.parse.sample_rows.unwrap_or(DEFAULT_SAMPLE_ROWS);
        let format = scan::format(&planned.set, sample);
        let objects: Vec<ObjectMeta> = planned
            .set
            .files
            .iter()
            .map(|f| ObjectMeta {
                location: object_store::path::Path::from(f.path.as_str()),
                last_modified: chrono::DateTime::from_timestamp_millis(f.modified_ms)
                    .unwrap_or_default(),
                size: f.size,
                e_tag: f.etag.clone(),
                version: None,
            })
            .collect();
        let state = self.context.state();
        let what = format!(
            "table '{}' ({} files, {})",
            planned.name,
            planned.set.files.len(),
            planned.set.format.as_str()
        );
        let failed = |e: DataFusionError| Error::Source {
            connection: self.connection.clone(),
            class: FailureClass::Other,
            message: format!(
                "cannot read the schema of {what}: {}",
                first_line(&e.to_string())
            ),
        };
        let inferred = format
            .infer_schema(&state, &self.root.store, &objects)
            .await
            .map_err(failed)?;
        // Row counts from the footers, which join planning uses to choose build sides.
        if planned.set.format == crate::file_set::FileFormat::Parquet {
            for (file, object) in planned.set.files.iter_mut().zip(&objects) {
                let stats = format
                    .infer_stats(&state, &self.root.store, Arc::clone(&inferred), object)
                    .await
                    .map_err(failed)?;
                file.rows = stats.num_rows.get_value().map(|n| *n as u64);
            }
        }
        let mut fields: Vec<Field> = inferred
            .fields()
            .iter()
            .map(|f| {
                let field = f
                    .as_ref()
                    .clone()
                    .with_nullable(true)
                    .with_metadata(Default::default());
                match planned
                    .schema_override
                    .iter()
                    .find(|(name, _)| name == f.name())
                {
                    Some((_, data_type)) => field.with_data_type(data_type.clone()),
                    None => field,
                }
            })
            .collect();
        for (name, _) in &planned.schema_override {
            if !fields.iter().any(|f| f.name() == name) {
                return Err(Error::config(
                    "files",
                    format!(
                        "table '{}': 'schema' names the column '{name}', which its files do \
                         not have; they have {}",
                        planned.name,
                        fields
                            .iter()
                            .map(|f| f.name().as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        }
        fields.extend(
            scan::partition_fields(&planned.set)
                .iter()
                .map(|f| f.as_ref().clone()),
        );
        let columns = fields
            .iter()
            .zip(1..)
            .map(|(f, position)| ColumnRecord {
                name: f.name().clone(),
                ordinal_position: position,
                source_type: f.data_type().to_string(),
                numeric_precision: None,
                numeric_scale: None,
                is_nullable: true,
                arrow_type: f.data_type().to_string(),
            })
            .collect();
        Ok(TableRecord {
            schema: SCHEMA.to_owned(),
            name: planned.name,
            table_type: "table".to_owned(),
            row_estimate: None,
            byte_estimate: Some(planned.set.total_bytes() as i64),
            options: Default::default(),
            arrow_schema: Some(schema_to_json(&Schema::new(fields))),
            discovered_at: chrono::Utc::now(),
            fetch_count: 0,
            columns,
            constraints: Vec::new(),
            refresh: Default::default(),
            files: Some(planned.set),
        })
    }

    /// A scan of `files` of `set` (table schema `schema`) in `state`'s session.
    pub async fn scan(
        &self,
        state: &dyn datafusion::catalog::Session,
        set: &FileSet,
        schema: &Schema,
        files: Vec<datafusion::datasource::listing::PartitionedFile>,
        projection: Option<Vec<usize>>,
        limit: Option<usize>,
    ) -> datafusion::error::Result<Arc<dyn ExecutionPlan>> {
        let scan = scan::Scan {
            store_url: &self.root.url,
            set,
            schema,
            // In place, errors name the file and the connection to discover again.
            explained_for: Some(&self.connection),
        };
        scan.plan(state, files, projection, limit).await
    }

    /// Reads one file into `sink` with DataFusion's reader; returns false if the sink closed.
    async fn read_file(
        &self,
        set: &FileSet,
        file: &FileEntry,
        request: &FetchRequest,
        sink: &mpsc::Sender<RecordBatch>,
    ) -> datafusion::error::Result<bool> {
        let state = self.context.state();
        let scan = scan::Scan {
            store_url: &self.root.url,
            set,
            schema: &request.arrow_schema,
            // A fetch explains its errors itself, knowing the file it reads.
            explained_for: None,
        };
        let plan = scan
            .plan(&state, vec![scan::partitioned_file(set, file)], None, None)
            .await?;
        let plan = plan
            .repartitioned(state.config().target_partitions(), state.config_options())?
            .unwrap_or(plan);
        let task = self.context.task_ctx();
        let partitions = plan.properties().output_partitioning().partition_count();
        let readers = (0..partitions).map(|partition| {
            let plan = Arc::clone(&plan);
            let task = Arc::clone(&task);
            let schema = Arc::clone(&request.arrow_schema);
            let sink = sink.clone();
            async move {
                let mut stream = plan.execute(partition, task)?;
                while let Some(batch) = stream.next().await {
                    let batch =
                        RecordBatch::try_new(Arc::clone(&schema), batch?.columns().to_vec())?;
                    if sink.send(batch).await.is_err() {
                        return Ok(false);
                    }
                }
                Ok::<_, DataFusionError>(true)
            }
        });
        let results = futures::future::join_all(readers).await;
        let mut open = true;
        for result in results {
            open &= result?;
        }
        Ok(open)
    }

    /// Reads one file row by row (see `bad_rows`).
    async fn read_rows(
        &self,
        set: &FileSet,
        file: &FileEntry,
        request: &FetchRequest,
        sink: &mpsc::Sender<RecordBatch>,
    ) -> Result<bad_rows::Outcome> {
        let path = object_store::path::Path::from(file.path.as_str());
        let got = self
            .root
            .store
            .get(&path)
            .await
            .map_err(|e| self.file_error(request, file, &e))?;
        let raw = got
            .into_stream()
            .map_err(|e| DataFusionError::ObjectStore(Box::new(e)))
            .boxed();
        let bytes = scan::compression(set)
            .convert_stream(raw)
            .map_err(|e| request.error(None, e))?
            .map_err(std::io::Error::other)
            .boxed();
        let values = scan::partitioned_file(set, file).partition_values;
        bad_rows::read(
            set,
            Arc::clone(&request.arrow_schema),
            values,
            bytes,
            sink.clone(),
        )
        .await
        .map_err(|e| {
            request.error(
                None,
                format!(
                    "cannot read file '{}': {}",
                    file.path,
                    first_line(&e.to_string())
                ),
            )
        })
    }

    /// A fetch error about `file` from the store.
    fn file_error(
        &self,
        request: &FetchRequest,
        file: &FileEntry,
        e: &object_store::Error,
    ) -> Error {
        match e {
            object_store::Error::NotFound { .. } => request.error(
                None,
                explained::removed_after_discovery(&file.path, &self.connection),
            ),
            other => self.store_error(&format!("reading file '{}' of", file.path), other),
        }
    }

    /// The fetch error for a failed fast read of `file`, finding the bad row of a text file.
    async fn read_error(
        &self,
        set: &FileSet,
        file: &FileEntry,
        request: &FetchRequest,
        e: DataFusionError,
    ) -> Error {
        if let Some(store_error) = find_store_error(&e) {
            return self.file_error(request, file, store_error);
        }
        if !set.format.is_columnar() {
            // Find the row: read the file again, row by row, into a sink nobody reads.
            let (sender, mut receiver) = mpsc::channel(4);
            let drain = tokio::spawn(async move { while receiver.recv().await.is_some() {} });
            let strict = FileSet {
                bad_rows: crate::file_set::BadRows::Fail,
                ..set.clone()
            };
            let located = self.read_rows(&strict, file, request, &sender).await;
            drop(sender);
            let _ = drain.await;
            match located {
                Ok(bad_rows::Outcome::Bad(row)) => return bad_row_error(request, file, &row),
                Err(located) => return located,
                _ => {}
            }
        }
        let message = first_line(&e.to_string());
        let mismatch = matches!(
            e.find_root(),
            DataFusionError::ArrowError(inner, _)
                if matches!(**inner, datafusion::arrow::error::ArrowError::CastError(_)
                    | datafusion::arrow::error::ArrowError::SchemaError(_))
        ) || matches!(
            e.find_root(),
            DataFusionError::Plan(_) | DataFusionError::SchemaError(..)
        );
        if mismatch {
            request.error(
                None,
                format!(
                    "file '{}' no longer matches the table's columns ({message}); run \
                     discover_connection('{}') to read its new schema",
                    file.path, self.connection
                ),
            )
        } else {
            request.error(
                None,
                format!(
                    "cannot read file '{}' as {}: {message}",
                    file.path,
                    set.format.as_str()
                ),
            )
        }
    }
}

fn bad_row_error(request: &FetchRequest, file: &FileEntry, row: &bad_rows::BadRow) -> Error {
    let column = row
        .column
        .as_ref()
        .map(|c| format!(", column '{c}'"))
        .unwrap_or_default();
    request.error(
        None,
        format!(
            "file '{}', line {}{column}: {}; set bad_rows = 'skip' on the connection to leave \
             such rows out",
            file.path, row.line, row.problem
        ),
    )
}

/// The store error inside `e`, if the failure was the store's.
fn find_store_error(e: &DataFusionError) -> Option<&object_store::Error> {
    match e {
        DataFusionError::ObjectStore(inner) => Some(inner),
        DataFusionError::Context(_, inner) => find_store_error(inner),
        DataFusionError::Shared(inner) => find_store_error(inner),
        DataFusionError::External(inner) => {
            inner.downcast_ref::<object_store::Error>().or_else(|| {
                inner
                    .downcast_ref::<DataFusionError>()
                    .and_then(find_store_error)
            })
        }
        DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
            datafusion::arrow::error::ArrowError::ExternalError(inner) => {
                inner.downcast_ref::<object_store::Error>()
            }
            _ => None,
        },
        DataFusionError::ParquetError(inner) => match inner.as_ref() {
            datafusion::parquet::errors::ParquetError::External(inner) => {
                inner.downcast_ref::<object_store::Error>()
            }
            _ => None,
        },
        _ => None,
    }
}

/// What a store failure means for the user.
fn classify(e: &object_store::Error) -> FailureClass {
    match e {
        object_store::Error::NotFound { .. } => FailureClass::NoDatabase,
        object_store::Error::PermissionDenied { .. }
        | object_store::Error::Unauthenticated { .. } => FailureClass::Authentication,
        _ => {
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
            while let Some(inner) = source {
                if let Some(http) = inner.downcast_ref::<object_store::client::HttpError>() {
                    return match http.kind() {
                        object_store::client::HttpErrorKind::Connect => FailureClass::Refused,
                        object_store::client::HttpErrorKind::Timeout => FailureClass::Timeout,
                        object_store::client::HttpErrorKind::Interrupted => FailureClass::Reset,
                        _ => FailureClass::Other,
                    };
                }
                if let Some(io) = inner.downcast_ref::<std::io::Error>() {
                    return match io.kind() {
                        std::io::ErrorKind::NotFound => FailureClass::NoDatabase,
                        std::io::ErrorKind::PermissionDenied => FailureClass::Authentication,
                        _ => FailureClass::Other,
                    };
                }
                source = inner.source();
            }
            FailureClass::Other
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or_default().to_owned()
}

#[async_trait]
impl Source for FilesSource {
    async fn test(&self) -> Result<TestOutcome> {
        let start = Instant::now();
        let store = &self.root.store;
        match &self.root.single_file {
            Some(file) => {
                store
                    .head(file)
                    .await
                    .map_err(|e| self.store_error("reading", &e))?;
            }
            None => {
                let mut listing = store.list(None);
                if let Some(Err(e)) = listing.next().await {
                    return Err(self.listing_error(&e).await);
                }
            }
        }
        let what = match self.config.url.scheme() {
            "s3" => "S3 bucket",
            "file" => "local folder",
            _ => "HTTP file",
        };
        Ok(TestOutcome {
            server_version: format!("{what} {}", self.config.url),
            latency: start.elapsed(),
        })
    }

    async fn discover(&self) -> Result<Vec<TableRecord>> {
        let listed = self.list().await?;
        let single = self.root.single_file.as_ref().map(|p| p.to_string());
        let planned = layout::plan(&listed, &self.config, single.as_deref());
        let mut tables = Vec::with_capacity(planned.len());
        for table in planned {
            tables.push(self.describe_table(table).await?);
        }
        tables.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(tables)
    }

    async fn fetch(&self, request: &FetchRequest, sink: mpsc::Sender<RecordBatch>) -> Result<()> {
        let Some(set) = request.files.as_deref() else {
            return Err(request.error(
                None,
                format!(
                    "its files are not recorded; run discover_connection('{}')",
                    self.connection
                ),
            ));
        };
        if request.filter.is_some() {
            return Err(request.error(
                None,
                "files tables refresh in full only; set refresh = 'full' on the table",
            ));
        }
        let row_by_row = set.needs_row_reader();
        for recorded in &set.files {
            // The file as it is now: gone is an error; a rewritten one is read at its new
            // size (its columns are checked as it is read).
            let path = object_store::path::Path::from(recorded.path.as_str());
            let now = self
                .root
                .store
                .head(&path)
                .await
                .map_err(|e| self.file_error(request, recorded, &e))?;
            let current = FileEntry {
                size: now.size,
                ..recorded.clone()
            };
            let file = &current;
            if row_by_row {
                match self.read_rows(set, file, request, &sink).await? {
                    bad_rows::Outcome::Done { skipped } => {
                        request
                            .skipped_rows
                            .fetch_add(skipped, std::sync::atomic::Ordering::Relaxed);
                    }
                    bad_rows::Outcome::Bad(row) => return Err(bad_row_error(request, file, &row)),
                    bad_rows::Outcome::Abandoned => return Ok(()),
                }
                continue;
            }
            match self.read_file(set, file, request, &sink).await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => return Err(self.read_error(set, file, request, e).await),
            }
        }
        Ok(())
    }

    async fn query(&self, request: &QueryRequest, _sink: mpsc::Sender<RecordBatch>) -> Result<()> {
        Err(Error::Usage(format!(
            "connection '{}' holds files, which have no SQL of their own; query its tables \
             instead",
            request.connection
        )))
    }

    async fn describe(&self, _sql: &str) -> Result<SchemaRef> {
        Err(Error::Usage(format!(
            "connection '{}' holds files, which have no SQL of their own: source_query does \
             not apply; query its tables instead",
            self.connection
        )))
    }

    fn files(&self) -> Option<&FilesSource> {
        Some(self)
    }
}
