//! The REST API (`quarry serve --http-addr`): connection management by id, queries, and
//! an OpenAPI document, on the same engine, users and tokens as the Flight SQL server.

pub mod audit;
pub mod connections;
pub mod console;
pub mod error;
pub mod events;
pub mod extract;
pub mod model;
pub mod openapi;
pub mod query;
pub mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use std::future::IntoFuture;

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use self::error::ApiError;
use self::model::{ErrorBody, Health, Token};
use crate::engine::Engine;
use crate::error::Result;
use crate::server::auth::Authenticator;
use crate::server::client_sessions::ClientSessions;
use crate::server::{self, RunningServer};

/// What every handler reaches: the engine and who may call.
#[derive(Clone)]
pub struct AppState {
    engine: Engine,
    auth: Arc<Authenticator>,
    sessions: Arc<ClientSessions>,
}

/// The API's routes on `engine`, checking calls against `auth`. Everything but `/health`,
/// `/openapi.json` and `/login` needs credentials.
pub fn router(engine: Engine, auth: Arc<Authenticator>, sessions: Arc<ClientSessions>) -> Router {
    let state = AppState {
        engine,
        auth,
        sessions,
    };
    let guarded = Router::new()
        .route(
            "/connections",
            get(connections::list).post(connections::create),
        )
        .route(
            "/connections/{id}",
            get(connections::get)
                .put(connections::update)
                .delete(connections::delete),
        )
        .route("/connections/{id}/test", post(connections::test))
        .route("/connections/{id}/discover", post(connections::discover))
        .route("/connections/{id}/refresh", post(connections::refresh))
        .route(
            "/connections/{id}/cache",
            axum::routing::delete(connections::purge),
        )
        .route(
            "/connections/{id}/tables/{schema}/{table}/cache",
            axum::routing::delete(connections::purge_table),
        )
        .route("/connections/{id}/tables", get(connections::tables))
        .route(
            "/connections/{id}/tables/{schema}/{table}/options",
            axum::routing::patch(connections::set_table_options),
        )
        .route(
            "/connections/{id}/tables/{schema}/{table}/refresh",
            post(connections::refresh_table),
        )
        .route("/source-types", get(connections::source_types))
        .route("/connection-tests", post(connections::test_config))
        .route("/query", post(query::query))
        .route("/events", get(events::events))
        .route("/audit-log", get(audit::audit_log))
        .route("/users", get(users::list).post(users::put))
        .route("/users/{name}", axum::routing::delete(users::delete))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/", get(console::index))
        .route("/assets/{file}", get(console::assets))
        .route("/health", get(health))
        .route("/openapi.json", get(openapi::document))
        .route("/login", post(login))
        .merge(guarded)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

fn authorization(request: &Request) -> Option<&[u8]> {
    request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|v| v.as_bytes())
}

async fn authenticate(
    State(app): State<AppState>,
    mut request: Request,
    next: Next,
) -> std::result::Result<Response, ApiError> {
    // Recorded for the routes that run SQL in the caller's session.
    // The call runs as the caller's user, for the audit log.
    let caller = app.auth.caller(authorization(&request)).await?;
    let actor = caller.actor();
    request.extensions_mut().insert(caller);
    Ok(actor.scope(next.run(request)).await)
}

/// Whether the server is up. Needs no credentials.
#[utoipa::path(get, path = "/health", tag = "server", security(),
    responses((status = 200, description = "The server is up", body = Health)))]
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// Trade basic credentials (or a valid token) for a fresh bearer token, valid here and
/// over Flight SQL.
#[utoipa::path(post, path = "/login", tag = "server",
    responses(
        (status = 200, description = "A new token", body = Token),
        (status = 401, description = "Wrong or missing credentials", body = ErrorBody),
    ))]
pub async fn login(
    State(app): State<AppState>,
    request: Request,
) -> std::result::Result<Json<Token>, ApiError> {
    let token = app.auth.login(authorization(&request)).await?;
    Ok(Json(Token {
        token,
        token_type: "Bearer".into(),
        expires_in: app.auth.token_ttl().as_secs(),
    }))
}

async fn not_found(request: Request) -> ApiError {
    ApiError::not_found(format!(
        "no route {} {}; GET /openapi.json describes the API",
        request.method(),
        request.uri().path()
    ))
}

async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "{} is not allowed on {}; GET /openapi.json lists each route's methods",
            request.method(),
            request.uri().path()
        ),
    )
}

/// Binds `addr` and serves the API on `engine` until shut down.
pub async fn start(
    engine: Engine,
    auth: Arc<Authenticator>,
    sessions: Arc<ClientSessions>,
    addr: SocketAddr,
) -> Result<RunningServer> {
    let (listener, addr) = server::bind(addr, "HTTP").await?;
    let app = router(engine, auth, sessions);
    Ok(RunningServer::spawn("HTTP", addr, |shutdown| {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .into_future()
    }))
}
