//! The Flight SQL commands on top of the engine: statements and prepared statements
//! streamed batch by batch, catalog browsing from the planner's catalogs (no source I/O),
//! server facts, and cancellation.

use std::pin::Pin;
use std::sync::Arc;

use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionCancelQueryRequest, ActionCancelQueryResult, ActionClosePreparedStatementRequest,
    ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandGetXdbcTypeInfo, CommandPreparedStatementQuery, CommandStatementQuery,
    DoPutPreparedStatementResult, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, ActionType, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus,
    FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::writer::IpcWriteOptions;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::common::ParamValues;
use datafusion::dataframe::DataFrame;
use datafusion::datasource::TableType;
use datafusion::scalar::ScalarValue;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status};

use super::status::status;
use super::{keys, metadata};
use crate::error::Error;
use crate::server::auth::Caller;
use crate::server::client_sessions::queries::Planned;
use crate::server::client_sessions::{ClientSession, ClientSessions};
use crate::session::Runnable;
use crate::session::Session;

type DataStream = Pin<Box<dyn Stream<Item = Result<arrow_flight::FlightData, Status>> + Send>>;

/// The action that cancels a statement (Flight's own, also sent by Flight SQL clients).
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// Quarry's Flight SQL service: every call runs in its caller's session.
#[derive(Clone)]
pub struct QuarryFlightSql {
    sessions: Arc<ClientSessions>,
}

impl QuarryFlightSql {
    /// Serves the clients of `sessions`.
    pub fn new(sessions: Arc<ClientSessions>) -> Self {
        QuarryFlightSql { sessions }
    }

    /// The session of the caller the guard recorded on `request`.
    fn client<T>(&self, request: &Request<T>) -> Result<Arc<ClientSession>, Status> {
        let caller = request
            .extensions()
            .get::<Caller>()
            .ok_or_else(|| Status::unauthenticated("the call was not authenticated"))?;
        self.sessions.get(caller).map_err(|e| status(&e))
    }
}

/// Plans `sql` in `session` (bound to `parameters`, if any) down to its physical plan.
/// A query does not run yet. A statement with an effect and no rows (DDL, `SET`) runs
/// now, once: clients ask for the FlightInfo of `CREATE TABLE …` and never fetch its
/// empty result, and preparing it (which plans it too) must not run it.
async fn plan(
    session: &Session,
    sql: &str,
    parameters: Vec<ScalarValue>,
) -> Result<Runnable, Status> {
    let mut frame = session.sql(sql).await.map_err(|e| status(&e))?;
    if !parameters.is_empty() {
        frame = frame
            .with_param_values(ParamValues::List(
                parameters.into_iter().map(Into::into).collect(),
            ))
            .map_err(|e| status(&Error::Sql(e)))?;
    }
    let acts = crate::session::is_deferred(&frame);
    let runnable = Runnable::plan(frame)
        .await
        .map_err(|e| status(&Error::Sql(e)))?;
    if !acts {
        return Ok(runnable);
    }
    let run = async {
        runnable.execute()?.try_collect::<Vec<_>>().await?;
        Ok::<_, datafusion::error::DataFusionError>(())
    };
    run.await.map_err(|e| status(&Error::Sql(e)))?;
    Ok(Runnable::done(runnable.schema()))
}

impl ClientSession {
    /// Plans the prepared statement `query` names, with its bound parameters.
    async fn plan_prepared(
        &self,
        query: &CommandPreparedStatementQuery,
    ) -> Result<Runnable, Status> {
        let handle = handle_text(&query.prepared_statement_handle)?;
        let prepared = self
            .queries
            .prepared(&handle)
            .ok_or_else(|| Status::not_found("no open prepared statement has that handle"))?;
        plan(&self.sql, &prepared.sql, prepared.parameters).await
    }

