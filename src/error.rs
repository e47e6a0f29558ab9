//! Quarry's one error type. Every message says what failed and what to do about it, and
//! none of them ever contains a secret.

use std::fmt;
use std::path::PathBuf;

/// Result alias used throughout Quarry.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in Quarry, with messages written for the user.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A connection name breaks the naming rule.
    #[error(
        "invalid connection name '{name}': {problem}. Names are lowercase SQL identifiers: a letter \
         or '_' followed by up to 62 letters, digits or '_' ([a-z_][a-z0-9_]{{0,62}}){hint}"
    )]
    InvalidName {
        name: String,
        problem: String,
        hint: String,
    },

    /// A connection name is reserved for Quarry's own catalogs.
    #[error(
        "the connection name '{name}' is reserved (reserved names: quarry, information_schema, \
         datafusion, public); choose another name"
    )]
    ReservedName { name: String },

    /// A text that should be a connection id is not one.
    #[error(
        "'{given}' is not a connection id: ids are 'conn_' followed by 22 characters from [0-9a-z]"
    )]
    InvalidId { given: String },

    /// A connection with this name already exists.
    #[error(
        "a connection named '{name}' already exists; pick another name or drop/rename the existing one"
    )]
    ConnectionExists { name: String },

    /// No connection has this name or id.
    #[error("no connection named or with id '{0}'; list connections to see the existing ones")]
    ConnectionNotFound(String),

    /// The source type is not one Quarry knows.
    #[error("unknown source type '{given}'; valid source types: {valid}")]
    UnknownSourceType { given: String, valid: String },

    /// A connection config breaks one of its source type's rules.
    #[error("invalid {source_type} connection config: {message}")]
    InvalidConfig {
        source_type: String,
        message: String,
        /// The config key the rule concerns, where it concerns one.
        field: Option<String>,
    },

    /// The secret key could not be loaded or created, or is malformed.
    #[error("secret key problem: {0}")]
    SecretKey(String),

    /// A stored secret could not be decrypted.
    #[error("cannot decrypt the secrets of connection '{connection}' ({id}): {cause}")]
    SecretDecrypt {
        connection: String,
        id: String,
        cause: String,
    },

    /// No data directory was given and there is no home directory to default to.
    #[error(
        "cannot choose a data directory: no home directory is known; pass --data-dir or set QUARRY_HOME"
    )]
    NoDataDir,

    /// The store URL is malformed or of an unsupported kind.
    #[error("invalid metadata store URL '{url}': {problem}")]
    InvalidStoreUrl { url: String, problem: String },

    /// The metadata store was written by a newer Quarry.
    #[error(
        "the metadata store at {store} has schema version {found}, but this Quarry only knows \
         versions up to {known}: it was written by a newer Quarry. Upgrade Quarry, or point \
         --store / --data-dir at another store"
    )]
    StoreTooNew {
        store: String,
        found: i64,
        known: i64,
    },

    /// A migration recorded in the store differs from the one this build carries.
    #[error(
        "the metadata store at {store} recorded migration v{version} with checksum {found}, but \
         this Quarry's v{version} has checksum {expected}: the store was created by a different \
         build of Quarry or edited by hand. Use the Quarry build that created it, or start a new \
         store with another --data-dir"
    )]
    StoreMigrationChanged {
        store: String,
        version: i64,
        found: String,
        expected: String,
    },

    /// The metadata store failed an operation.
    #[error("metadata store error while {context}: {source}")]
    Store {
        context: String,
        #[source]
        source: sqlx::Error,
    },

    /// A source could not be reached or refused a request; `class` says which way.
    #[error("connection '{connection}': {message}")]
    Source {
        connection: String,
        class: FailureClass,
        message: String,
    },

    /// A statement pushed down to a source failed or returned what the query did not plan.
    #[error(
        "connection '{connection}': the statement pushed down to the source failed: {message} (statement: {sql})"
    )]
    Remote {
        connection: String,
        message: String,
        sql: String,
    },

    /// A table could not be fetched exactly; nothing was cached.
    #[error("cannot fetch {table}: {message}")]
    Fetch { table: String, message: String },

    /// A refresh found the table's columns changed at the source since discovery.
    #[error(
        "the columns of {table} changed at the source since discovery: {changes}; the copy \
         already cached is kept. Run discover_connection('{connection}') and refresh again, \
         or set on_schema_change to 'evolve' to do both on refresh"
    )]
    SchemaChanged {
        /// `connection.schema.table`.
        table: String,
        /// The connection's name.
        connection: String,
        /// The columns added, removed and changed.
        changes: String,
    },

    /// An engine setting has a value Quarry cannot use.
    #[error("invalid {setting} '{given}': {expected}")]
    InvalidSetting {
        setting: &'static str,
        given: String,
        expected: &'static str,
    },

    /// The cache URL cannot be used.
    #[error("invalid cache URL '{url}': {problem}")]
    InvalidCacheUrl { url: String, problem: String },

    /// A Ballista scheduler or executor could not start or stopped.
    #[error("Ballista cluster: {0}")]
    Cluster(String),

    /// The Ballista scheduler's URL cannot be used.
    #[error("cannot use the Ballista scheduler at '{url}': {problem}")]
    InvalidBallistaUrl { url: String, problem: String },

    /// The object store holding the cache failed.
    #[error("the cache at {url}: {message}; check the cache URL, its bucket and credentials")]
    CacheStorage {
        url: String,
        message: String,
        /// Whether the store failed (unreachable, denied) rather than a file being missing.
        unavailable: bool,
    },

    /// A cache file could not be decoded (it is damaged, or not what its entry says).
    #[error("cannot decode the cache file '{}': {message}", path.display())]
    CacheFile { path: PathBuf, message: String },

    /// A file-system operation failed.
    #[error("{context} '{}': {source}", path.display())]
    Io {
        context: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An error shared by every statement that waited on the same operation.
    #[error(transparent)]
    Shared(std::sync::Arc<Error>),

    /// DataFusion failed to parse, plan or run a statement.
    #[error("{}", sql_message(.0))]
    Sql(#[from] datafusion::error::DataFusionError),

    /// A call to a server carried no valid credentials.
    #[error("{0}")]
    Unauthenticated(String),

    /// The user may not do this (change a connection they do not own, a locked one, or
    /// what only admins do).
    #[error("{0}")]
    Forbidden(String),

    /// `CREATE VIEW` of a name a stored view has.
    #[error(
        "a view named '{name}' exists already; CREATE OR REPLACE VIEW replaces it, DROP VIEW \
         removes it"
    )]
    ViewExists { name: String },

    /// A catalog, schema, table or view named in a statement does not exist.
    #[error("{0}")]
    NotFound(String),

    /// A command-line or REPL command was used wrongly; the message shows its usage.
    #[error("{0}")]
    Usage(String),

    /// A server user holds as many sessions as one user may.
    #[error(
        "user '{user}' already has {limit} open sessions, the most one user may hold; \
         reuse a token you hold, or wait until one expires (tokens live {ttl_secs} s)"
    )]
    TooManySessions {
        user: String,
        limit: usize,
        ttl_secs: u64,
    },
}

