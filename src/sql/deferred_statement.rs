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
        plan,
    }))
}

/// A statement waiting to be executed.
struct DeferredStatement {
    context: SessionContext,
    plan: LogicalPlan,
}

impl fmt::Debug for DeferredStatement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.plan.display())
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
        let (context, plan) = (self.context.clone(), self.plan.clone());
        let factory: StreamFactory = Arc::new(move |_task| {
            let (context, plan) = (context.clone(), plan.clone());
            Box::pin(async move {
                context
                    .execute_logical_plan(plan)
                    .await?
                    .execute_stream()
                    .await
            })
        });
        Ok(Arc::new(DeferredExec::new(
            format!("{}: runs when executed", self.plan.display()),
            self.schema(),
            factory,
        )))
    }
}
