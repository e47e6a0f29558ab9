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
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use futures::StreamExt;
use futures::future::BoxFuture;

use serde_json::Value;

use super::deferred::{DeferredExec, RowsFactory, external};
use crate::connections::{Connections, Created, RefreshOutcome, TestReport};
use crate::source::CommonOptions;

type Effect =
    Arc<dyn Fn(Arc<Connections>) -> BoxFuture<'static, crate::Result<Vec<ArrayRef>>> + Send + Sync>;

/// The management functions. Each variant carries its signature, its output columns and
/// its effect; the effect's report is the type the REST API encodes, made a row here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Function {
    CreateConnection,
    TestConnection,
    DiscoverConnection,
    RefreshTable,
    SetTableOptions,
    RefreshConnection,
    PurgeCache,
    RenameConnection,
    DropConnection,
}

impl Function {
    const ALL: [Function; 9] = [
        Function::CreateConnection,
        Function::TestConnection,
        Function::DiscoverConnection,
        Function::RefreshTable,
        Function::SetTableOptions,
        Function::RefreshConnection,
        Function::PurgeCache,
        Function::RenameConnection,
        Function::DropConnection,
    ];

    /// The SQL name.
    fn name(self) -> &'static str {
        match self {
            Function::CreateConnection => "create_connection",
            Function::TestConnection => "test_connection",
            Function::DiscoverConnection => "discover_connection",
            Function::RefreshTable => "refresh_table",
            Function::SetTableOptions => "set_table_options",
            Function::RefreshConnection => "refresh_connection",
            Function::PurgeCache => "purge_cache",
            Function::RenameConnection => "rename_connection",
            Function::DropConnection => "drop_connection",
        }
    }

    /// How it is called, for usage messages.
    fn signature(self) -> &'static str {
        match self {
            Function::CreateConnection => {
                "create_connection(name, source_type, config_json_or_url)"
            }
            Function::TestConnection => "test_connection(name_or_id)",
            Function::DiscoverConnection => "discover_connection(name_or_id)",
            Function::RefreshTable => "refresh_table('connection.schema.table')",
            Function::SetTableOptions => {
                "set_table_options('connection.schema.table', '{\"mode\": \"live\"}')"
            }
            Function::RefreshConnection => "refresh_connection(name_or_id)",
            Function::PurgeCache => "purge_cache(name_or_id [, schema [, table]])",
            Function::RenameConnection => "rename_connection(name_or_id, new_name)",
            Function::DropConnection => "drop_connection(name_or_id)",
        }
    }

    /// The fewest and most arguments it takes.
    fn arity(self) -> (usize, usize) {
        match self {
            Function::CreateConnection => (3, 3),
            Function::PurgeCache => (1, 3),
            Function::RenameConnection | Function::SetTableOptions => (2, 2),
            _ => (1, 1),
        }
    }

    /// The columns of its one-row result, named as the report's fields.
    fn fields(self) -> Vec<Field> {
        use DataType::{Boolean, Float64, Int64, Utf8};
        let columns: &[(&str, DataType)] = match self {
            Function::CreateConnection => &[
                ("id", Utf8),
                ("name", Utf8),
                ("source_type", Utf8),
                ("tables_discovered", Int64),
                ("discovery_status", Utf8),
                ("discovery_error", Utf8),
            ],
            Function::TestConnection => &[
                ("ok", Boolean),
                ("server_version", Utf8),
                ("latency_ms", Float64),
                ("error", Utf8),
            ],
            Function::DiscoverConnection => &[
                ("tables_added", Int64),
                ("tables_removed", Int64),
                ("tables_changed", Int64),
            ],
            Function::RefreshTable | Function::RefreshConnection => &[
                ("tables", Int64),
                ("rows", Int64),
                ("bytes", Int64),
                ("seconds", Float64),
            ],
            Function::SetTableOptions => {
                &[("table", Utf8), ("access_mode", Utf8), ("options", Utf8)]
            }
            Function::PurgeCache => &[("entries_removed", Int64), ("bytes_freed", Int64)],
            Function::RenameConnection | Function::DropConnection => {
                &[("id", Utf8), ("name", Utf8)]
            }
        };
        columns
            .iter()
            .map(|(name, data_type)| Field::new(*name, data_type.clone(), true))
            .collect()
    }

    /// Checks the arguments at planning, so a wrong call fails before anything runs.
    fn check(self, args: &[String]) -> Result<()> {
        match self {
            Function::CreateConnection => config_of(&args[2]).map(|_| ()).map_err(|e| {
                DataFusionError::Plan(format!(
                    "config_json is neither JSON nor a URL ({e}); usage: SELECT * FROM {}",
                    self.signature()
                ))
            }),
            Function::RefreshTable | Function::SetTableOptions
                if args[0].splitn(3, '.').count() != 3 =>
            {
                Err(DataFusionError::Plan(format!(
                    "{} takes 'connection.schema.table', got '{}'; usage: SELECT * FROM {}",
                    self.name(),
                    args[0],
                    self.signature()
                )))
            }
            Function::SetTableOptions => serde_json::from_str::<Value>(&args[1])
                .map(|_| ())
                .map_err(|e| {
                    DataFusionError::Plan(format!(
                        "the options are not JSON ({e}); usage: SELECT * FROM {}",
                        self.signature()
                    ))
                }),
            _ => Ok(()),
        }
    }

    /// Runs the function and returns its report, serialized.
    async fn run(self, connections: &Connections, a: &[String]) -> crate::Result<Value> {
        let report = match self {
            Function::CreateConnection => {
                // Checked at planning (`check`).
                let config =
                    config_of(&a[2]).map_err(|e| crate::Error::Sql(DataFusionError::Plan(e)))?;
                let Created {
                    connection,
                    discovery,
                } = connections.create_connection(&a[0], &a[1], config).await?;
                let (count, status, error) = match discovery {
                    Ok(outcome) => (outcome.tables_added, "ok", None),
                    Err(e) => (0, "failed", Some(e.to_string())),
                };
                serde_json::json!({
                    "id": connection.id.as_str(),
                    "name": connection.name.as_str(),
                    "source_type": connection.source_type.as_str(),
                    "tables_discovered": count,
                    "discovery_status": status,
                    "discovery_error": error,
                })
            }
            Function::TestConnection => {
                // A failed test is a report, not an error; an unknown connection is.
                let connection = connections.connection(&a[0]).await?;
                let outcome = connections.test_connection(&connection).await;
                to_value(TestReport::of(&outcome))
            }
            Function::DiscoverConnection => to_value(connections.discover_connection(&a[0]).await?),
            Function::RefreshTable => {
                let start = Instant::now();
                let (c, s, t) = table_parts(&a[0]);
                let entry = connections.refresh_table(c, s, t).await?;
                to_value(RefreshOutcome::of([&entry], start))
            }
            Function::SetTableOptions => {
                let (c, s, t) = table_parts(&a[0]);
                // Checked at planning (`check`).
                let patch: Value = serde_json::from_str(&a[1])
                    .map_err(|e| crate::Error::Usage(format!("the options are not JSON: {e}")))?;
                let (connection, record) = connections.set_table_options(c, s, t, &patch).await?;
                let access = CommonOptions::access_of(connection.source_type, &connection.config);
                serde_json::json!({
                    "table": format!("{}.{}.{}", connection.name, record.schema, record.name),
                    "access_mode": record.options.mode(&access).as_str(),
                    "options": record.options.to_json().unwrap_or_else(|| "{}".into()),
                })
            }
            Function::RefreshConnection => to_value(connections.refresh_connection(&a[0]).await?),
            Function::PurgeCache => to_value(
                connections
                    .purge_cache(
                        &a[0],
                        a.get(1).map(String::as_str),
                        a.get(2).map(String::as_str),
                    )
                    .await?,
            ),
            Function::RenameConnection | Function::DropConnection => {
                let c = if self == Function::RenameConnection {
                    connections.rename_connection(&a[0], &a[1]).await?
                } else {
                    connections.drop_connection(&a[0]).await?
                };
                serde_json::json!({ "id": c.id.as_str(), "name": c.name.as_str() })
            }
        };
        Ok(report)
    }
}

