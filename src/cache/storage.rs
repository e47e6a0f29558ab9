//! Where cache files live: a folder in the data dir (the default), or a prefix of an S3
//! bucket (`--cache-url s3://bucket/prefix`). Entries name files by the same relative path
//! (`cache/<connection>/<schema>/<table>/<version>.parquet`) in both.
//!
//! A new file is never visible half-written. On local disk it is written under a temp name,
//! fsynced and renamed. On S3 it is a multipart upload to its final key: the parts live
//! under the upload's id, invisible to readers and listings, and completing the upload makes
//! the whole object appear at once; a fetch that fails or is dropped aborts the upload. (An
//! upload cut off by a crash leaves parts only S3 can see; a bucket lifecycle rule for
//! incomplete multipart uploads removes them.) Either way the store commits the entry after
//! the file is complete, so a crash leaves an orphan file at worst, which start-up removes.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::datasource::listing::{ListingTable, ListingTableUrl};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use futures::TryStreamExt;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};
use tokio::sync::{mpsc, oneshot};

use super::CACHE_DIR;
use crate::error::{Error, Result};

const TEMP_SUFFIX: &str = ".tmp";
/// Bytes of one uploaded part (above S3's 5 MiB minimum for all but the last).
const PART_BYTES: usize = 8 << 20;
/// Parts uploading at once, so a fetch holds at most this many parts in memory however big
/// the file. The CSV fetch of the files bench took 1.8x local disk's time with 2, 1.4x with
/// 4, and no less with 8.
const PARTS_IN_FLIGHT: usize = 4;
/// Bytes the Parquet writer hands the upload at a time.
const CHUNK_BYTES: usize = 1 << 20;

/// Where the cache's files are.
#[derive(Debug)]
pub struct CacheStorage {
    place: Place,
    /// Deletions and aborts under way on an object store.
    background: Background,
}

/// Tasks the cache starts and does not wait for (deleting an object, aborting an upload),
/// kept so [`CacheStorage::settle`] can.
#[derive(Clone, Debug, Default)]
struct Background(Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>);

impl Background {
    /// Starts `task` on the current runtime; `false` when there is none.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let mut tasks = self.0.lock().unwrap_or_else(|e| e.into_inner());
        tasks.retain(|t| !t.is_finished());
        tasks.push(runtime.spawn(task));
        true
    }

    async fn settle(&self) {
        let tasks = std::mem::take(&mut *self.0.lock().unwrap_or_else(|e| e.into_inner()));
        for task in tasks {
            let _ = task.await;
        }
    }
}

enum Place {
    /// Files under the data dir.
    Local { data_dir: PathBuf },
    /// Objects under a prefix of a bucket.
    Remote {
        /// The bucket. (Not a `PrefixStore`: its `head` answers with the prefix left in
        /// the path, which DataFusion's listing then filters out.)
        store: Arc<dyn ObjectStore>,
        /// The prefix in the bucket, without slashes at either end (may be empty).
        prefix: String,
        /// The URL the user gave, for messages.
        url: String,
        /// Where DataFusion finds the store.
        store_url: ObjectStoreUrl,
    },
}

impl std::fmt::Debug for Place {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Place::Local { data_dir } => write!(f, "Local({})", data_dir.display()),
            // The store's Debug may show its credentials.
            Place::Remote { url, .. } => write!(f, "Remote({url})"),
        }
    }
}

/// The name DataFusion finds the cache's object store under.
const STORE_URL: &str = "quarry://cache";

/// A file found under the cache folder.
#[derive(Debug)]
pub(super) struct Listed {
    /// Its path, relative to the storage.
    pub(super) path: PathBuf,
    /// When it was last written, where the storage says.
    pub(super) modified: Option<chrono::DateTime<chrono::Utc>>,
}

impl CacheStorage {
    /// Cache files under `data_dir`.
    pub fn local(data_dir: &Path) -> Self {
        CacheStorage {
            place: Place::Local {
                data_dir: data_dir.to_owned(),
            },
            background: Background::default(),
        }
    }