impl Error {
    /// An `InvalidConfig` error for `source_type` with `message`.
    pub(crate) fn config(source_type: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidConfig {
            source_type: source_type.into(),
            message: message.into(),
            field: None,
        }
    }

    /// An `InvalidConfig` error for `source_type` about the config key `field`.
    pub(crate) fn config_field(
        source_type: impl Into<String>,
        field: &str,
        message: impl Into<String>,
    ) -> Self {
        Error::InvalidConfig {
            source_type: source_type.into(),
            message: message.into(),
            field: Some(field.to_owned()),
        }
    }

    /// What a source failure means (refused, bad credentials, ...), if this is one.
    pub fn failure_class(&self) -> Option<FailureClass> {
        match self {
            Error::Source { class, .. } => Some(*class),
            Error::Shared(inner) => inner.failure_class(),
            _ => None,
        }
    }

    /// The connection config key this error concerns, for forms that show it beside the
    /// field: the key a rule is about, or the key a source's refusal points at (the password
    /// for a failed login, the host for an unknown host).
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::InvalidConfig { field, .. } => field.as_deref(),
            Error::Source { class, .. } => match class {
                FailureClass::Authentication => Some("password"),
                FailureClass::UnknownHost => Some("host"),
                FailureClass::Refused => Some("port"),
                FailureClass::NoDatabase => Some("database"),
                FailureClass::Tls => Some("ssl_mode"),
                FailureClass::Credential => Some("password"),
                FailureClass::HostKey => Some("ssh"),
                _ => None,
            },
            _ => None,
        }
    }

    /// A `Store` error: `context` says what Quarry was doing.
    pub(crate) fn store(context: impl Into<String>) -> impl FnOnce(sqlx::Error) -> Self {
        let context = context.into();
        move |source| Error::Store { context, source }
    }

    /// An `Io` error maker: `context` says what Quarry was doing to `path`.
    pub fn io(
        context: impl Into<String>,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let context = context.into();
        let path = path.into();
        move |source| Error::Io {
            context,
            path,
            source,
        }
    }
}

/// What kind of failure an error is, for the code a server sends: gRPC statuses and HTTP
/// statuses both follow from it, so the two servers always agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The request itself is wrong: bad SQL, a misused function or command.
    BadInput,
    /// A value breaks a rule: a connection name, a config, a source type.
    Invalid,
    /// A connection, table or column does not exist.
    NotFound,
    /// A connection with that name exists already.
    AlreadyExists,
    /// The call carried no valid credentials.
    Unauthenticated,
    /// The caller may not do this.
    PermissionDenied,
    /// A source could not be reached or failed.
    Unavailable,
    /// The query needed more memory or disk than allowed.
    ResourceExhausted,
    /// Quarry's own machinery failed (store, key, files): not the caller's doing.
    Internal,
}

