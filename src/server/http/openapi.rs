//! The OpenAPI document, generated from the handlers' annotations and the wire types.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{audit, connections, events, query, users};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Quarry",
        description = "Manage Quarry's connections by id and run SQL over them."
    ),
    paths(
        super::health,
        super::login,
        connections::list,
        connections::create,
        connections::get,
        connections::update,
        connections::delete,
        connections::test,
        connections::source_types,
        connections::test_config,
        connections::discover,
        connections::refresh,
        connections::purge,
        connections::purge_table,
        connections::refresh_table,
        connections::tables,
        connections::set_table_options,
        query::query,
        events::events,
        audit::audit_log,
        users::list,
        users::put,
        users::delete,
    ),
    modifiers(&Security),
    security(("bearer" = []), ("basic" = [])),
)]
struct ApiDoc;

/// Bearer tokens and HTTP basic, both accepted on every guarded route.
struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
        components.add_security_scheme(
            "basic",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)),
        );
    }
}

/// The document as a value.
pub fn spec() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The OpenAPI document. Needs no credentials.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(spec())
}
