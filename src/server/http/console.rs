//! The web console (`console/`, built into `console/dist`), embedded in the binary and
//! served at `/`. It is a face over this API and holds no logic of its own; its pages are
//! chosen by the URL's fragment, so the server serves one document and its assets.

use axum::extract::Path;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// The built console. `debug-embed` embeds it in debug builds too, so that tests run what
/// users get.
#[derive(rust_embed::Embed)]
#[folder = "console/dist"]
struct Assets;

/// Scripts, styles and API calls only from this server, no frames, no plugins: the page
/// runs nothing it did not ship with.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; font-src 'self'; \
     base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /`: the console's page.
pub async fn index() -> Response {
    asset("index.html")
}

/// `GET /assets/{file}`: its scripts and styles.
pub async fn assets(Path(file): Path<String>) -> Response {
    asset(&format!("assets/{file}"))
}

fn asset(path: &str) -> Response {
    let Some(file) = Assets::get(path) else {
        return (StatusCode::NOT_FOUND, "no such console asset").into_response();
    };
    let mime = file.metadata.mimetype().to_owned();
    let mut response = file.data.into_owned().into_response();
    let headers = response.headers_mut();
    let mut set = |name, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, &mime);
    set(header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY);
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    // Asset names carry no hash: ask the browser to check before reusing one.
    set(header::CACHE_CONTROL, "no-cache");
    response
}
