//! Running a planned statement. The schema a statement announces (to a Flight SQL client
//! before any data moves, or as a result's header) is the schema of the physical plan
//! that produces its batches: the logical schema is the one before type coercion and
//! optimization, which may widen a column (`CASE … ELSE 2 END` over an `int4` becomes
//! Int64) or make it nullable (a scalar subquery turned into an outer join).

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, SendableRecordBatchStream};
use futures::StreamExt;

/// A statement planned down to the physical plan that will run it.
#[derive(Clone, Debug)]
pub struct Runnable {
    plan: Arc<dyn ExecutionPlan>,
    task: Arc<TaskContext>,
}

impl Runnable {
    /// Plans `frame` for execution; nothing runs yet.
    pub async fn plan(frame: DataFrame) -> Result<Self> {
        let task = Arc::new(frame.task_ctx());
        let plan = frame.create_physical_plan().await?;
        Ok(Runnable { plan, task })
    }

    /// A statement that has already run and produces no rows of `schema`.
    pub fn done(schema: SchemaRef) -> Self {
        Runnable {
            plan: Arc::new(datafusion::physical_plan::empty::EmptyExec::new(schema)),
            task: Arc::new(TaskContext::default()),
        }
    }

    /// The schema every batch of the result carries.
    pub fn schema(&self) -> SchemaRef {
        self.plan.schema()
    }

    /// Starts the statement; its batches carry [`Runnable::schema`].
    pub fn execute(&self) -> Result<SendableRecordBatchStream> {
        let stream = datafusion::physical_plan::execute_stream(
            Arc::clone(&self.plan),
            Arc::clone(&self.task),
        )?;
        // An operator may know more than the plan announced (a column it proves non-null).
        // `with_schema` accepts only batches the announced schema describes, and fails
        // loudly on any other difference.
        let schema = self.schema();
        let announced = Arc::clone(&schema);
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            schema,
            stream.map(move |batch| {
                let batch = batch?;
                if Arc::ptr_eq(&batch.schema(), &announced) || *batch.schema() == *announced {
                    Ok(batch)
                } else {
                    Ok(batch.with_schema(Arc::clone(&announced))?)
                }
            }),
        )))
    }
}

/// Plans and starts `frame`.
pub async fn execute(frame: DataFrame) -> Result<SendableRecordBatchStream> {
    Runnable::plan(frame).await?.execute()
}
