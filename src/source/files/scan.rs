//! DataFusion scans of a table's recorded files: the format with its parse options, each
//! file with its partition values, files pruned by filters on partition columns.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::common::stats::Precision;
use datafusion::common::{DFSchema, ScalarValue, Statistics};
use datafusion::datasource::file_format::FileFormat as DataFusionFormat;
use datafusion::datasource::file_format::arrow::ArrowFormat;
use datafusion::datasource::file_format::csv::CsvFormat;
use datafusion::datasource::file_format::file_compression_type::FileCompressionType;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::CachedParquetFileReaderFactory;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::datasource::table_schema::TableSchema;
use datafusion::error::Result;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;

use crate::file_set::{Compression, FileEntry, FileFormat, FileSet};

/// DataFusion's name for `set`'s compression.
pub fn compression(set: &FileSet) -> FileCompressionType {
    match set.compression {
        Compression::None => FileCompressionType::UNCOMPRESSED,
        Compression::Gzip => FileCompressionType::GZIP,
        Compression::Zstd => FileCompressionType::ZSTD,
    }
}

/// The DataFusion format that reads `set`'s files; `sample_rows` bounds schema inference.
pub fn format(set: &FileSet, sample_rows: usize) -> Arc<dyn DataFusionFormat> {
    let compression = compression(set);
    match set.format {
        FileFormat::Parquet => Arc::new(ParquetFormat::default()),
        FileFormat::Arrow => Arc::new(ArrowFormat),
        FileFormat::Csv => Arc::new(
            CsvFormat::default()
                .with_has_header(set.csv.header)
                .with_delimiter(set.csv.delimiter as u8)
                .with_quote(set.csv.quote as u8)
                .with_null_regex(Some(null_regex(set.csv.null_string.as_deref())))
                .with_file_compression_type(compression)
                .with_schema_infer_max_rec(sample_rows)
                // Quoted fields may hold line breaks: a file is not split at arbitrary
                // newlines, which would cut such a record in two.
                .with_newlines_in_values(true),
        ),
        FileFormat::Ndjson | FileFormat::Json => Arc::new(
            JsonFormat::default()
                .with_file_compression_type(compression)
                .with_schema_infer_max_rec(sample_rows)
                .with_newline_delimited(set.format == FileFormat::Ndjson),
        ),
    }
}

/// An empty field is NULL, and so is the `null_string`, matched whole.
fn null_regex(null_string: Option<&str>) -> String {
    match null_string {
        None => "^$".to_owned(),
        Some(text) => {
            let mut escaped = String::new();
            for c in text.chars() {
                if "\\.+*?()|[]{}^$#&-~".contains(c) {
                    escaped.push('\\');
                }
                escaped.push(c);
            }
            format!("^(|{escaped})$")
        }
    }
}

/// The partition columns of `set` as Arrow fields.
pub fn partition_fields(set: &FileSet) -> Vec<FieldRef> {
    set.partition_columns
        .iter()
        .map(|c| Arc::new(Field::new(&c.name, partition_type(&c.arrow_type), true)))
        .collect()
}

fn partition_type(arrow_type: &str) -> DataType {
    if arrow_type == "Int64" {
        DataType::Int64
    } else {
        DataType::Utf8
    }
}

/// The file columns of `schema`, the table's schema (file columns, then partition columns).
pub fn file_schema(set: &FileSet, schema: &Schema) -> SchemaRef {
    let keep = schema.fields().len() - set.partition_columns.len().min(schema.fields().len());
    Arc::new(Schema::new(schema.fields()[..keep].to_vec()))
}

/// `file` as DataFusion scans it, with its typed partition values.
pub fn partitioned_file(set: &FileSet, file: &FileEntry) -> PartitionedFile {
    let values = set
        .partition_columns
        .iter()
        .zip(&file.partition_values)
        .map(
            |(column, value)| match (partition_type(&column.arrow_type), value) {
                (DataType::Int64, Some(v)) => ScalarValue::Int64(v.parse().ok()),
                (DataType::Int64, None) => ScalarValue::Int64(None),
                (_, v) => ScalarValue::Utf8(v.clone()),
            },
        )
        .collect();
    PartitionedFile::new(file.path.clone(), file.size).with_partition_values(values)
}

/// What the footers said of `files` (their rows, when each file's count is known) and
/// their size, over the table's columns.
fn statistics(schema: &Schema, set: &FileSet, files: &[PartitionedFile]) -> Statistics {
    let mut statistics = Statistics::new_unknown(schema);
    let rows = files.iter().map(|f| {
        set.files
            .iter()
            .find(|e| e.path == f.object_meta.location.as_ref())
            .and_then(|e| e.rows)
    });
    statistics.num_rows = match rows.sum::<Option<u64>>() {
        Some(rows) => Precision::Exact(rows as usize),
        None => Precision::Absent,
    };
    statistics.total_byte_size =
        Precision::Inexact(files.iter().map(|f| f.object_meta.size as usize).sum());
    statistics
}

