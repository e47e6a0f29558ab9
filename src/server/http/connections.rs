//! The connection routes. Connections are addressed by id only: names change, ids never do.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{ApiError, ApiResult};
use super::extract::{JsonBody, PathParams};
use super::model::{
    ConfigTest, ConnectionDetails, ConnectionSummary, CreateConnection, Created, DiscoveryOutcome,
    DiscoveryResult, ErrorBody, PurgeOutcome, RefreshOutcome, SourceTypeInfo, TableInfo,
    TestReport, UpdateConnection,
};
use crate::connection::{Connection, ConnectionName, SourceType};
use crate::engine::Engine;
use crate::id::ConnectionId;
use crate::source::CommonOptions;
use crate::table::{CacheEntry, TableRecord, TableRef};

/// The path of one table of a connection: `/connections/{id}/tables/{schema}/{table}/...`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TablePath {
    /// The connection's id.
    id: String,
    /// The table's source schema.
    schema: String,
    /// The table's name.
    table: String,
}

/// The connection with id `id`; a name (or anything else) is not found.
async fn by_id(engine: &Engine, id: &str) -> ApiResult<Connection> {
    let Some(parsed) = ConnectionId::looks_valid(id)
        .then(|| ConnectionId::parse(id).ok())
        .flatten()
    else {
        return Err(ApiError::not_found(format!(
            "'{id}' is not a connection id: connections are addressed by id (conn_ followed by \
             22 characters), never by name; GET /connections lists them"
        )));
    };
    engine.connection(&parsed).await.map_err(|e| match e {
        crate::Error::ConnectionNotFound(_) => ApiError::not_found(format!(
            "no connection has id '{id}'; GET /connections lists them"
        )),
        other => other.into(),
    })
}

/// The connection's discovered tables and its cache entries.
async fn tables_and_cache(
    engine: &Engine,
    connection: &Connection,
) -> ApiResult<(Vec<TableRecord>, Vec<CacheEntry>)> {
    Ok((
        engine.tables(connection).await?,
        engine.cache_entries(connection).await?,
    ))
}

async fn details(engine: &Engine, connection: &Connection) -> ApiResult<ConnectionDetails> {
    let (tables, cached) = tables_and_cache(engine, connection).await?;
    Ok(ConnectionDetails::of(
        connection,
        &engine.connection_status(&connection.id),
        &tables,
        &cached,
    ))
}

/// List connections.
#[utoipa::path(get, path = "/connections", tag = "connections",
    responses(
        (status = 200, description = "Every connection, by name", body = [ConnectionSummary]),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
pub async fn list(State(app): State<AppState>) -> ApiResult<Json<Vec<ConnectionSummary>>> {
    let mut out = Vec::new();
    for connection in app.engine.connections().await? {
        let (tables, cached) = tables_and_cache(&app.engine, &connection).await?;
        out.push(ConnectionSummary::of(
            &connection,
            &app.engine.connection_status(&connection.id),
            &tables,
            &cached,
        ));
    }
    Ok(Json(out))
}

/// Create a connection and discover its tables.
#[utoipa::path(post, path = "/connections", tag = "connections",
    request_body = CreateConnection,
    responses(
        (status = 201, description = "Created; `discovery` says whether its tables were read",
            body = Created),
        (status = 400, description = "The body is not a valid request", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 409, description = "The name is taken", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "The name, source type or config breaks a rule",
            body = ErrorBody),
    ))]
pub async fn create(
    State(app): State<AppState>,
    JsonBody(request): JsonBody<CreateConnection>,
) -> ApiResult<Response> {
    let engine = &app.engine;
    let visibility = match request.visibility.as_deref() {
        Some(text) => crate::connection::Visibility::parse(text)?,
        None => crate::connection::Visibility::Public,
    };
    let crate::Created {
        connection: created,
        discovery,
    } = engine
        .create_connection_with(
            &request.name,
            &request.source_type,
            serde_json::Value::Object(request.config),
            visibility,
        )
        .await?;
    let discovery = discovery_result(discovery);
    // Discovery may have recorded tables; read the connection back as it now is.
    let connection = engine.connection(&created.id).await?;
    let body = Created {
        connection: details(engine, &connection).await?,
        discovery,
    };
    let mut response = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(location) = HeaderValue::from_str(&format!("/connections/{}", connection.id)) {
        response.headers_mut().insert(header::LOCATION, location);
    }
    Ok(response)
}

