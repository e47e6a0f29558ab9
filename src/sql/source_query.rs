//! `source_query('connection', 'native SQL')`: a statement in a source's own dialect, sent
//! as it is to one read-only session of the source, with the connection's timeouts; its
//! rows are a table. Table functions are planned synchronously, so the statements a query
//! names are described on their sources (prepared, not run) just before it is planned, and
//! the schemas kept here for the planner.

use std::collections::HashMap;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::catalog::{Session, TableFunctionArgs, TableFunctionImpl};
use datafusion::common::ScalarValue;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::sql::parser::{CopyToSource, Statement};
use datafusion::sql::sqlparser::ast::{
    self, FunctionArg, FunctionArgExpr, ObjectNamePart, TableFactor, Visit, Visitor,
};
use futures::StreamExt;

use super::deferred::{DeferredExec, RowsFactory};
use crate::connection::Connection;
use crate::connections::Connections;

/// The function's name in SQL.
pub(crate) const NAME: &str = "source_query";
const USAGE: &str =
    "usage: SELECT * FROM source_query('connection', 'a query in the source's own SQL')";

/// The statements of a session's `source_query` calls, described on their sources.
pub(crate) struct SourceQueries {
    connections: Arc<Connections>,
    described: Mutex<HashMap<(String, String), (Connection, SchemaRef)>>,
}

impl fmt::Debug for SourceQueries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SourceQueries")
    }
}

impl SourceQueries {
    /// None described yet; sources are reached through `connections`.
    pub(crate) fn new(connections: Arc<Connections>) -> Self {
        SourceQueries {
            connections,
            described: Mutex::new(HashMap::new()),
        }
    }

    /// Describes, afresh, the statement of every `source_query` call in `statement` whose
    /// arguments are text literals (other calls fail when planned, with the usage).
    pub(crate) async fn describe_calls(&self, statement: &Statement) -> crate::Result<()> {
        let mut calls = Calls(Vec::new());
        calls.collect(statement);
        for (name, sql) in calls.0 {
            let connection = self.connections.connection(name.as_str()).await?;
            let schema = self.connections.describe_query(&connection, &sql).await?;
            self.described
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert((name, sql), (connection, schema));
        }
        Ok(())
    }

    fn described(&self, name: &str, sql: &str) -> Option<(Connection, SchemaRef)> {
        self.described
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&(name.to_owned(), sql.to_owned()))
            .cloned()
    }
}

/// Describes the `source_query` statements `statement` names, for the planner of `state`.
pub(crate) async fn describe_calls(
    state: &datafusion::execution::SessionState,
    statement: &Statement,
) -> crate::Result<()> {
    match state.config().get_extension::<SourceQueries>() {
        Some(queries) => queries.describe_calls(statement).await,
        None => Ok(()),
    }
}

/// The `(connection, statement)` arguments of the `source_query` calls met.
struct Calls(Vec<(String, String)>);

impl Calls {
    fn collect(&mut self, statement: &Statement) {
        match statement {
            Statement::Statement(inner) => {
                let _ = inner.visit(self);
            }
            Statement::Explain(explain) => self.collect(&explain.statement),
            Statement::CopyTo(copy) => {
                if let CopyToSource::Query(query) = &copy.source {
                    let _ = query.visit(self);
                }
            }
            _ => {}
        }
    }
}

impl Visitor for Calls {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        let TableFactor::Table {
            name,
            args: Some(args),
            ..
        } = factor
        else {
            return ControlFlow::Continue(());
        };
        let is_ours = matches!(
            name.0.as_slice(),
            [ObjectNamePart::Identifier(ident)] if ident.value.eq_ignore_ascii_case(NAME)
        );
        let text = |arg: &FunctionArg| match arg {
            FunctionArg::Unnamed(FunctionArgExpr::Expr(ast::Expr::Value(value))) => {
                value.value.clone().into_string()
            }
            _ => None,
        };
        if let (true, [connection, sql]) = (is_ours, args.args.as_slice())
            && let (Some(connection), Some(sql)) = (text(connection), text(sql))
        {
            self.0.push((connection, sql));
        }
        ControlFlow::Continue(())
    }
}

/// `source_query` as DataFusion's table function.
pub(crate) struct SourceQueryFunction {
    pub(crate) queries: Arc<SourceQueries>,
}

impl fmt::Debug for SourceQueryFunction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(NAME)
    }
}

impl TableFunctionImpl for SourceQueryFunction {
    fn call_with_args(&self, args: TableFunctionArgs) -> Result<Arc<dyn TableProvider>> {
        let text = |e: &Expr| match e {
            Expr::Literal(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)),
                _,
            ) => Some(s.clone()),
            _ => None,
        };
        let (name, sql) = match args.exprs() {
            [connection, sql] => match (text(connection), text(sql)) {
                (Some(connection), Some(sql)) => (connection, sql),
                _ => {
                    return Err(DataFusionError::Plan(format!(
                        "both arguments of {NAME} must be text literals; {USAGE}"
                    )));
                }
            },
            other => {
                return Err(DataFusionError::Plan(format!(
                    "{NAME} takes 2 arguments, got {}; {USAGE}",
                    other.len()
                )));
            }
        };
        let (connection, schema) = self.queries.described(&name, &sql).ok_or_else(|| {
            DataFusionError::Plan(format!(
                "both arguments of {NAME} must be text literals, written as they are in the \
                 statement, not computed; {USAGE}"
            ))
        })?;
        Ok(Arc::new(SourceQueryTable {
            connection,
            sql,
            schema,
            connections: Arc::clone(&self.queries.connections),
        }))
    }
}

/// The rows of one native statement.
struct SourceQueryTable {
    connection: Connection,
    sql: String,
    schema: SchemaRef,
    connections: Arc<Connections>,
}

impl fmt::Debug for SourceQueryTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{NAME}({}, {})", self.connection.name, self.sql)
    }
}

#[async_trait]
impl TableProvider for SourceQueryTable {
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
        let (connections, connection) = (Arc::clone(&self.connections), self.connection.clone());
        let (sql, full) = (self.sql.clone(), Arc::clone(&self.schema));
        // The statement runs as written; unread columns are dropped here.
        let rows: RowsFactory = Arc::new(move || {
            super::pushdown::remote_rows(&connections, &connection, sql.clone(), full.clone())
                .boxed()
        });
        let label = format!(
            "SourceQueryExec: connection={} sql={}",
            self.connection.name, self.sql
        );
        Ok(Arc::new(DeferredExec::projected(
            label,
            &self.schema,
            projection,
            rows,
        )?))
    }
}
