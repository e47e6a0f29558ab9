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
/// runs nothing it did not ship with. Styles the editor generates are admitted by the
/// page's `nonce`, fresh for each load.
fn content_security_policy(nonce: Option<&str>) -> String {
    let styles = match nonce {
        Some(nonce) => format!("'self' 'nonce-{nonce}'"),
        None => "'self'".to_owned(),
    };
    format!(
        "default-src 'none'; script-src 'self'; style-src {styles}; img-src 'self' data:; \
         connect-src 'self'; font-src 'self'; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'"
    )
}

/// Where the built page takes the nonce.
const NONCE_PLACEHOLDER: &str = "__CSP_NONCE__";

/// `GET /`: the console's page, with a fresh style nonce.
pub async fn index() -> Response {
    let Some(file) = Assets::get("index.html") else {
        return (StatusCode::NOT_FOUND, "the console is not built").into_response();
    };
    let nonce = nanoid::nanoid!(22);
    let page = String::from_utf8_lossy(&file.data).replace(NONCE_PLACEHOLDER, &nonce);
    let mut response = page.into_response();
    secure(&mut response, "text/html; charset=utf-8", Some(&nonce));
    response
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
    secure(&mut response, &mime, None);
    response
}

/// Sets the content type and the headers that keep the page to itself.
fn secure(response: &mut Response, mime: &str, nonce: Option<&str>) {
    let headers = response.headers_mut();
    let mut set = |name, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(header::CONTENT_TYPE, mime);
    set(
        header::CONTENT_SECURITY_POLICY,
        &content_security_policy(nonce),
    );
    set(header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(header::REFERRER_POLICY, "no-referrer");
    // Asset names carry no hash: ask the browser to check before reusing one.
    set(header::CACHE_CONTROL, "no-cache");
}