impl Error {
    /// Whether this is (or shares) a refresh's [`Error::SchemaChanged`].
    pub fn is_schema_change(&self) -> bool {
        match self {
            Error::SchemaChanged { .. } => true,
            Error::Shared(inner) => inner.is_schema_change(),
            _ => false,
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> Kind {
        match self {
            Error::Usage(_) => Kind::BadInput,
            Error::InvalidName { .. }
            | Error::ReservedName { .. }
            | Error::UnknownSourceType { .. }
            | Error::InvalidConfig { .. }
            | Error::InvalidSetting { .. }
            | Error::InvalidCacheUrl { .. }
            | Error::InvalidBallistaUrl { .. } => Kind::Invalid,
            Error::CacheStorage {
                unavailable: true, ..
            } => Kind::Unavailable,
            Error::InvalidId { .. } | Error::ConnectionNotFound(_) | Error::NotFound(_) => {
                Kind::NotFound
            }
            Error::ConnectionExists { .. } | Error::ViewExists { .. } => Kind::AlreadyExists,
            Error::Unauthenticated(_) => Kind::Unauthenticated,
            Error::Forbidden(_) => Kind::PermissionDenied,
            Error::TooManySessions { .. } => Kind::ResourceExhausted,
            Error::Source { .. }
            | Error::Fetch { .. }
            | Error::Remote { .. }
            | Error::Cluster(_) => Kind::Unavailable,
            Error::SchemaChanged { .. } => Kind::Invalid,
            Error::Shared(inner) => inner.kind(),
            Error::Sql(e) => sql_kind(e),
            Error::SecretKey(_)
            | Error::SecretDecrypt { .. }
            | Error::NoDataDir
            | Error::InvalidStoreUrl { .. }
            | Error::StoreTooNew { .. }
            | Error::StoreMigrationChanged { .. }
            | Error::Store { .. }
            | Error::CacheFile { .. }
            | Error::CacheStorage { .. }
            | Error::Io { .. } => Kind::Internal,
        }
    }
}

fn sql_kind(error: &datafusion::error::DataFusionError) -> Kind {
    use datafusion::error::DataFusionError as E;
    let error = match cause(error) {
        Cause::Quarry(quarry) => return quarry.kind(),
        Cause::DataFusion(error) => error,
    };
    match error {
        // A missing table is found by the session and reported as `Error::NotFound`.
        E::SchemaError(schema_error, _)
            if matches!(
                schema_error.as_ref(),
                datafusion::common::SchemaError::FieldNotFound { .. }
            ) =>
        {
            Kind::NotFound
        }
        E::SQL(..)
        | E::Plan(_)
        | E::SchemaError(..)
        | E::NotImplemented(_)
        | E::Configuration(_)
        | E::Execution(_)
        | E::ArrowError(..) => Kind::BadInput,
        E::ResourcesExhausted(_) => Kind::ResourceExhausted,
        _ => Kind::Internal,
    }
}

/// A DataFusion error as users read it: syntax errors without the parser's debug form.
/// The parser quotes the token it stopped at; a string literal left open can make that
/// token the rest of the script. Keep the message one short line and its position.
fn shorten_found(message: &str) -> String {
    const KEEP: usize = 40;
    let message = message.split_whitespace().collect::<Vec<_>>().join(" ");
    let Some(start) = message.find("found: ").map(|i| i + "found: ".len()) else {
        return message;
    };
    let end = message
        .rfind(" at Line: ")
        .filter(|end| *end > start)
        .unwrap_or(message.len());
    let token = &message[start..end];
    if token.chars().count() <= KEEP {
        return message;
    }
    let short: String = token.chars().take(KEEP).collect();
    format!("{}{short}…{}", &message[..start], &message[end..])
}

/// What a DataFusion error is about, once its wrappers are taken off.
pub(crate) enum Cause<'a> {
    /// A DataFusion error that wraps nothing further.
    DataFusion(&'a datafusion::error::DataFusionError),
    /// One of Quarry's own errors, raised inside a plan.
    Quarry(&'a Error),
}

/// Takes off the wrappers that add a source position, the name of the optimizer rule that
/// met the error, or sharing: the user (and the status code) needs the error itself.
pub(crate) fn cause(error: &datafusion::error::DataFusionError) -> Cause<'_> {
    use datafusion::error::DataFusionError as E;
    match error {
        E::Diagnostic(_, inner) | E::Context(_, inner) => cause(inner),
        E::Shared(inner) => cause(inner),
        E::Collection(errors) if !errors.is_empty() => cause(&errors[0]),
        E::External(inner) => match inner.downcast_ref::<Error>() {
            Some(quarry) => Cause::Quarry(quarry),
            None => Cause::DataFusion(error),
        },
        other => Cause::DataFusion(other),
    }
}

fn sql_message(error: &datafusion::error::DataFusionError) -> String {
    use datafusion::error::DataFusionError as E;
    use datafusion::sql::sqlparser::parser::ParserError;
    let error = match cause(error) {
        // Quarry's own errors raised inside a plan read as they would outside one.
        Cause::Quarry(quarry) => return quarry.to_string(),
        Cause::DataFusion(error) => error,
    };
    match error {
        E::SQL(parser, _) => match parser.as_ref() {
            ParserError::TokenizerError(m) | ParserError::ParserError(m) => {
                format!("syntax error: {}", shorten_found(m))
            }
            ParserError::RecursionLimitExceeded => {
                "syntax error: the statement nests too deeply; simplify it".into()
            }
        },
        E::External(inner) => inner.to_string(),
        // DataFusion's category prefixes ("Error during planning: ", "Execution error: ")
        // say nothing to a user; an internal error keeps its bug-report text.
        E::Internal(_) => error.to_string(),
        other => other.message().into_owned(),
    }
}

/// The kind of a source failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureClass {
    /// Nothing listens at host:port.
    Refused,
    /// The host name does not resolve.
    UnknownHost,
    /// The server rejected the user or password.
    Authentication,
    /// The database does not exist on the server.
    NoDatabase,
    /// TLS was required and not offered, or failed.
    Tls,
    /// The connect or statement timeout passed.
    Timeout,
    /// The connection broke mid-way.
    Reset,
    /// A credential given by reference (environment variable, file, keyring) cannot be read.
    Credential,
    /// An SSH server's host key is not the one `known_hosts` records, or is not recorded.
    HostKey,
    /// The server rejected a statement.
    Query,
    /// Anything else.
    Other,
}

impl FailureClass {
    /// Whether retrying may help.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            FailureClass::Refused | FailureClass::Timeout | FailureClass::Reset
        )
    }

    /// Short name, as shown in connection status.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::Refused => "refused",
            FailureClass::UnknownHost => "unknown_host",
            FailureClass::Authentication => "authentication",
            FailureClass::NoDatabase => "no_database",
            FailureClass::Tls => "tls",
            FailureClass::Timeout => "timeout",
            FailureClass::Reset => "reset",
            FailureClass::Credential => "credential",
            FailureClass::HostKey => "host_key",
            FailureClass::Query => "query",
            FailureClass::Other => "other",
        }
    }
}

