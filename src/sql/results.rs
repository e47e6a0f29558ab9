//! Running a planned statement as a stream whose batches carry the schema the plan
//! announced.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::dataframe::DataFrame;
use datafusion::error::Result;
use datafusion::physical_plan::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;

/// Runs `frame`. The optimizer may prove a column non-null (an aggregate answered from
/// Parquet statistics becomes a constant) and so change a field's nullability after the
/// schema was announced; clients that compare the two (ADBC) refuse the result. Each batch
/// is relabelled with the announced schema, which the data always satisfies.
pub async fn execute(frame: DataFrame) -> Result<SendableRecordBatchStream> {
    let announced: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
    let stream = frame.execute_stream().await?;
    if stream.schema() == announced {
        return Ok(stream);
    }
    let schema = Arc::clone(&announced);
    Ok(Box::pin(RecordBatchStreamAdapter::new(
        announced,
        stream.map(move |batch| Ok(batch?.with_schema(Arc::clone(&schema))?)),
    )))
}
