//! DDL and session statements (`CREATE TABLE … AS`, `DROP VIEW`, `SET`, `PREPARE`, …)
//! planned as a frame that has its effect when it is executed. DataFusion runs them while
//! turning the plan into a frame, so a server that plans a statement once to announce its
//! schema and again to run it would apply it twice.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::Result;
use datafusion::logical_expr::{Expr, LogicalPlan, Statement};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::SessionContext;

use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;

use futures::future::BoxFuture;

use super::default_schema::DefaultSchema;
use super::deferred::{DeferredExec, StreamFactory};

/// Whether DataFusion would carry out `plan` while making its frame.
pub fn acts_when_planned(plan: &LogicalPlan) -> bool {
    match plan {
        LogicalPlan::Ddl(_) => true,
        // EXECUTE only looks up a prepared plan and returns it as a lazy frame.
        LogicalPlan::Statement(statement) => !matches!(statement, Statement::Execute(_)),
        _ => false,
    }
}

/// Whether `frame` is a statement made by [`frame`]: one with an effect and no rows.
#[cfg(feature = "server")]
pub fn is_deferred(frame: &DataFrame) -> bool {
    match frame.logical_plan() {
        LogicalPlan::TableScan(scan) => {
            datafusion::catalog::default_table_source::source_as_provider(&scan.source)
                .is_ok_and(|provider| provider.is::<DeferredStatement>())
        }
        _ => false,
    }
}

/// A frame that runs `plan` in `context` when executed, and produces what it produces.
pub fn frame(context: &SessionContext, plan: LogicalPlan) -> Result<DataFrame> {
    context.read_table(Arc::new(DeferredStatement {
        context: context.clone(),
        effect: Effect::Plan(plan),
    }))
}

/// A frame that makes `default` the default schema of `context` when executed (`USE`).
pub fn use_frame(context: &SessionContext, default: DefaultSchema) -> Result<DataFrame> {
    context.read_table(Arc::new(DeferredStatement {
        context: context.clone(),
        effect: Effect::Use(default),
    }))
}

/// A frame that runs `run` when executed, shown as `label` (storing a view).
pub fn run_frame(context: &SessionContext, label: String, run: Run) -> Result<DataFrame> {
    context.read_table(Arc::new(DeferredStatement {
        context: context.clone(),
        effect: Effect::Run(label, run),
    }))
}

/// Work a statement does when executed.
pub type Run = Arc<dyn Fn() -> BoxFuture<'static, crate::Result<()>> + Send + Sync>;

fn no_rows() -> SendableRecordBatchStream {
    let schema: SchemaRef = Arc::new(Schema::empty());
    Box::pin(RecordBatchStreamAdapter::new(
        schema,
        futures::stream::empty(),
    ))
}

/// A statement waiting to be executed.
struct DeferredStatement {
    context: SessionContext,
    effect: Effect,
}

/// What a deferred statement does.
#[derive(Clone)]
enum Effect {
    /// Runs a DataFusion plan.
    Plan(LogicalPlan),
    /// Changes the session's default catalog and schema.
    Use(DefaultSchema),
    /// Runs Quarry's own work.
    Run(String, Run),
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Effect::Plan(plan) => write!(f, "{}", plan.display()),
            Effect::Use(default) => write!(f, "USE {default}"),
            Effect::Run(label, _) => f.write_str(label),
        }
    }
}

impl fmt::Debug for DeferredStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.effect)
    }
}

#[async_trait]
impl TableProvider for DeferredStatement {
    fn schema(&self) -> SchemaRef {
        // What DataFusion's own DDL frames produce: no columns, no rows.
        Arc::new(Schema::empty())
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        _projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let (context, effect) = (self.context.clone(), self.effect.clone());
        let factory: StreamFactory = Arc::new(move |_task| {
            let (context, effect) = (context.clone(), effect.clone());
            Box::pin(async move {
                match effect {
                    Effect::Plan(plan) => {
                        context
                            .execute_logical_plan(plan)
                            .await?
                            .execute_stream()
                            .await
                    }
                    Effect::Use(default) => {
                        default.apply(&mut context.state_ref().write());
                        Ok(no_rows())
                    }
                    Effect::Run(_, run) => {
                        run().await.map_err(super::deferred::external)?;
                        Ok(no_rows())
                    }
                }
            })
        });
        Ok(Arc::new(DeferredExec::new(
            format!("{}: runs when executed", self.effect),
            self.schema(),
            factory,
        )))
    }
}
