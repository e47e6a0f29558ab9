//! A SQL session: its own settings (`SET …`), default catalog and schema, temporary tables
//! and views, and prepared statements, over the engine's shared connections, cache and
//! memory. The shell and a library `Engine` use one; a server opens one per client.

use std::sync::Arc;

use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use crate::error::{Error, Result};
use crate::sql::default_schema::{self, DefaultSchema, Request};
use crate::sql::snapshot::SnapshotCell;

/// One SQL session. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct Session {
    context: SessionContext,
    snapshot: Arc<SnapshotCell>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.context.session_id())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session over `context`, whose catalogs read `snapshot`.
    pub(crate) fn new(context: SessionContext, snapshot: Arc<SnapshotCell>) -> Self {
        Session { context, snapshot }
    }

    /// Plans one SQL statement; run the returned frame to execute it.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let mut statements = self.parse(sql)?;
        match (statements.pop(), statements.is_empty()) {
            (Some(statement), true) => self.execute(statement).await,
            (None, _) => Err(Error::Sql(datafusion::error::DataFusionError::Plan(
                "no SQL statement was given".into(),
            ))),
            (Some(_), false) => Err(Error::Sql(datafusion::error::DataFusionError::Plan(
                "several statements were given where one is expected; run them one at a time"
                    .into(),
            ))),
        }
    }

    /// Splits a script into statements, in the SQL dialect Quarry speaks.
    pub fn parse(&self, sql: &str) -> Result<Vec<Statement>> {
        Ok(DFParser::parse_sql_with_dialect(sql, &GenericDialect {})?
            .into_iter()
            .collect())
    }

    /// Plans one parsed statement; run the returned frame to execute it. Nothing takes
    /// effect before that, DDL and `SET` included.
    pub async fn execute(&self, mut statement: Statement) -> Result<DataFrame> {
        if let Some(request) = default_schema::request(&statement)? {
            return self.default_schema_statement(request).await;
        }
        if let Some(sql) = crate::sql::show_tables::query(&statement, &self.default_schema()) {
            statement = self.parse(&sql)?.remove(0);
        }
        crate::sql::system_catalog::route_views(&mut statement);
        crate::sql::placeholders::number_placeholders(&mut statement)?;
        let state = self.context.state();
        let plan = match state.statement_to_plan(statement.clone()).await {
            Ok(plan) => plan,
            Err(e) => {
                let snapshot = self.snapshot.get();
                let e = crate::sql::suggest::explain_ambiguity(e);
                let functions = state.table_functions();
                return Err(crate::sql::suggest::with_suggestion(
                    &statement,
                    &snapshot,
                    state.catalog_list().as_ref(),
                    &DefaultSchema::of(&state),
                    |name| functions.contains_key(name),
                    e,
                )
                .into());
            }
        };
        if crate::sql::deferred_statement::acts_when_planned(&plan) {
            return Ok(crate::sql::deferred_statement::frame(&self.context, plan)?);
        }
        Ok(self.context.execute_logical_plan(plan).await?)
    }

    /// The catalog and schema unqualified names resolve against (`USE` changes it).
    pub fn default_schema(&self) -> DefaultSchema {
        DefaultSchema::of(&self.context.state())
    }

    /// `USE`, `SET search_path` and `SHOW search_path`, as a frame that acts when run.
    async fn default_schema_statement(&self, request: Request) -> Result<DataFrame> {
        let current = self.default_schema();
        let target = match request {
            Request::Show => {
                let value = current.to_string().replace('\'', "''");
                return Ok(self
                    .context
                    .sql(&format!("SELECT '{value}' AS search_path"))
                    .await?);
            }
            Request::Reset => DefaultSchema {
                catalog: "datafusion".into(),
                schema: "public".into(),
            },
            Request::Change(name) => {
                default_schema::resolve(&name, self.catalog_list().as_ref(), &current)?
            }
        };
        Ok(crate::sql::deferred_statement::use_frame(
            &self.context,
            target,
        )?)
    }

    /// Every catalog statements can name (connections, `datafusion`, `quarry`), for
    /// browsing; reading it does no I/O.
    pub fn catalog_list(&self) -> Arc<dyn datafusion::catalog::CatalogProviderList> {
        Arc::clone(self.context.state().catalog_list())
    }

    /// The names of every function a statement can call, sorted.
    pub fn function_names(&self) -> Vec<String> {
        let state = self.context.state();
        let mut names: Vec<String> = state
            .scalar_functions()
            .keys()
            .chain(state.aggregate_functions().keys())
            .chain(state.window_functions().keys())
            .chain(state.table_functions().keys())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }
}