    /// A FlightInfo whose one endpoint fetches the planned statement.
    fn info(&self, runnable: Runnable, descriptor: FlightDescriptor) -> Result<FlightInfo, Status> {
        let schema = runnable.schema();
        let (handle, _) = self.queries.plan(runnable);
        let ticket = TicketStatementQuery {
            statement_handle: handle.into_bytes().into(),
        };
        let endpoint =
            FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec()));
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(format!("cannot encode the result schema: {e}")))
            .map(|info| info.with_endpoint(endpoint).with_descriptor(descriptor))
    }

    /// Streams the results of the planned statement `handle`, batch by batch, until they
    /// end, the client goes away or the statement is cancelled.
    async fn results(
        self: Arc<Self>,
        handle: String,
        planned: Planned,
    ) -> Result<DataStream, Status> {
        let cancelled = || Status::cancelled("the statement was cancelled");
        let cancel = planned.cancel.clone();
        if cancel.is_cancelled() {
            self.queries.finish(&handle);
            return Err(cancelled());
        }
        let batches = match planned.runnable.execute() {
            Ok(batches) => batches,
            Err(e) => {
                self.queries.finish(&handle);
                return Err(status(&Error::Sql(e)));
            }
        };
        let schema = batches.schema();
        let done = Finished {
            client: Arc::clone(&self),
            handle,
        };
        let batches = batches
            .map_err(|e| FlightError::Tonic(Box::new(status(&Error::Sql(e)))))
            .take_until(cancel.clone().cancelled_owned());
        // After the batches: an error if they stopped because of a cancel. The guard lives
        // in this tail, so the statement is forgotten however the stream ends.
        let tail = futures::stream::once(async move {
            let _done = done;
            cancel.is_cancelled()
        })
        .filter_map(move |was_cancelled| async move {
            was_cancelled.then(|| Err(FlightError::Tonic(Box::new(cancelled()))))
        });
        Ok(encode(schema, batches.chain(tail)))
    }

    fn cancel(&self, info: Option<FlightInfo>) -> Result<CancelStatus, Status> {
        let handle = info
            .and_then(|info| info.endpoint.into_iter().next())
            .and_then(|endpoint| endpoint.ticket)
            .and_then(|ticket| Any::decode(&*ticket.ticket).ok())
            .and_then(|any| any.unpack::<TicketStatementQuery>().ok().flatten())
            .and_then(|ticket| String::from_utf8(ticket.statement_handle.to_vec()).ok())
            .ok_or_else(|| {
                Status::invalid_argument("the FlightInfo to cancel names no Quarry statement")
            })?;
        if self.queries.cancel(&handle) {
            Ok(CancelStatus::Cancelled)
        } else {
            Err(Status::not_found(
                "no running statement has that ticket; it may have finished",
            ))
        }
    }
}

/// Forgets a planned statement when its stream is dropped.
struct Finished {
    client: Arc<ClientSession>,
    handle: String,
}

impl Drop for Finished {
    fn drop(&mut self) {
        self.client.queries.finish(&self.handle);
    }
}

fn encode(
    schema: SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, FlightError>> + Send + 'static,
) -> DataStream {
    Box::pin(
        FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from),
    )
}

/// One batch as a Flight stream.
fn one_batch(
    batch: Result<RecordBatch, impl std::fmt::Display>,
) -> Result<Response<DataStream>, Status> {
    let batch = batch.map_err(|e| Status::internal(format!("cannot build the listing: {e}")))?;
    let schema = batch.schema();
    Ok(Response::new(encode(
        schema,
        futures::stream::iter([Ok(batch)]),
    )))
}

/// A FlightInfo that asks for `command` back as its ticket (catalog listings).
fn listing_info(
    command: impl ProstMessageExt,
    schema: &Schema,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(command.as_any().encode_to_vec()));
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

fn ipc_schema(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e| Status::internal(format!("cannot encode the schema: {e}")))?;
    Ok(bytes)
}