    /// Cache files at `url` (`s3://bucket/prefix`), with S3 `options` (`endpoint`,
    /// `region`, `access_key_id`, `allow_http`, ... as object_store names them) over the
    /// `AWS_*` environment variables.
    pub fn open(url: &str, options: &[(String, String)]) -> Result<Self> {
        let parsed = url::Url::parse(url);
        // A password in the URL is never echoed back.
        let shown = match &parsed {
            Ok(u) if u.password().is_some() => {
                let mut u = u.clone();
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            _ => url.to_owned(),
        };
        let bad = |expected: String| Error::InvalidCacheUrl {
            url: shown.clone(),
            problem: expected,
        };
        let parsed = parsed.map_err(|e| bad(e.to_string()))?;
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(bad(
                "credentials do not go in the URL; set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY (or the access_key_id and secret_access_key options)"
                    .into(),
            ));
        }
        if parsed.scheme() != "s3" {
            return Err(bad(format!(
                "the scheme '{}' is not supported; the cache lives in the data dir, or on \
                 S3 with s3://bucket/prefix",
                parsed.scheme()
            )));
        }
        let bucket = parsed.host_str().unwrap_or_default();
        if bucket.is_empty() {
            return Err(bad("it names no bucket; write s3://bucket/prefix".into()));
        }
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in options {
            let key: AmazonS3ConfigKey = key.parse().map_err(|_| {
                bad(format!(
                    "unknown S3 option '{key}'; use endpoint, region, access_key_id, \
                     secret_access_key, session_token, allow_http or \
                     virtual_hosted_style_request"
                ))
            })?;
            builder = builder.with_config(key, value);
        }
        let s3 = builder
            .build()
            .map_err(|e| bad(format!("cannot set up the S3 client: {e}")))?;
        let prefix = parsed.path().trim_matches('/').to_owned();
        // Keys reach DataFusion inside URLs: a prefix that needs escaping would be read back
        // under another name.
        let plain = prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/_.-".contains(&b));
        let folders = prefix.is_empty()
            || prefix
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..");
        if !plain || !folders {
            return Err(bad(
                "the prefix may hold letters, digits, '_', '-', '.' and '/' between non-empty \
                 folder names"
                    .into(),
            ));
        }
        // Rebuilt from its parts: nothing else the given URL held is ever shown.
        let url = match prefix.as_str() {
            "" => format!("s3://{bucket}"),
            prefix => format!("s3://{bucket}/{prefix}"),
        };
        Ok(CacheStorage {
            place: Place::Remote {
                store: Arc::new(s3),
                prefix,
                url,
                store_url: ObjectStoreUrl::parse(STORE_URL).expect("a valid URL"),
            },
            background: Background::default(),
        })
    }

    /// Where the files are, for people: a folder or the cache URL.
    pub fn location(&self) -> String {
        match &self.place {
            Place::Local { data_dir } => data_dir.join(CACHE_DIR).display().to_string(),
            Place::Remote { url, .. } => url.clone(),
        }
    }

    /// Whether the files are on local disk.
    pub fn is_local(&self) -> bool {
        matches!(self.place, Place::Local { .. })
    }

    /// The local path of the file at `relative`; `None` on an object store.
    pub fn local_path(&self, relative: &Path) -> Option<PathBuf> {
        match &self.place {
            Place::Local { data_dir } => Some(data_dir.join(relative)),
            Place::Remote { .. } => None,
        }
    }

    /// Makes the cache's files readable by sessions over `runtime`.
    pub fn register(&self, runtime: &RuntimeEnv) {
        if let Place::Remote {
            store, store_url, ..
        } = &self.place
        {
            runtime.register_object_store(store_url.as_ref(), Arc::clone(store));
        }
    }

    /// A session of its own (`partitions` wide) that can read the cache's files.
    pub fn session(&self, partitions: usize) -> datafusion::prelude::SessionContext {
        let ctx = datafusion::prelude::SessionContext::new_with_config(
            datafusion::prelude::SessionConfig::new().with_target_partitions(partitions),
        );
        self.register(&ctx.runtime_env());
        ctx
    }