/// The config argument: a JSON object, or a URL such as postgres://user@host/db.
fn config_of(text: &str) -> std::result::Result<Value, String> {
    match serde_json::from_str(text) {
        Ok(config) => Ok(config),
        Err(_) if text.contains("://") => Ok(serde_json::json!({ "url": text })),
        Err(e) => Err(e.to_string()),
    }
}

/// The connection, schema and table of a checked 'connection.schema.table' argument.
fn table_parts(text: &str) -> (&str, &str, &str) {
    let mut parts = text.splitn(3, '.');
    (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    )
}

fn to_value(report: impl serde::Serialize) -> Value {
    serde_json::to_value(report).expect("a report always serializes")
}

/// The one row of `fields` holding `report`'s fields of the same names.
fn one_row(fields: &[Field], report: &Value) -> crate::Result<Vec<ArrayRef>> {
    fields
        .iter()
        .map(|field| {
            let value = report.get(field.name()).filter(|v| !v.is_null());
            let wrong = || {
                crate::Error::Sql(DataFusionError::Internal(format!(
                    "the report's field {} is not {}",
                    field.name(),
                    field.data_type()
                )))
            };
            Ok(match field.data_type() {
                DataType::Utf8 => Arc::new(StringArray::from(vec![
                    value
                        .map(|v| v.as_str().map(str::to_owned).ok_or_else(wrong))
                        .transpose()?,
                ])) as ArrayRef,
                DataType::Int64 => Arc::new(Int64Array::from(vec![
                    value.map(|v| v.as_i64().ok_or_else(wrong)).transpose()?,
                ])),
                DataType::Float64 => Arc::new(Float64Array::from(vec![
                    value.map(|v| v.as_f64().ok_or_else(wrong)).transpose()?,
                ])),
                DataType::Boolean => Arc::new(BooleanArray::from(vec![
                    value.map(|v| v.as_bool().ok_or_else(wrong)).transpose()?,
                ])),
                _ => return Err(wrong()),
            })
        })
        .collect()
}