fn handle_text(handle: &[u8]) -> Result<String, Status> {
    String::from_utf8(handle.to_vec())
        .map_err(|_| Status::invalid_argument("the statement handle is not one Quarry issued"))
}

fn table_type(kind: TableType) -> &'static str {
    match kind {
        TableType::Base => "TABLE",
        TableType::View => "VIEW",
        TableType::Temporary => "LOCAL TEMPORARY",
    }
}

/// The `$1`, `$2`, ... parameters of a planned statement, in order, with the types the
/// planner inferred (Null where it could not). Positional `?` are numbered by then.
fn parameter_schema(frame: &DataFrame) -> Result<Schema, Status> {
    let types = frame
        .logical_plan()
        .get_parameter_types()
        .map_err(|e| status(&Error::Sql(e)))?;
    let mut named: Vec<(usize, String, DataType)> = types
        .into_iter()
        .map(|(name, data_type)| {
            let position = name.trim_start_matches('$').parse().unwrap_or(usize::MAX);
            (position, name, data_type.unwrap_or(DataType::Null))
        })
        .collect();
    named.sort();
    Ok(Schema::new(
        named
            .into_iter()
            .map(|(_, name, data_type)| Field::new(name, data_type, true))
            .collect::<Vec<_>>(),
    ))
}