    /// The URL DataFusion reads the file at `relative` from.
    fn table_url(&self, relative: &Path) -> datafusion::error::Result<ListingTableUrl> {
        match &self.place {
            Place::Local { data_dir } => {
                ListingTableUrl::parse(data_dir.join(relative).to_string_lossy())
            }
            Place::Remote { prefix, .. } => {
                ListingTableUrl::parse(format!("{STORE_URL}/{}", key(prefix, relative)))
            }
        }
    }

    /// A DataFusion table over cache files (`files`, relative) read as one, with `schema`.
    pub fn table(
        &self,
        files: &[PathBuf],
        schema: SchemaRef,
    ) -> datafusion::error::Result<ListingTable> {
        let urls = files
            .iter()
            .map(|f| self.table_url(f))
            .collect::<datafusion::error::Result<Vec<_>>>()?;
        listing_table(urls, schema)
    }

    /// Starts a new file `name` in the folder `dir` (relative): what the Parquet writer
    /// writes to, and the handle that completes it.
    pub(super) async fn create(&self, dir: &Path, name: &str) -> Result<(NewFile, Sink)> {
        let relative = dir.join(name);
        match &self.place {
            Place::Local { data_dir } => {
                let folder = data_dir.join(dir);
                std::fs::create_dir_all(&folder)
                    .map_err(Error::io("cannot create the cache folder", &folder))?;
                let temp = folder.join(format!(".{name}.{}{TEMP_SUFFIX}", nanoid::nanoid!(10)));
                let file = std::fs::File::create_new(&temp)
                    .map_err(Error::io("cannot create the cache file", &temp))?;
                Ok((
                    NewFile {
                        relative,
                        pending: Pending::Local {
                            final_path: data_dir.join(dir).join(name),
                            temp: TempFile(Some(temp)),
                            folder,
                        },
                    },
                    Sink::Local(file),
                ))
            }
            Place::Remote {
                store, url, prefix, ..
            } => {
                let key = key(prefix, &relative);
                let upload = store
                    .put_multipart(&key)
                    .await
                    .map_err(|e| remote_error(url, "start writing", &key, e))?;
                let (chunks, receiver) = mpsc::channel(PARTS_IN_FLIGHT);
                let (commit, committed) = oneshot::channel();
                let task = tokio::spawn(upload_parts(
                    WriteMultipart::new_with_chunk_size(upload, PART_BYTES),
                    receiver,
                    committed,
                    url.clone(),
                    key,
                ));
                Ok((
                    NewFile {
                        relative,
                        pending: Pending::Remote {
                            commit: Some(commit),
                            task: Some(task),
                            background: self.background.clone(),
                        },
                    },
                    Sink::Remote(std::io::BufWriter::with_capacity(
                        CHUNK_BYTES,
                        ChannelWrite(chunks),
                    )),
                ))
            }
        }
    }

    /// A local scratch file `name` for rows a refresh works through and never publishes:
    /// beside the table's files on local disk, in the system's temp folder otherwise.
    /// Deleted when dropped.
    pub(super) fn scratch(&self, dir: &Path, name: &str) -> Result<(Scratch, Sink)> {
        let folder = match &self.place {
            Place::Local { data_dir } => data_dir.join(dir),
            Place::Remote { .. } => std::env::temp_dir(),
        };
        std::fs::create_dir_all(&folder)
            .map_err(Error::io("cannot create the cache folder", &folder))?;
        let path = folder.join(format!(".{name}.{}{TEMP_SUFFIX}", nanoid::nanoid!(10)));
        let file = std::fs::File::create_new(&path)
            .map_err(Error::io("cannot create the cache file", &path))?;
        Ok((Scratch(TempFile(Some(path))), Sink::Local(file)))
    }

    /// Deletes the file at `relative` (a missing one is fine). On an object store the
    /// deletion runs in the background; [`CacheStorage::settle`] waits for it.
    pub(super) fn delete(&self, relative: &Path) {
        match &self.place {
            Place::Local { data_dir } => remove_file_logged(&data_dir.join(relative)),
            Place::Remote {
                store, url, prefix, ..
            } => {
                let key = key(prefix, relative);
                let (store, at) = (Arc::clone(store), url.clone());
                let deletion = async move {
                    match store.delete(&key).await {
                        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                        Err(e) => {
                            tracing::warn!(url = %at, %key, error = %e, "could not delete a cache file; start-up clean-up will")
                        }
                    }
                };
                if !self.background.spawn(deletion) {
                    tracing::warn!(%url, key = %relative.display(), "no runtime to delete a cache file; start-up clean-up will");
                }
            }
        }
    }