fn discovery_result(outcome: crate::Result<crate::DiscoveryOutcome>) -> DiscoveryResult {
    match outcome {
        Ok(outcome) => DiscoveryResult {
            ok: true,
            outcome,
            error: None,
        },
        Err(e) => DiscoveryResult {
            ok: false,
            outcome: DiscoveryOutcome::default(),
            error: Some(ApiError::from(e).detail()),
        },
    }
}

/// Show a connection and its config (credentials only as `<field>_set`).
#[utoipa::path(get, path = "/connections/{id}", tag = "connections",
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "The connection", body = ConnectionDetails),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No connection has this id", body = ErrorBody),
    ))]
pub async fn get(
    State(app): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<ConnectionDetails>> {
    let connection = by_id(&app.engine, &id).await?;
    Ok(Json(details(&app.engine, &connection).await?))
}

/// Rename a connection and/or change its config and credentials.
#[utoipa::path(put, path = "/connections/{id}", tag = "connections",
    params(("id" = String, Path, description = "The connection's id")),
    request_body = UpdateConnection,
    responses(
        (status = 200, description = "The connection as changed", body = ConnectionDetails),
        (status = 400, description = "The body is not a valid request", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not its owner or an admin, or locked", body = ErrorBody),
        (status = 404, description = "No connection has this id", body = ErrorBody),
        (status = 409, description = "The new name is taken", body = ErrorBody),
        (status = 413, description = "The body is too large", body = ErrorBody),
        (status = 422, description = "The new name or config breaks a rule", body = ErrorBody),
    ))]
pub async fn update(
    State(app): State<AppState>,
    PathParams(id): PathParams<String>,
    JsonBody(request): JsonBody<UpdateConnection>,
) -> ApiResult<Json<ConnectionDetails>> {
    let engine = &app.engine;
    let connection = by_id(engine, &id).await?;
    if request.name.is_none() && request.config.is_none() && request.visibility.is_none() {
        return Err(ApiError::bad_request(
            "nothing to change: give 'name', 'config', 'visibility' or several",
        ));
    }
    let visibility = request
        .visibility
        .as_deref()
        .map(crate::connection::Visibility::parse)
        .transpose()?;
    // Check the new name before changing anything, so a taken or invalid name leaves the
    // config as it was.
    if let Some(name) = &request.name {
        let name = ConnectionName::parse(name)?;
        if let Ok(other) = engine.connection(name.as_str()).await
            && other.id != connection.id
        {
            return Err(crate::Error::ConnectionExists {
                name: name.to_string(),
            }
            .into());
        }
    }
    if let Some(patch) = request.config {
        engine
            .update_connection(&connection.id, serde_json::Value::Object(patch))
            .await?;
    }
    if let Some(name) = &request.name {
        engine.rename_connection(&connection.id, name).await?;
    }
    if let Some(visibility) = visibility {
        engine.set_visibility(&connection.id, visibility).await?;
    }
    let connection = engine.connection(&connection.id).await?;
    Ok(Json(details(engine, &connection).await?))
}

/// Delete a connection with its secrets, tables and cache.
#[utoipa::path(delete, path = "/connections/{id}", tag = "connections",
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 403, description = "Not its owner or an admin, or locked", body = ErrorBody),
        (status = 404, description = "No connection has this id", body = ErrorBody),
    ))]
pub async fn delete(
    State(app): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<StatusCode> {
    let connection = by_id(&app.engine, &id).await?;
    app.engine.drop_connection(&connection).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Connect to the source and report how it went.
#[utoipa::path(post, path = "/connections/{id}/test", tag = "connections",
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "The outcome; a source that cannot be reached is ok: false",
            body = TestReport),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No connection has this id", body = ErrorBody),
    ))]
pub async fn test(
    State(app): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<TestReport>> {
    let connection = by_id(&app.engine, &id).await?;
    let outcome = app.engine.test_connection(&connection).await;
    Ok(Json(TestReport::of(&outcome)))
}

/// The source types and the description of each one's config, from which forms are built.
#[utoipa::path(get, path = "/source-types", tag = "connections",
    responses(
        (status = 200, description = "Every source type", body = Vec<SourceTypeInfo>),
        (status = 401, description = "No valid credentials", body = ErrorBody),
    ))]
