//! SQL table functions that manage connections. Each returns one row. The effect happens
//! when the statement executes, never while it is planned: `EXPLAIN SELECT * FROM
//! drop_connection('x')` drops nothing.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl};
use datafusion::common::ScalarValue;
use datafusion::common::project_schema;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use futures::future::BoxFuture;

use super::deferred::{DeferredExec, StreamFactory, external};
use crate::connections::{Connections, Created, RefreshOutcome};

type Effect =
    Arc<dyn Fn(Arc<Connections>) -> BoxFuture<'static, crate::Result<Vec<ArrayRef>>> + Send + Sync>;

/// The management functions, as (name, signature, output columns).
const FUNCTIONS: &[(&str, &str)] = &[
    (
        "create_connection",
        "create_connection(name, source_type, config_json_or_url)",
    ),
    ("test_connection", "test_connection(name_or_id)"),
    ("discover_connection", "discover_connection(name_or_id)"),
    ("refresh_table", "refresh_table('connection.schema.table')"),
    ("refresh_connection", "refresh_connection(name_or_id)"),
    (
        "purge_cache",
        "purge_cache(name_or_id [, schema [, table]])",
    ),
    (
        "rename_connection",
        "rename_connection(name_or_id, new_name)",
    ),
    ("drop_connection", "drop_connection(name_or_id)"),
];

/// Registers every management function in `session`.
pub(crate) fn register(
    session: &datafusion::prelude::SessionContext,
    connections: &Arc<Connections>,
) {
    for (name, signature) in FUNCTIONS {
        session.register_udtf(
            name,
            Arc::new(ManagementFunction {
                name,
                signature,
                connections: Arc::clone(connections),
            }),
        );
    }
}

/// One management function.
struct ManagementFunction {
    name: &'static str,
    signature: &'static str,
    connections: Arc<Connections>,
}

impl fmt::Debug for ManagementFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.signature)
    }
}

fn field(name: &str, data_type: DataType) -> Field {
    Field::new(name, data_type, true)
}

fn text(value: impl Into<String>) -> ArrayRef {
    Arc::new(StringArray::from(vec![Some(value.into())]))
}

fn optional_text(value: Option<String>) -> ArrayRef {
    Arc::new(StringArray::from(vec![value]))
}

fn int(value: i64) -> ArrayRef {
    Arc::new(Int64Array::from(vec![value]))
}

impl ManagementFunction {
    /// The arguments as text, checked against the signature.
    fn args(&self, exprs: &[Expr], min: usize, max: usize) -> Result<Vec<String>> {
        let wrong = |why: String| {
            DataFusionError::Plan(format!("{why}; usage: SELECT * FROM {}", self.signature))
        };
        if exprs.len() < min || exprs.len() > max {
            return Err(wrong(format!(
                "{} takes {} argument{}, got {}",
                self.name,
                if min == max {
                    min.to_string()
                } else {
                    format!("{min} to {max}")
                },
                if max == 1 { "" } else { "s" },
                exprs.len()
            )));
        }
        exprs
            .iter()
            .enumerate()
            .map(|(i, e)| match e {
                Expr::Literal(
                    ScalarValue::Utf8(Some(s))
                    | ScalarValue::LargeUtf8(Some(s))
                    | ScalarValue::Utf8View(Some(s)),
                    _,
                ) => Ok(s.clone()),
                other => Err(wrong(format!(
                    "argument {} of {} must be a text literal, got {other}",
                    i + 1,
                    self.name
                ))),
            })
            .collect()
    }