    /// Waits for the deletions and upload aborts started so far.
    pub async fn settle(&self) {
        self.background.settle().await;
    }

    /// The size of the file at `relative`, if it can be read.
    pub(super) async fn size(&self, relative: &Path) -> Option<u64> {
        match &self.place {
            Place::Local { data_dir } => std::fs::metadata(data_dir.join(relative))
                .ok()
                .map(|m| m.len()),
            Place::Remote { store, prefix, .. } => store
                .head(&key(prefix, relative))
                .await
                .ok()
                .map(|m| m.size),
        }
    }

    /// Every file under the cache folder (temp files too), relative, with its last change.
    pub(super) async fn list(&self) -> Result<Vec<Listed>> {
        match &self.place {
            Place::Local { data_dir } => {
                let mut found = Vec::new();
                let mut pending = vec![data_dir.join(CACHE_DIR)];
                while let Some(dir) = pending.pop() {
                    let Ok(listing) = std::fs::read_dir(&dir) else {
                        continue;
                    };
                    for item in listing.flatten() {
                        let path = item.path();
                        if item.file_type().is_ok_and(|t| t.is_dir()) {
                            pending.push(path);
                        } else if let Ok(relative) = path.strip_prefix(data_dir) {
                            found.push(Listed {
                                path: relative.to_owned(),
                                modified: item
                                    .metadata()
                                    .and_then(|m| m.modified())
                                    .ok()
                                    .map(chrono::DateTime::from),
                            });
                        }
                    }
                }
                Ok(found)
            }
            Place::Remote {
                store, url, prefix, ..
            } => {
                let folder = key(prefix, Path::new(CACHE_DIR));
                let listed: Vec<_> = store
                    .list(Some(&folder))
                    .try_collect()
                    .await
                    .map_err(|e| remote_error(url, "list", &folder, e))?;
                Ok(listed
                    .into_iter()
                    .filter_map(|m| {
                        let location = m.location.as_ref();
                        let relative = match prefix.as_str() {
                            "" => location,
                            prefix => location.strip_prefix(prefix)?.strip_prefix('/')?,
                        };
                        Some(Listed {
                            path: PathBuf::from(relative),
                            modified: Some(m.last_modified),
                        })
                    })
                    .collect())
            }
        }
    }

    /// Opens the file at `relative` to read it whole later: a local file is opened now,
    /// so its bytes stay readable if it is deleted meanwhile.
    pub(super) fn open_file(&self, relative: &Path) -> Result<Opened> {
        match &self.place {
            Place::Local { data_dir } => {
                let path = data_dir.join(relative);
                let file = std::fs::File::open(&path)
                    .map_err(Error::io("cannot open the cache file", &path))?;
                Ok(Opened::Local(file, path))
            }
            Place::Remote {
                store, url, prefix, ..
            } => Ok(Opened::Remote {
                store: Arc::clone(store),
                url: url.clone(),
                key: key(prefix, relative),
            }),
        }
    }
}

/// A cache file opened for reading whole.
pub(super) enum Opened {
    Local(std::fs::File, PathBuf),
    Remote {
        store: Arc<dyn ObjectStore>,
        url: String,
        key: object_store::path::Path,
    },
}

impl Opened {
    /// The file's bytes.
    pub(super) async fn bytes(self) -> Result<Bytes> {
        match self {
            Opened::Local(mut file, path) => {
                let shown = path.clone();
                tokio::task::spawn_blocking(move || {
                    let mut data = Vec::new();
                    std::io::Read::read_to_end(&mut file, &mut data)
                        .map_err(Error::io("cannot read the cache file", &path))?;
                    Ok(Bytes::from(data))
                })
                .await
                .map_err(|e| Error::CacheFile {
                    path: shown,
                    message: format!("reading it stopped unexpectedly: {e}"),
                })?
            }
            Opened::Remote { store, url, key } => {
                let read = async { store.get(&key).await?.bytes().await };
                read.await.map_err(|e| remote_error(&url, "read", &key, e))
            }
        }
    }
}

