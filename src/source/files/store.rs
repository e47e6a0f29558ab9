//! The object store of a `files` connection, rooted at its URL: a local folder, an S3
//! bucket and prefix, or the folder of one HTTP file. Every path Quarry keeps is relative
//! to that root.

use std::sync::Arc;

use datafusion::execution::object_store::ObjectStoreUrl;
use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ClientOptions, ObjectStore, ObjectStoreExt, RetryConfig};
use secrecy::ExposeSecret;

use crate::source::credential::Credential;

use super::config::FilesConfig;
use crate::error::{Error, Result};
use crate::file_set::FileFormat;

/// A connection's store and where in it the files are.
#[derive(Clone, Debug)]
pub struct RootedStore {
    /// The store, rooted at the connection's folder or prefix.
    pub store: Arc<dyn ObjectStore>,
    /// The one file the URL names, or `None` for a folder.
    pub single_file: Option<Path>,
    /// The URL DataFusion finds the store under (one per opened connection, so two
    /// connections to one bucket with other credentials never share a client).
    pub url: ObjectStoreUrl,
    /// The whole bucket of an S3 connection: `HEAD` of its root asks whether the bucket
    /// exists and may be read, which a failed listing does not say.
    pub bucket: Option<Arc<dyn ObjectStore>>,
}

/// Opens the store `config.url` names; `connection` names it in messages.
pub fn open(connection: &str, config: &FilesConfig) -> Result<RootedStore> {
    let url = &config.url;
    let bad = |message: String| Error::config("files", message);
    let file_name = |path: &str| -> Option<String> {
        let name = path.rsplit('/').next().filter(|n| !n.is_empty())?;
        FileFormat::detect(name).map(|_| name.to_owned())
    };
    let id = nanoid::nanoid!(16, &crate::id::ALPHABET);
    let store_url = ObjectStoreUrl::parse(format!("quarry://files-{id}"))
        .map_err(|e| bad(format!("internal store URL: {e}")))?;
    let mut bucket = None;
    let (store, single_file): (Arc<dyn ObjectStore>, Option<String>) = match url.scheme() {
        "file" => {
            let path = url
                .to_file_path()
                .map_err(|()| bad(format!("{url} is not a local path")))?;
            let (folder, single) = if path.is_dir() {
                (path, None)
            } else {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .ok_or_else(|| bad(format!("{url} names no file")))?;
                let parent = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
                (parent, Some(name))
            };
            let local = LocalFileSystem::new_with_prefix(&folder).map_err(|e| {
                Error::config(
                    "files",
                    format!("cannot open the folder {}: {e}", folder.display()),
                )
            })?;
            (Arc::new(local), single)
        }
        "s3" => {
            let bucket_name = url.host_str().unwrap_or_default();
            let s3 = &config.s3;
            let mut builder = AmazonS3Builder::from_env()
                .with_bucket_name(bucket_name)
                .with_retry(retry(config))
                .with_client_options(client_options(config))
                .with_virtual_hosted_style_request(!s3.path_style)
                .with_allow_http(s3.allow_http);
            if let Some(region) = &s3.region {
                builder = builder.with_region(region);
            }
            if let Some(endpoint) = &s3.endpoint {
                builder = builder.with_endpoint(endpoint);
            }
            if let (Some(key), Some(secret)) = (&s3.access_key_id, &s3.secret_access_key) {
                builder = builder.with_credentials(Arc::new(S3Credentials {
                    connection: connection.to_owned(),
                    key_id: key.clone(),
                    secret: secret.clone(),
                    token: s3.session_token.clone(),
                }));
            }
            let s3_store = builder.build().map_err(|e| {
                bad(format!(
                    "connection '{connection}': cannot set up the S3 client: {e}"
                ))
            })?;
            let path = url.path().trim_matches('/');
            let (prefix, single) = match file_name(path) {
                Some(name) => (
                    path[..path.len() - name.len()]
                        .trim_end_matches('/')
                        .to_owned(),
                    Some(name),
                ),
                None => (path.to_owned(), None),
            };
            let s3_store = Arc::new(s3_store);
            bucket = Some(Arc::clone(&s3_store) as Arc<dyn ObjectStore>);
            let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
                s3_store
            } else {
                Arc::new(PrefixStore::new(s3_store, prefix))
            };
            (store, single)
        }
        _ => {
            // One HTTP file: the store is its folder, the file is the table.
            let path = url.path();
            let (folder, name) = path.rsplit_once('/').unwrap_or(("", path));
            let mut base = url.clone();
            base.set_path(&format!("{folder}/"));
            base.set_query(None);
            let http = HttpBuilder::new()
                .with_url(base.as_str())
                .with_retry(retry(config))
                .with_client_options(client_options(config).with_allow_http(true))
                .build()
                .map_err(|e| bad(format!("connection '{connection}': {e}")))?;
            (Arc::new(http), Some(name.to_owned()))
        }
    };
    Ok(RootedStore {
        store,
        single_file: single_file.map(Path::from),
        url: store_url,
        bucket,
    })
}

impl RootedStore {
    /// What a failed listing means: the bucket is missing or closed to these credentials
    /// (asked with `HEAD` of the bucket), or `class` as the listing's error said.
    pub async fn listing_failure(
        &self,
        class: crate::error::FailureClass,
    ) -> crate::error::FailureClass {
        use crate::error::FailureClass;
        let Some(bucket) = &self.bucket else {
            return class;
        };
        if class != FailureClass::Other {
            return class;
        }
        match bucket.head(&Path::from("")).await {
            Err(object_store::Error::NotFound { .. }) => FailureClass::NoDatabase,
            Err(
                object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. },
            ) => FailureClass::Authentication,
            _ => class,
        }
    }
}

/// Retries within the connection's `retry_budget`, as database connections do.
fn retry(config: &FilesConfig) -> RetryConfig {
    RetryConfig {
        max_retries: if config.options.retry_budget.is_zero() {
            0
        } else {
            3
        },
        retry_timeout: config.options.retry_budget,
        ..RetryConfig::default()
    }
}

fn client_options(config: &FilesConfig) -> ClientOptions {
    let options = ClientOptions::new().with_connect_timeout(config.options.connect_timeout);
    match config.options.statement_timeout {
        Some(timeout) => options.with_timeout(timeout),
        None => options.with_timeout_disabled(),
    }
}

/// S3 keys whose secret (and token) are read on each request, so that a key given by
/// reference and rotated is used at once.
#[derive(Debug)]
struct S3Credentials {
    connection: String,
    key_id: String,
    secret: Credential,
    token: Option<Credential>,
}

#[async_trait::async_trait]
impl object_store::CredentialProvider for S3Credentials {
    type Credential = object_store::aws::AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<Self::Credential>> {
        let read = |credential: &Credential, key: &str| {
            credential
                .resolve(&self.connection, key)
                .map(|value| value.expose_secret().to_owned())
                .map_err(|e| object_store::Error::Generic {
                    store: "S3",
                    source: Box::new(e),
                })
        };
        Ok(Arc::new(object_store::aws::AwsCredential {
            key_id: self.key_id.clone(),
            secret_key: read(&self.secret, "secret_access_key")?,
            token: self
                .token
                .as_ref()
                .map(|token| read(token, "session_token"))
                .transpose()?,
        }))
    }
}
