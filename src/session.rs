//! A SQL session: its own settings (`SET …`), default catalog and schema, temporary tables
//! and views, and prepared statements, over the engine's shared connections, cache and
//! memory. The shell and a library `Engine` use one; a server opens one per client.

use std::sync::Arc;

use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::dialect::GenericDialect;

use crate::connections::snapshot::SnapshotCell;
use crate::error::{Error, Result};
pub use crate::sql::default_schema::DefaultSchema;
use crate::sql::default_schema::{self, Request};
use crate::sql::deferred_statement::Run;
#[cfg(feature = "server")]
pub use crate::sql::deferred_statement::is_deferred;
pub use crate::sql::results::{Runnable, execute};
use crate::sql::views;
use crate::store::{MetadataStore, ViewRecord};

/// One SQL session. Cheap to clone; clones share the session.
#[derive(Clone)]
pub struct Session {
    context: SessionContext,
    snapshot: Arc<SnapshotCell>,
    /// Where `CREATE VIEW` stores views.
    store: Arc<dyn MetadataStore>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("id", &self.context.session_id())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// A session over `context`, whose catalogs read `snapshot`; views go to `store`.
    pub(crate) fn new(
        context: SessionContext,
        snapshot: Arc<SnapshotCell>,
        store: Arc<dyn MetadataStore>,
    ) -> Self {
        Session {
            context,
            snapshot,
            store,
        }
    }

    /// Plans one SQL statement; run the returned frame to execute it.
    pub async fn sql(&self, sql: &str) -> Result<DataFrame> {
        let mut statements = self.parse(sql)?;
        match (statements.pop(), statements.is_empty()) {
            (Some(statement), true) => self.plan(statement).await,
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
    pub async fn plan(&self, mut statement: Statement) -> Result<DataFrame> {
        if let Some(request) = default_schema::request(&statement)? {
            return self.default_schema_statement(request).await;
        }
        let default = self.default_schema();
        if let Some(sql) = crate::sql::show_tables::query(&statement, &default) {
            statement = self.parse(&sql)?.remove(0);
        }
        if let Some(create) = views::create_request(&statement)? {
            return self.create_view(create).await;
        }
        let state = self.context.state();
        let snapshot = self.snapshot.get();
        let catalogs = Arc::clone(state.catalog_list());
        if let Some(drop) = views::drop_request(&statement, &snapshot, catalogs.as_ref()) {
            return self.drop_views(drop);
        }
        let functions = state.table_functions().clone();
        views::qualify_session_objects(&mut statement, &default);
        views::resolve_unqualified(
            &mut statement,
            &snapshot,
            catalogs.as_ref(),
            &default,
            |f| functions.contains_key(f),
        );
        crate::sql::system_catalog::route_views(&mut statement);
        crate::sql::placeholders::number_placeholders(&mut statement)?;
        crate::sql::source_query::describe_calls(&state, &statement).await?;
        let plan = match state.statement_to_plan(statement.clone()).await {
            Ok(plan) => plan,
            Err(e) => {
                let e = crate::sql::suggest::explain_ambiguity(e);
                return Err(crate::sql::suggest::with_suggestion(
                    &statement,
                    &snapshot,
                    state.catalog_list().as_ref(),
                    &DefaultSchema::of(&state),
                    |name| functions.contains_key(name),
                    e,
                ));
            }
        };
        if crate::sql::deferred_statement::acts_when_planned(&plan) {
            return Ok(crate::sql::deferred_statement::frame(&self.context, plan)?);
        }
        Ok(self.context.execute_logical_plan(plan).await?)
    }

    /// `CREATE VIEW`: checks the query plans here, then (when run) stores it.
    async fn create_view(&self, create: views::CreateView) -> Result<DataFrame> {
        let state = self.context.state();
        let default = DefaultSchema::of(&state);
        let snapshot = self.snapshot.get();
        let functions = state.table_functions().clone();
        let mut query = views::query_statement(create.query);
        views::resolve_unqualified(
            &mut query,
            &snapshot,
            state.catalog_list().as_ref(),
            &default,
            |f| functions.contains_key(f),
        );
        views::check_definition(&create.name, &query, &snapshot, &default, |f| {
            functions.contains_key(f)
        })?;
        if !create.or_replace && snapshot.views.contains_key(&create.name) {
            return Err(Error::ViewExists { name: create.name });
        }
        // The query must plan now, so a broken view is refused when made.
        Box::pin(self.plan(query.clone())).await?;
        let definition = views::query_of(query)
            .map(|q| q.to_string())
            .unwrap_or_default();
        let record = ViewRecord {
            name: create.name.clone(),
            definition,
            default_catalog: default.catalog,
            default_schema: default.schema,
            created_at: chrono::Utc::now(),
        };
        let (store, snapshot, replace) = (
            Arc::clone(&self.store),
            Arc::clone(&self.snapshot),
            create.or_replace,
        );
        let run: Run = Arc::new(move || {
            let (store, snapshot, record) =
                (Arc::clone(&store), Arc::clone(&snapshot), record.clone());
            Box::pin(async move {
                store.put_view(&record, replace).await?;
                snapshot.reload(store.as_ref()).await
            })
        });
        Ok(crate::sql::deferred_statement::run_frame(
            &self.context,
            format!("CREATE VIEW quarry.views.{}", create.name),
            run,
        )?)
    }

    /// `DROP VIEW` of stored views, when run.
    fn drop_views(&self, drop: views::DropViews) -> Result<DataFrame> {
        let snapshot = self.snapshot.get();
        if !drop.if_exists
            && let Some(missing) = drop.names.iter().find(|n| !snapshot.views.contains_key(*n))
        {
            let mut message = format!("no view named '{missing}'");
            if let Some(near) = crate::suggest::closest(missing, snapshot.views.keys()) {
                message.push_str(&format!("; did you mean '{near}'?"));
            }
            message.push_str(" (SHOW TABLES FROM quarry.views lists the stored views)");
            return Err(Error::NotFound(message));
        }
        let label = format!("DROP VIEW {}", drop.names.join(", "));
        let (store, cell, names) = (
            Arc::clone(&self.store),
            Arc::clone(&self.snapshot),
            drop.names,
        );
        let run: Run = Arc::new(move || {
            let (store, cell, names) = (Arc::clone(&store), Arc::clone(&cell), names.clone());
            Box::pin(async move {
                for name in &names {
                    store.delete_view(name).await?;
                }
                cell.reload(store.as_ref()).await
            })
        });
        Ok(crate::sql::deferred_statement::run_frame(
            &self.context,
            label,
            run,
        )?)
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