pub async fn source_types() -> Json<Vec<SourceTypeInfo>> {
    Json(
        SourceType::ALL
            .iter()
            .map(|t| SourceTypeInfo {
                source_type: t.as_str().to_owned(),
                title: t.title().to_owned(),
                config_schema: crate::source::config_schema::json_schema(*t),
            })
            .collect(),
    )
}

/// Connect with settings that are not saved yet and report how it went; nothing is stored.
#[utoipa::path(post, path = "/connection-tests", tag = "connections",
    request_body = ConfigTest,
    responses(
        (status = 200, description = "The outcome; a source that cannot be reached is ok: \
            false, with the config key the failure points at in `field`", body = TestReport),
        (status = 400, description = "The body is not valid", body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No connection has that id", body = ErrorBody),
        (status = 422, description = "The settings break a rule; `field` names the key",
            body = ErrorBody),
    ))]
pub async fn test_config(
    State(app): State<AppState>,
    JsonBody(request): JsonBody<ConfigTest>,
) -> ApiResult<Json<TestReport>> {
    let source_type = SourceType::parse(&request.source_type)?;
    let base = match &request.connection_id {
        Some(id) => Some(by_id(&app.engine, id).await?),
        None => None,
    };
    let config = serde_json::Value::Object(request.config);
    let outcome = app
        .engine
        .test_config(source_type, &config, base.as_ref(), request.name.as_deref())
        .await;
    match outcome {
        // A config that breaks a rule is the request's fault, not the source's.
        Err(e) if e.kind() == crate::error::Kind::Invalid => Err(e.into()),
        outcome => Ok(Json(TestReport::of(&outcome))),
    }
}

/// Read the source's tables and columns again.
#[utoipa::path(post, path = "/connections/{id}/discover", tag = "connections",
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "What changed", body = DiscoveryResult),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No connection has this id", body = ErrorBody),
        (status = 502, description = "The source could not be read", body = ErrorBody),
    ))]
pub async fn discover(
    State(app): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<DiscoveryResult>> {
    let connection = by_id(&app.engine, &id).await?;
    let outcome = app.engine.discover_connection(&connection).await?;
    Ok(Json(discovery_result(Ok(outcome))))
}

/// Fetch every table of the connection again into the cache.
#[utoipa::path(post, path = "/connections/{id}/refresh", tag = "connections",
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "What was fetched", body = RefreshOutcome),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No connection has this id", body = ErrorBody),
        (status = 502, description = "The source could not be read", body = ErrorBody),
    ))]
pub async fn refresh(
    State(app): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<RefreshOutcome>> {
    let connection = by_id(&app.engine, &id).await?;
    Ok(Json(app.engine.refresh_connection(&connection).await?))
}

/// Fetch one table again into the cache.
#[utoipa::path(post, path = "/connections/{id}/tables/{schema}/{table}/refresh",
    tag = "connections",
    params(TablePath),
    responses(
        (status = 200, description = "What was fetched", body = RefreshOutcome),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such connection or table", body = ErrorBody),
        (status = 502, description = "The source could not be read", body = ErrorBody),
    ))]
pub async fn refresh_table(
    State(app): State<AppState>,
    PathParams(TablePath { id, schema, table }): PathParams<TablePath>,
) -> ApiResult<Json<RefreshOutcome>> {
    let connection = by_id(&app.engine, &id).await?;
    known_table(&app.engine, &connection, &schema, &table).await?;
    let start = std::time::Instant::now();
    let entry = app
        .engine
        .refresh_table(&connection, &schema, &table)
        .await?;
    Ok(Json(RefreshOutcome::of([&entry], start)))
}

/// A 404 unless discovery found `schema.table` in `connection`.
async fn known_table(
    engine: &Engine,
    connection: &Connection,
    schema: &str,
    table: &str,
) -> ApiResult<()> {
    match engine
        .table(&TableRef::new(&connection.id, schema, table))
        .await?
    {
        Some(_) => Ok(()),
        None => Err(ApiError::not_found(format!(
            "connection {} has no table {schema}.{table}; GET /connections/{}/tables lists its \
             tables",
            connection.id, connection.id
        ))),
    }
}