impl fmt::Display for FailureClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::{Error, Kind, shorten_found};
    use datafusion::error::DataFusionError;

    #[test]
    fn kinds_follow_what_went_wrong() {
        let plan = |m: &str| Error::Sql(DataFusionError::Plan(m.into()));
        let missing_column = Error::Sql(DataFusionError::SchemaError(
            Box::new(datafusion::common::SchemaError::FieldNotFound {
                field: Box::new(datafusion::common::Column::from_name("c")),
                valid_fields: vec![],
            }),
            Box::new(None),
        ));
        assert_eq!(missing_column.kind(), Kind::NotFound);
        assert_eq!(Error::NotFound("no table".into()).kind(), Kind::NotFound);
        // Kinds never come from a message's words.
        assert_eq!(plan("table 'a.b.c' not found").kind(), Kind::BadInput);
        assert_eq!(plan("bad").kind(), Kind::BadInput);
        assert_eq!(Error::ConnectionNotFound("x".into()).kind(), Kind::NotFound);
        let wrapped = Error::Sql(DataFusionError::External(Box::new(Error::Usage(
            "u".into(),
        ))));
        assert_eq!(wrapped.kind(), Kind::BadInput);
        assert_eq!(
            Error::Sql(DataFusionError::Internal("x".into())).kind(),
            Kind::Internal
        );
    }

    #[test]
    fn a_long_found_token_is_cut_and_the_position_kept() {
        let token = format!("X' AS INT);\n{}", "SELECT 1; ".repeat(20));
        let message = format!("Expected: end of statement, found: {token} at Line: 24, Column: 14");
        let short = shorten_found(&message);
        assert!(!short.contains('\n'), "{short}");
        assert!(short.starts_with("Expected: end of statement, found: X' AS INT); SELECT"));
        assert!(short.ends_with("… at Line: 24, Column: 14"), "{short}");
        assert!(short.len() < 120, "{short}");
    }

    #[test]
    fn a_short_message_is_kept_whole() {
        let message = "Expected: an expression, found: EOF";
        assert_eq!(shorten_found(message), message);
    }
}