/// A DataFusion table over the Parquet files at `urls`, read as one, with `schema`.
fn listing_table(
    urls: Vec<ListingTableUrl>,
    schema: SchemaRef,
) -> datafusion::error::Result<ListingTable> {
    use datafusion::datasource::file_format::parquet::ParquetFormat;
    use datafusion::datasource::listing::{ListingOptions, ListingTableConfig};
    // The files are named one by one, so no extension filters them (temp files have none).
    let options = ListingOptions::new(Arc::new(ParquetFormat::default())).with_file_extension("");
    let config = ListingTableConfig::new_with_multi_paths(urls)
        .with_listing_options(options)
        .with_schema(schema);
    ListingTable::try_new(config)
}

/// The key of the file at `relative` under `prefix`.
fn key(prefix: &str, relative: &Path) -> object_store::path::Path {
    let relative = relative.to_string_lossy();
    object_store::path::Path::from(match prefix {
        "" => relative.into_owned(),
        prefix => format!("{prefix}/{relative}"),
    })
}

fn remote_error(
    url: &str,
    doing: &str,
    key: &object_store::path::Path,
    source: object_store::Error,
) -> Error {
    Error::CacheStorage {
        url: url.to_owned(),
        message: format!("cannot {doing} '{key}': {source}"),
        unavailable: !matches!(source, object_store::Error::NotFound { .. }),
    }
}

/// Where the Parquet writer's bytes go: a local temp file, or the parts of an upload.
pub(super) enum Sink {
    Local(std::fs::File),
    Remote(std::io::BufWriter<ChannelWrite>),
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Local(file) => file.write(buf),
            Sink::Remote(chunks) => chunks.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Local(file) => file.flush(),
            Sink::Remote(chunks) => chunks.flush(),
        }
    }
}

impl Sink {
    /// Makes the written bytes durable (local) or hands the last of them to the upload.
    pub(super) fn finish(self) -> std::io::Result<()> {
        match self {
            Sink::Local(file) => file.sync_all(),
            Sink::Remote(mut chunks) => chunks.flush(),
        }
    }
}

/// Sends each write to the upload task; blocks while the parts in flight are full, so the
/// writer thread runs no further ahead than the upload.
pub(super) struct ChannelWrite(mpsc::Sender<Bytes>);

impl Write for ChannelWrite {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Bytes::copy_from_slice(buf))
            .map_err(|_| std::io::Error::other("the upload of the cache file stopped"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Uploads the chunks it receives as parts; once they end, completes the upload when the
/// file is committed, or aborts it when the file is dropped. Returns the bytes uploaded.
async fn upload_parts(
    mut upload: WriteMultipart,
    mut chunks: mpsc::Receiver<Bytes>,
    committed: oneshot::Receiver<()>,
    url: String,
    key: object_store::path::Path,
) -> Result<u64> {
    let failed = |e| remote_error(&url, "write", &key, e);
    let mut bytes = 0u64;
    while let Some(chunk) = chunks.recv().await {
        if let Err(e) = upload.wait_for_capacity(PARTS_IN_FLIGHT).await {
            drop(chunks);
            let _ = upload.abort().await;
            return Err(failed(e));
        }
        bytes += chunk.len() as u64;
        upload.put(chunk);
    }
    match committed.await {
        Ok(()) => {
            upload.finish().await.map_err(failed)?;
            Ok(bytes)
        }
        Err(_) => {
            if let Err(e) = upload.abort().await {
                tracing::warn!(%url, %key, error = %e, "could not abort the upload of a dropped cache file");
            }
            Ok(0)
        }
    }
}

/// A local file deleted when dropped.
pub(super) struct Scratch(TempFile);

impl Scratch {
    /// Its absolute path.
    pub(super) fn path(&self) -> &Path {
        self.0
            .0
            .as_deref()
            .expect("a scratch file is never renamed")
    }

    /// A DataFusion table over it, with `schema`.
    pub(super) fn table(&self, schema: SchemaRef) -> datafusion::error::Result<ListingTable> {
        listing_table(
            vec![ListingTableUrl::parse(self.path().to_string_lossy())?],
            schema,
        )
    }
}

/// Deletes the temp file unless it was renamed into place.
struct TempFile(Option<PathBuf>);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            remove_file_logged(&path);
        }
    }
}