#[tonic::async_trait]
impl FlightSqlService for QuarryFlightSql {
    type FlightService = QuarryFlightSql;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let client = self.client(&request)?;
        let runnable = plan(&client.sql, &query.query, Vec::new()).await?;
        client
            .info(runnable, request.into_inner())
            .map(Response::new)
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let client = self.client(&request)?;
        let runnable = client.plan_prepared(&query).await?;
        client
            .info(runnable, request.into_inner())
            .map(Response::new)
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let client = self.client(&request)?;
        let handle = handle_text(&ticket.statement_handle)?;
        let planned = client.queries.planned(&handle).ok_or_else(|| {
            Status::not_found(
                "no planned statement of this session has that ticket; ask for the FlightInfo \
                 again",
            )
        })?;
        client.results(handle, planned).await.map(Response::new)
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let client = self.client(&request)?;
        let runnable = client.plan_prepared(&query).await?;
        let (handle, planned) = client.queries.plan(runnable);
        client.results(handle, planned).await.map(Response::new)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let client = self.client(&request)?;
        let frame = client.sql.sql(&query.query).await.map_err(|e| status(&e))?;
        let parameters = parameter_schema(&frame)?;
        let (dataset, parameter_schema) = if parameters.fields().is_empty() {
            let runnable = Runnable::plan(frame)
                .await
                .map_err(|e| status(&Error::Sql(e)))?;
            (ipc_schema(&runnable.schema())?, bytes::Bytes::new())
        } else {
            // The physical plan needs the values; the types come with the binding.
            (
                ipc_schema(frame.schema().as_arrow())?,
                ipc_schema(&parameters)?,
            )
        };
        let handle = client.queries.prepare(query.query);
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: handle.into_bytes().into(),
            dataset_schema: dataset,
            parameter_schema,
        })
    }

    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let client = self.client(&request)?;
        let handle = handle_text(&query.prepared_statement_handle)?;
        let stream = request.into_inner().map_err(FlightError::from);
        let batches: Vec<RecordBatch> =
            arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(stream)
                .try_collect()
                .await
                .map_err(|e| {
                    Status::invalid_argument(format!("cannot read the parameters: {e}"))
                })?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        let Some(batch) = batches.iter().find(|b| b.num_rows() > 0) else {
            return Err(Status::invalid_argument("no parameter values were sent"));
        };
        if rows != 1 {
            return Err(Status::invalid_argument(format!(
                "{rows} rows of parameters were sent; a query takes one row of values"
            )));
        }
        let values = batch
            .columns()
            .iter()
            .map(|column| ScalarValue::try_from_array(column, 0))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Status::invalid_argument(format!("cannot read a parameter: {e}")))?;
        if !client.queries.bind(&handle, values) {
            return Err(Status::not_found(
                "no open prepared statement has that handle",
            ));
        }
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle.into_bytes().into()),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        let client = self.client(&request)?;
        let handle = handle_text(&query.prepared_statement_handle)?;
        // Closing twice is harmless; clients retry on reconnect.
        client.queries.close(&handle);
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        listing_info(query, &schema, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let client = self.client(&request)?;
        let mut builder = query.into_builder();
        for catalog in metadata::catalogs(&client.sql) {
            builder.append(catalog);
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        listing_info(query, &schema, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let client = self.client(&request)?;
        let mut builder = query.into_builder();
        for (catalog, schema) in metadata::schemas(&client.sql) {
            builder.append(catalog, schema);
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        listing_info(query, &schema, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let client = self.client(&request)?;
        let mut builder = query.into_builder();
        for table in metadata::tables(&client.sql).await {
            builder
                .append(
                    &table.catalog,
                    &table.schema,
                    &table.name,
                    table_type(table.kind),
                    &table.arrow_schema,
                )
                .map_err(|e| Status::internal(format!("cannot list tables: {e}")))?;
        }
        one_batch(builder.build())
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = metadata::table_types().schema();
        listing_info(query, &schema, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        _query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(Ok::<_, Status>(metadata::table_types()))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(metadata::sql_info()).schema();
        listing_info(query, &schema, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(query.into_builder(metadata::sql_info()).build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        listing_info(query, &keys::primary_keys_schema(), request.into_inner())
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.client(&request)?;
        let filter = keys::TableFilter::new(&query.catalog, &query.db_schema, &query.table);
        one_batch(keys::primary_keys(self.sessions.engine(), &filter).await)
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        listing_info(query, &keys::foreign_keys_schema(), request.into_inner())
    }

    async fn do_get_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.client(&request)?;
        let filter = keys::TableFilter::new(&query.catalog, &query.db_schema, &query.table);
        one_batch(
            keys::foreign_keys(self.sessions.engine(), &filter, keys::Side::Referencing).await,
        )
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        listing_info(query, &keys::foreign_keys_schema(), request.into_inner())
    }

    async fn do_get_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.client(&request)?;
        let filter = keys::TableFilter::new(&query.catalog, &query.db_schema, &query.table);
        one_batch(keys::foreign_keys(self.sessions.engine(), &filter, keys::Side::Referenced).await)
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(metadata::xdbc_types()).schema();
        listing_info(query, &schema, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        one_batch(query.into_builder(metadata::xdbc_types()).build())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        request: Request<Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let client = self.client(&request)?;
        let info = FlightInfo::decode(&*query.info)
            .map_err(|_| Status::invalid_argument("the FlightInfo to cancel cannot be read"))?;
        let result = client.cancel(Some(info))?;
        Ok(ActionCancelQueryResult {
            result: result as i32,
        })
    }

    async fn do_action_fallback(
        &self,
        request: Request<Action>,
    ) -> Result<Response<<Self as FlightService>::DoActionStream>, Status> {
        let client = self.client(&request)?;
        let action = request.into_inner();
        if action.r#type != CANCEL_FLIGHT_INFO {
            return Err(Status::invalid_argument(format!(
                "unknown action '{}'",
                action.r#type
            )));
        }
        let cancel = CancelFlightInfoRequest::decode(&*action.body)
            .map_err(|_| Status::invalid_argument("the CancelFlightInfo request cannot be read"))?;
        let result = CancelFlightInfoResult {
            status: client.cancel(cancel.info)? as i32,
        };
        let body = arrow_flight::Result {
            body: result.encode_to_vec().into(),
        };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(body)]))))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<ActionType, Status>>> {
        Some(vec![Ok(ActionType {
            r#type: CANCEL_FLIGHT_INFO.into(),
            description: "Cancel a running statement, given its FlightInfo".into(),
        })])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