/// Registers every management function in `session`.
pub(crate) fn register(
    session: &datafusion::prelude::SessionContext,
    connections: &Arc<Connections>,
) {
    for function in Function::ALL {
        session.register_udtf(
            function.name(),
            Arc::new(ManagementFunction {
                function,
                connections: Arc::clone(connections),
            }),
        );
    }
}

/// One management function, registered in a session.
struct ManagementFunction {
    function: Function,
    connections: Arc<Connections>,
}

impl fmt::Debug for ManagementFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.function.signature())
    }
}

impl ManagementFunction {
    /// The arguments as text, checked against the signature.
    fn args(&self, exprs: &[Expr]) -> Result<Vec<String>> {
        let (name, (min, max)) = (self.function.name(), self.function.arity());
        let wrong = |why: String| {
            DataFusionError::Plan(format!(
                "{why}; usage: SELECT * FROM {}",
                self.function.signature()
            ))
        };
        if exprs.len() < min || exprs.len() > max {
            return Err(wrong(format!(
                "{name} takes {} argument{}, got {}",
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
                    "argument {} of {name} must be a text literal, got {other}",
                    i + 1
                ))),
            })
            .collect()
    }

    fn plan(&self, exprs: &[Expr]) -> Result<(Vec<Field>, Effect)> {
        let function = self.function;
        let args = Arc::new(self.args(exprs)?);
        function.check(&args)?;
        let fields = function.fields();
        let row_fields = fields.clone();
        // The user planning it is the one it runs as (for the audit log), whichever task
        // executes it.
        let actor = crate::audit::Actor::current();
        let effect: Effect = Arc::new(move |connections: Arc<Connections>| {
            let (args, fields) = (Arc::clone(&args), row_fields.clone());
            let actor = actor.clone();
            Box::pin(async move {
                let report = actor.scope(function.run(&connections, &args)).await?;
                one_row(&fields, &report)
            })
        });
        Ok((fields, effect))
    }
}

impl TableFunctionImpl for ManagementFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let (fields, effect) = self.plan(args.exprs())?;
        Ok(Arc::new(EffectTable {
            name: self.function.name(),
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
        let (effect, full, connections) = (
            Arc::clone(&self.effect),
            Arc::clone(&self.schema),
            Arc::clone(&self.connections),
        );
        let rows: RowsFactory = Arc::new(move || {
            let (effect, full, connections) = (
                Arc::clone(&effect),
                Arc::clone(&full),
                Arc::clone(&connections),
            );
            futures::stream::once(async move {
                let columns = effect(connections).await.map_err(external)?;
                Ok(RecordBatch::try_new(full, columns)?)
            })
            .boxed()
        });
        Ok(Arc::new(DeferredExec::projected(
            format!("{}: runs when executed", self.name),
            &self.schema,
            projection,
            rows,
        )?))
    }
}