/// A file being written for a new version. Dropped before [`NewFile::commit`], it leaves
/// nothing: the temp file is deleted, the upload aborted.
pub(super) struct NewFile {
    relative: PathBuf,
    pending: Pending,
}

enum Pending {
    Local {
        final_path: PathBuf,
        temp: TempFile,
        folder: PathBuf,
    },
    Remote {
        commit: Option<oneshot::Sender<()>>,
        task: Option<tokio::task::JoinHandle<Result<u64>>>,
        /// Where the abort of a dropped upload is tracked.
        background: Background,
    },
}

/// A file complete in its final place, not yet in any published version.
pub(super) struct Committed {
    /// Its path relative to the data dir or cache URL, as entries name files.
    pub(super) relative: String,
    /// Its size.
    pub(super) bytes: i64,
}

impl NewFile {
    /// The relative path the file will have.
    pub(super) fn relative(&self) -> &Path {
        &self.relative
    }

    /// A writer error as the user should see it, once the writer has stopped: when the
    /// upload failed first (the bucket is gone, access was denied), the writer only saw
    /// the pipe close. The file is not committed after this.
    pub(super) async fn explain(&mut self, error: Error) -> Error {
        if let Pending::Remote { commit, task, .. } = &mut self.pending
            && let Some(running) = task.take()
        {
            // Without its commit signal the upload aborts once its chunks end, which they
            // have: the writer is gone.
            commit.take();
            if let Ok(Err(upload)) = running.await {
                return upload;
            }
        }
        error
    }

    /// Puts the finished file in its final place: a rename, or the upload's completion.
    pub(super) async fn commit(mut self) -> Result<Committed> {
        let relative = self.relative.to_string_lossy().into_owned();
        let bytes = match &mut self.pending {
            Pending::Local {
                final_path,
                temp,
                folder,
            } => {
                let temp = temp.0.take().expect("a new file is committed once");
                std::fs::rename(&temp, &*final_path)
                    .map_err(Error::io("cannot publish the cache file", &*final_path))?;
                sync_dir(folder);
                std::fs::metadata(&*final_path)
                    .map_err(Error::io("cannot read the cache file", &*final_path))?
                    .len()
            }
            Pending::Remote { commit, task, .. } => {
                let (Some(commit), Some(task)) = (commit.take(), task.take()) else {
                    return Err(Error::Fetch {
                        table: relative,
                        message: "the cache file's upload was abandoned".into(),
                    });
                };
                let _ = commit.send(());
                task.await.map_err(|e| Error::Fetch {
                    table: relative.clone(),
                    message: format!("the upload stopped unexpectedly: {e}"),
                })??
            }
        };
        Ok(Committed {
            relative,
            bytes: bytes as i64,
        })
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        // Dropped uncommitted: the upload aborts once its commit signal is gone; the abort
        // is tracked so a caller can wait for it.
        if let Pending::Remote {
            commit,
            task,
            background,
        } = &mut self.pending
            && let Some(task) = task.take()
        {
            commit.take();
            background.spawn(async move {
                let _ = task.await;
            });
        }
    }
}

/// Makes a rename durable; failures only weaken crash safety, so they are logged.
fn sync_dir(dir: &Path) {
    if let Err(e) = std::fs::File::open(dir).and_then(|d| d.sync_all()) {
        tracing::warn!(dir = %dir.display(), error = %e, "could not sync the cache folder");
    }
}

/// Deletes a local file; one already gone is fine.
pub(super) fn remove_file_logged(path: &Path) {
    if let Err(e) = std::fs::remove_file(path)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!(path = %path.display(), error = %e, "could not delete a cache file");
    }
}