    fn plan(&self, exprs: &[Expr]) -> Result<(Vec<Field>, Effect)> {
        let name = self.name;
        Ok(match name {
            "create_connection" => {
                let a = self.args(exprs, 3, 3)?;
                // The config is a JSON object, or a URL such as postgres://user@host/db.
                let config: serde_json::Value = match serde_json::from_str(&a[2]) {
                    Ok(config) => config,
                    Err(_) if a[2].contains("://") => serde_json::json!({ "url": a[2] }),
                    Err(e) => {
                        return Err(DataFusionError::Plan(format!(
                            "config_json is neither JSON nor a URL ({e}); usage: SELECT * FROM {}",
                            self.signature
                        )));
                    }
                };
                let fields = vec![
                    field("id", DataType::Utf8),
                    field("name", DataType::Utf8),
                    field("source_type", DataType::Utf8),
                    field("tables_discovered", DataType::Int64),
                    field("discovery_status", DataType::Utf8),
                    field("discovery_error", DataType::Utf8),
                ];
                let effect: Effect = Arc::new(move |engine: Arc<Connections>| {
                    let (n, t, config) = (a[0].clone(), a[1].clone(), config.clone());
                    Box::pin(async move {
                        let Created {
                            connection: created,
                            discovery,
                        } = engine.create_connection(&n, &t, config).await?;
                        let (count, status, error) = match discovery {
                            Ok(outcome) => (outcome.tables_added as i64, "ok", None),
                            Err(e) => (0, "failed", Some(e.to_string())),
                        };
                        Ok(vec![
                            text(created.id.to_string()),
                            text(created.name.to_string()),
                            text(created.source_type.as_str()),
                            int(count),
                            text(status),
                            optional_text(error),
                        ])
                    })
                });
                (fields, effect)
            }
            "test_connection" => {
                let a = self.args(exprs, 1, 1)?;
                let fields = vec![
                    field("ok", DataType::Boolean),
                    field("server_version", DataType::Utf8),
                    field("latency_ms", DataType::Float64),
                    field("error", DataType::Utf8),
                ];
                let effect: Effect = Arc::new(move |engine: Arc<Connections>| {
                    let target = a[0].clone();
                    Box::pin(async move {
                        // A failed test is a result, not an error; an unknown connection is.
                        engine.connection(&target).await?;
                        let outcome = engine.test_connection(&target).await;
                        let (ok, latency, version, error) = match outcome {
                            Ok(o) => (true, Some(o.latency_ms()), Some(o.server_version), None),
                            Err(e) => (false, None, None, Some(e.to_string())),
                        };
                        Ok(vec![
                            Arc::new(BooleanArray::from(vec![ok])) as ArrayRef,
                            optional_text(version),
                            Arc::new(Float64Array::from(vec![latency])),
                            optional_text(error),
                        ])
                    })
                });
                (fields, effect)
            }
            "discover_connection" => {
                let a = self.args(exprs, 1, 1)?;
                let fields = vec![
                    field("tables_added", DataType::Int64),
                    field("tables_removed", DataType::Int64),
                    field("tables_changed", DataType::Int64),
                ];
                let effect: Effect = Arc::new(move |engine: Arc<Connections>| {
                    let target = a[0].clone();
                    Box::pin(async move {
                        let o = engine.discover_connection(&target).await?;
                        Ok(vec![
                            int(o.tables_added as i64),
                            int(o.tables_removed as i64),
                            int(o.tables_changed as i64),
                        ])
                    })
                });
                (fields, effect)
            }
            "refresh_table" | "refresh_connection" => {
                let a = self.args(exprs, 1, 1)?;
                let target = a[0].clone();
                if name == "refresh_table" && target.splitn(3, '.').count() != 3 {
                    return Err(DataFusionError::Plan(format!(
                        "refresh_table takes 'connection.schema.table', got '{target}'; usage: \
                         SELECT * FROM {}",
                        self.signature
                    )));
                }
                let fields = refresh_fields();
                let effect: Effect = Arc::new(move |engine: Arc<Connections>| {
                    let target = target.clone();
                    Box::pin(async move {
                        let start = Instant::now();
                        let outcome = if name == "refresh_table" {
                            let mut parts = target.splitn(3, '.');
                            let (c, s, t) = (
                                parts.next().unwrap_or_default(),
                                parts.next().unwrap_or_default(),
                                parts.next().unwrap_or_default(),
                            );
                            let entry = engine.refresh_table(c, s, t).await?;
                            RefreshOutcome {
                                tables: 1,
                                rows: entry.row_count,
                                bytes: entry.byte_size,
                            }
                        } else {
                            engine.refresh_connection(&target).await?
                        };
                        Ok(vec![
                            int(outcome.tables),
                            int(outcome.rows),
                            int(outcome.bytes),
                            Arc::new(Float64Array::from(vec![start.elapsed().as_secs_f64()])),
                        ])
                    })
                });
                (fields, effect)
            }
            "purge_cache" => {
                let a = self.args(exprs, 1, 3)?;
                let fields = vec![
                    field("entries_removed", DataType::Int64),
                    field("bytes_freed", DataType::Int64),
                ];
                let effect: Effect = Arc::new(move |engine: Arc<Connections>| {
                    let a = a.clone();
                    Box::pin(async move {
                        let o = engine
                            .purge_cache(
                                &a[0],
                                a.get(1).map(String::as_str),
                                a.get(2).map(String::as_str),
                            )
                            .await?;
                        Ok(vec![
                            int(o.entries_removed as i64),
                            int(o.bytes_freed as i64),
                        ])
                    })
                });
                (fields, effect)
            }
            "rename_connection" | "drop_connection" => {
                let a = self.args(
                    exprs,
                    if name == "rename_connection" { 2 } else { 1 },
                    if name == "rename_connection" { 2 } else { 1 },
                )?;
                let fields = vec![field("id", DataType::Utf8), field("name", DataType::Utf8)];
                let effect: Effect = Arc::new(move |engine: Arc<Connections>| {
                    let a = a.clone();
                    Box::pin(async move {
                        let c = if name == "rename_connection" {
                            engine.rename_connection(&a[0], &a[1]).await?
                        } else {
                            engine.drop_connection(&a[0]).await?
                        };
                        Ok(vec![text(c.id.to_string()), text(c.name.to_string())])
                    })
                });
                (fields, effect)
            }
            other => {
                return Err(DataFusionError::Internal(format!(
                    "unknown function {other}"
                )));
            }
        })
    }
}