/// The files of `set` that `filters` (those on partition columns only) can match.
pub fn prune(set: &FileSet, filters: &[Expr]) -> Result<Vec<PartitionedFile>> {
    let names: Vec<&str> = set
        .partition_columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let applicable: Vec<Expr> = filters
        .iter()
        .filter(|f| {
            !names.is_empty()
                && datafusion::datasource::listing::helpers::expr_applicable_for_cols(&names, f)
        })
        .cloned()
        .collect();
    let files = set.files.iter().map(|f| partitioned_file(set, f));
    if applicable.is_empty() {
        return Ok(files.collect());
    }
    let schema = DFSchema::try_from(Schema::new(partition_fields(set)))?;
    let mut kept = Vec::new();
    for file in files {
        if let Some(file) = datafusion::datasource::listing::helpers::filter_partitioned_file(
            file,
            &applicable,
            &schema,
        )? {
            kept.push(file);
        }
    }
    Ok(kept)
}

/// Whether `filter` is answered whole by pruning files (it reads partition columns only).
pub fn prunes_exactly(set: &FileSet, filter: &Expr) -> bool {
    let names: Vec<&str> = set
        .partition_columns
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    !names.is_empty()
        && datafusion::datasource::listing::helpers::expr_applicable_for_cols(&names, filter)
}

/// What an in-place or fetch scan reads: a table's files in a store.
pub struct Scan<'a> {
    /// Where DataFusion finds the store.
    pub store_url: &'a ObjectStoreUrl,
    /// The table's recorded files and format.
    pub set: &'a FileSet,
    /// The table's schema (partition columns last).
    pub schema: &'a Schema,
    /// The connection named by Parquet read errors that say which file failed and what to
    /// do; `None` leaves DataFusion's errors as they are.
    pub explained_for: Option<&'a str>,
}

impl Scan<'_> {
    /// The DataFusion plan reading `files` (some of the set's), with `projection` and
    /// `limit`, and statistics from what discovery recorded.
    pub async fn plan(
        &self,
        state: &dyn Session,
        files: Vec<PartitionedFile>,
        projection: Option<Vec<usize>>,
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (set, schema) = (self.set, self.schema);
        let format = format(set, super::config::DEFAULT_SAMPLE_ROWS);
        let statistics = statistics(schema, set, &files);
        let table_schema = TableSchema::builder(file_schema(set, schema))
            .with_table_partition_cols(partition_fields(set))
            .build();
        let groups = state
            .config()
            .target_partitions()
            .max(1)
            .min(files.len().max(1));
        let mut file_groups: Vec<Vec<PartitionedFile>> = vec![Vec::new(); groups];
        for (i, file) in files.into_iter().enumerate() {
            file_groups[i % groups].push(file);
        }
        let explained = match (set.format, self.explained_for) {
            (FileFormat::Parquet, Some(connection)) => {
                Some(self.explained_source(state, table_schema.clone(), connection)?)
            }
            _ => None,
        };
        let source = explained
            .clone()
            .unwrap_or_else(|| format.file_source(table_schema));
        let config = FileScanConfigBuilder::new(self.store_url.clone(), source)
            .with_file_groups(file_groups.into_iter().map(FileGroup::new).collect())
            .with_statistics(statistics)
            .with_projection_indices(projection)?
            .with_limit(limit)
            .build();
        match explained {
            // What `ParquetFormat::create_physical_plan` does, with the readers wrapped
            // (it would replace them).
            Some(_) => Ok(DataSourceExec::from_data_source(config)),
            None => format.create_physical_plan(state, config).await,
        }
    }

    /// A Parquet source reading through the footer cache, its errors explained.
    fn explained_source(
        &self,
        state: &dyn Session,
        table_schema: TableSchema,
        connection: &str,
    ) -> Result<Arc<dyn datafusion::datasource::physical_plan::FileSource>> {
        let runtime = state.runtime_env();
        let store = runtime.object_store(self.store_url)?;
        let cached = Arc::new(CachedParquetFileReaderFactory::new(
            Arc::clone(&store),
            runtime.cache_manager.get_file_metadata_cache(),
        ));
        // The options `ParquetFormat::default()` gives, as the other formats' plans have.
        let format = ParquetFormat::default();
        let mut source = ParquetSource::new(table_schema)
            .with_table_parquet_options(format.options().clone())
            .with_parquet_file_reader_factory(Arc::new(super::explained::ExplainedReaders {
                inner: cached,
                store,
                connection: connection.to_owned(),
            }));
        if let Some(hint) = format.metadata_size_hint() {
            source = source.with_metadata_size_hint(hint);
        }
        Ok(Arc::new(source))
    }
}