/// Drop the connection's whole cache; the next query fetches again.
#[utoipa::path(delete, path = "/connections/{id}/cache", tag = "connections",
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "What was dropped", body = PurgeOutcome),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No connection has this id", body = ErrorBody),
    ))]
pub async fn purge(
    State(app): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<PurgeOutcome>> {
    let connection = by_id(&app.engine, &id).await?;
    purged(&app.engine, &connection, None).await
}

/// Drop one table's cache.
#[utoipa::path(delete, path = "/connections/{id}/tables/{schema}/{table}/cache",
    tag = "connections",
    params(TablePath),
    responses(
        (status = 200, description = "What was dropped", body = PurgeOutcome),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such connection or table", body = ErrorBody),
    ))]
pub async fn purge_table(
    State(app): State<AppState>,
    PathParams(TablePath { id, schema, table }): PathParams<TablePath>,
) -> ApiResult<Json<PurgeOutcome>> {
    let connection = by_id(&app.engine, &id).await?;
    known_table(&app.engine, &connection, &schema, &table).await?;
    purged(&app.engine, &connection, Some((&schema, &table))).await
}

async fn purged(
    engine: &Engine,
    connection: &Connection,
    table: Option<(&str, &str)>,
) -> ApiResult<Json<PurgeOutcome>> {
    Ok(Json(
        engine
            .purge_cache(connection, table.map(|t| t.0), table.map(|t| t.1))
            .await?,
    ))
}

/// The connection's discovered tables with their cache state.
#[utoipa::path(get, path = "/connections/{id}/tables", tag = "connections",
    params(("id" = String, Path, description = "The connection's id")),
    responses(
        (status = 200, description = "Its tables, by schema and name", body = [TableInfo]),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No connection has this id", body = ErrorBody),
    ))]
pub async fn tables(
    State(app): State<AppState>,
    PathParams(id): PathParams<String>,
) -> ApiResult<Json<Vec<TableInfo>>> {
    let connection = by_id(&app.engine, &id).await?;
    let (tables, cached) = tables_and_cache(&app.engine, &connection).await?;
    let access = CommonOptions::access_of(connection.source_type, &connection.config);
    Ok(Json(
        tables
            .iter()
            .map(|t| {
                let freshness = app
                    .engine
                    .freshness(&connection, t, t.current_entry(&cached));
                TableInfo::of(t, &cached, &access, freshness, |e| {
                    app.engine.cache().resident_bytes(e)
                })
            })
            .collect(),
    ))
}

/// Change one table's options with a JSON merge patch, such as `{"mode": "live"}` (a key set
/// to null goes back to the connection's). They outlive rediscovery.
#[utoipa::path(patch, path = "/connections/{id}/tables/{schema}/{table}/options",
    tag = "connections",
    params(TablePath),
    request_body(content = Object, description = "A JSON merge patch of the table's options"),
    responses(
        (status = 200, description = "The table with its new options", body = TableInfo),
        (status = 400, description = "Not a JSON object, or an unknown option or mode",
            body = ErrorBody),
        (status = 401, description = "No valid credentials", body = ErrorBody),
        (status = 404, description = "No such connection or table", body = ErrorBody),
    ))]
pub async fn set_table_options(
    State(app): State<AppState>,
    PathParams(TablePath { id, schema, table }): PathParams<TablePath>,
    JsonBody(patch): JsonBody<serde_json::Value>,
) -> ApiResult<Json<TableInfo>> {
    let connection = by_id(&app.engine, &id).await?;
    known_table(&app.engine, &connection, &schema, &table).await?;
    let (connection, record) = app
        .engine
        .set_table_options(&connection, &schema, &table, &patch)
        .await?;
    let cached = app.engine.cache_entries(&connection).await?;
    let access = CommonOptions::access_of(connection.source_type, &connection.config);
    let freshness = app
        .engine
        .freshness(&connection, &record, record.current_entry(&cached));
    Ok(Json(TableInfo::of(
        &record,
        &cached,
        &access,
        freshness,
        |e| app.engine.cache().resident_bytes(e),
    )))
}