fn refresh_fields() -> Vec<Field> {
    vec![
        field("tables", DataType::Int64),
        field("rows", DataType::Int64),
        field("bytes", DataType::Int64),
        field("seconds", DataType::Float64),
    ]
}

impl TableFunctionImpl for ManagementFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (fields, effect) = self.plan(args.exprs())?;
        Ok(Arc::new(EffectTable {
            name: self.name,
            schema: Arc::new(Schema::new(fields)),
            effect,
            connections: Arc::clone(&self.connections),
        }))
    }
}

/// The one-row result of a management function, computed when executed.
struct EffectTable {
    name: &'static str,
    schema: SchemaRef,
    effect: Effect,
    connections: Arc<Connections>,
}

impl fmt::Debug for EffectTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}(...)", self.name)
    }
}

#[async_trait]
impl TableProvider for EffectTable {
    fn schema(&self) -> SchemaRef {
        Arc::clone(&self.schema)
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let projected = project_schema(&self.schema, projection)?;
        let (effect, full, connections) = (
            Arc::clone(&self.effect),
            Arc::clone(&self.schema),
            Arc::clone(&self.connections),
        );
        let (projection, output) = (projection.cloned(), Arc::clone(&projected));
        let factory: StreamFactory = Arc::new(move |_context| {
            let (effect, full, connections) = (
                Arc::clone(&effect),
                Arc::clone(&full),
                Arc::clone(&connections),
            );
            let (projection, output) = (projection.clone(), Arc::clone(&output));
            Box::pin(async move {
                let columns = effect(connections).await.map_err(external)?;
                let batch = RecordBatch::try_new(full, columns)?;
                let batch = match projection {
                    Some(p) => batch.project(&p)?,
                    None => batch,
                };
                let stream: SendableRecordBatchStream = Box::pin(RecordBatchStreamAdapter::new(
                    output,
                    futures::stream::once(async move { Ok(batch) }),
                ));
                Ok(stream)
            })
        });
        Ok(Arc::new(DeferredExec::new(
            format!("{}: runs when executed", self.name),
            projected,
            factory,
        )))
    }
}
