//! A `files` connection's config: where the files are (`url`), how to reach a bucket, how
//! to parse them, and tables declared by glob.

use datafusion::arrow::datatypes::DataType;
use serde_json::{Map, Value};

use crate::error::Result;
use crate::file_set::{BadRows, Compression, CsvOptions, FileFormat};
use crate::source::CommonOptions;
use crate::source::config::{Fields, check_keys};
use crate::source::credential::Credential;

/// Keys for parsing files, valid on the connection (defaults) and on a declared table.
const FORMAT_KEYS: &[&str] = &[
    "format",
    "compression",
    "header",
    "delimiter",
    "quote",
    "null_string",
    "sample_rows",
    "bad_rows",
];
const OWN_KEYS: &[&str] = &[
    "url",
    "region",
    "endpoint",
    "access_key_id",
    "secret_access_key",
    "session_token",
    "path_style",
    "allow_http",
    "glob",
    "tables",
    "connect_timeout",
    "statement_timeout",
    "retry_budget",
    "max_age",
    "mode",
    "inline_fetch_max",
    "cache_max_bytes",
];
/// A declared table's own keys, beside the format keys.
const TABLE_KEYS: &[&str] = &["path", "glob", "schema"];
/// Rows read to infer a CSV or JSON schema, unless `sample_rows` says otherwise.
pub const DEFAULT_SAMPLE_ROWS: usize = 10_000;

/// Every key a files connection takes.
pub static CONFIG_KEYS: std::sync::LazyLock<Vec<&'static str>> = std::sync::LazyLock::new(|| {
    [
        OWN_KEYS,
        FORMAT_KEYS,
        crate::refresh::RefreshSettings::CONNECTION_KEYS,
        crate::source::table_filter::KEYS,
    ]
    .concat()
});
/// The credentials, stored encrypted.
pub const SECRET_KEYS: &[&str] = &["secret_access_key", "session_token"];
/// Changing one of these points the connection at other files.
pub const LOCATION_KEYS: &[&str] = &["url", "endpoint", "glob", "tables"];

/// A validated `files` config.
#[derive(Clone, Debug)]
pub struct FilesConfig {
    /// `file:///folder`, `s3://bucket/prefix` or `https://host/file.csv`.
    pub url: url::Url,
    /// How to reach an S3-compatible bucket.
    pub s3: S3Options,
    /// How files are parsed, unless a declared table says otherwise.
    pub parse: ParseOptions,
    /// Only files matching this glob (relative to the root) become tables.
    pub glob: Option<glob::Pattern>,
    /// Tables declared by path or glob, in the order given.
    pub tables: Vec<DeclaredTable>,
    /// Timeouts and access modes.
    pub options: CommonOptions,
}

/// Options of an S3-compatible store; `Debug` redacts the secrets.
#[derive(Clone, Debug, Default)]
pub struct S3Options {
    /// The bucket's region (default: the environment's, else `us-east-1`).
    pub region: Option<String>,
    /// An S3-compatible server's URL (MinIO, moto, R2, ...).
    pub endpoint: Option<String>,
    /// Access key id (default: the environment's credentials).
    pub access_key_id: Option<String>,
    /// Secret access key, or where to read it.
    pub secret_access_key: Option<Credential>,
    /// Session token of temporary credentials, or where to read it.
    pub session_token: Option<Credential>,
    /// `endpoint/bucket/key` requests rather than `bucket.endpoint/key` (default true with
    /// an endpoint).
    pub path_style: bool,
    /// Allow `http://` endpoints (default: true when the endpoint is `http://`).
    pub allow_http: bool,
}

/// How a table's files are parsed; `None` fields are detected.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParseOptions {
    /// The format (default: from each file's extension).
    pub format: Option<FileFormat>,
    /// Whole-file compression (default: from the extension).
    pub compression: Option<Compression>,
    /// CSV `header`.
    pub header: Option<bool>,
    /// CSV `delimiter`.
    pub delimiter: Option<char>,
    /// CSV `quote`.
    pub quote: Option<char>,
    /// CSV `null_string`.
    pub null_string: Option<String>,
    /// Rows read to infer a text format's schema.
    pub sample_rows: Option<usize>,
    /// What a fetch does with a row it cannot parse.
    pub bad_rows: Option<BadRows>,
}

impl ParseOptions {
    /// These options, with `defaults` where they say nothing.
    pub fn or(&self, defaults: &ParseOptions) -> ParseOptions {
        ParseOptions {
            format: self.format.or(defaults.format),
            compression: self.compression.or(defaults.compression),
            header: self.header.or(defaults.header),
            delimiter: self.delimiter.or(defaults.delimiter),
            quote: self.quote.or(defaults.quote),
            null_string: self.null_string.clone().or(defaults.null_string.clone()),
            sample_rows: self.sample_rows.or(defaults.sample_rows),
            bad_rows: self.bad_rows.or(defaults.bad_rows),
        }
    }

    /// The CSV options for a file named `file_name` (`.tsv`: tab-separated).
    pub fn csv(&self, file_name: &str) -> CsvOptions {
        let tsv = file_name.to_ascii_lowercase().contains(".tsv");
        let defaults = CsvOptions::default();
        CsvOptions {
            header: self.header.unwrap_or(defaults.header),
            delimiter: self
                .delimiter
                .unwrap_or(if tsv { '\t' } else { defaults.delimiter }),
            quote: self.quote.unwrap_or(defaults.quote),
            null_string: self.null_string.clone(),
        }
    }
}

/// A table the config declares, rather than one the layout gives.
#[derive(Clone, Debug, PartialEq)]
pub struct DeclaredTable {
    /// Its name.
    pub name: String,
    /// A folder or file under the root.
    pub path: Option<String>,
    /// A glob under the root its files match (`logs/*/events-*.json`).
    pub glob: Option<glob::Pattern>,
    /// How its files are parsed, over the connection's defaults.
    pub parse: ParseOptions,
    /// Column types that replace the inferred ones.
    pub schema: Vec<(String, DataType)>,
}

impl FilesConfig {
    pub(in crate::source) fn parse(fields: &Fields<'_>, options: CommonOptions) -> Result<Self> {
        let url = parse_url(fields)?;
        let endpoint = fields.string("endpoint")?;
        if url.scheme() != "s3" {
            for key in [
                "region",
                "endpoint",
                "access_key_id",
                "secret_access_key",
                "session_token",
                "path_style",
                "allow_http",
            ] {
                if fields.map.get(key).is_some_and(|v| !v.is_null()) {
                    return Err(fields.field_error(
                        key,
                        format!(
                            "'{key}' applies to s3:// URLs only; this connection's url is {}://",
                            url.scheme()
                        ),
                    ));
                }
            }
        }
        let s3 = S3Options {
            region: fields.string("region")?,
            path_style: fields.boolean("path_style")?.unwrap_or(endpoint.is_some()),
            allow_http: fields.boolean("allow_http")?.unwrap_or_else(|| {
                endpoint
                    .as_deref()
                    .is_some_and(|e| e.starts_with("http://"))
            }),
            endpoint,
            access_key_id: fields.string("access_key_id")?,
            secret_access_key: fields.credential("secret_access_key")?,
            session_token: fields.credential("session_token")?,
        };
        if s3.access_key_id.is_some() != s3.secret_access_key.is_some() {
            return Err(fields.field_error(
                "secret_access_key",
                "'access_key_id' and 'secret_access_key' go together; give both, or neither to \
                 use the environment's credentials"
                    .into(),
            ));
        }
        let parse = parse_options(fields.map, &|m| fields.error(m))?;
        let glob = fields
            .string("glob")?
            .map(|g| pattern(&g, "'glob'", &|m| fields.field_error("glob", m)))
            .transpose()?;
        let tables =
            match fields.map.get("tables") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Object(tables)) => tables
                    .iter()
                    .map(|(name, table)| {
                        declared_table(name, table, &|m| fields.field_error("tables", m))
                    })
                    .collect::<Result<_>>()?,
                Some(other) => {
                    return Err(fields.field_error("tables", format!(
                    "'tables' must be an object of table name → {{\"glob\": ..., \"format\": \
                     ...}}; got {other}"
                )));
                }
            };
        Ok(FilesConfig {
            url,
            s3,
            parse,
            glob,
            tables,
            options,
        })
    }
}

/// The `url`: a `file://`, `s3://`, `http(s)://` URL, or a local path.
fn parse_url(fields: &Fields<'_>) -> Result<url::Url> {
    let text = fields.required_string(
        "url",
        "where the files are: file:///data/exports, s3://bucket/prefix or https://host/file.csv",
    )?;
    let local = |path: std::path::PathBuf| -> Result<url::Url> {
        let path =
            match std::fs::canonicalize(&path) {
                Ok(path) => path,
                Err(_) => {
                    return Err(fields.field_error("url", format!(
                    "'url' names the local path '{}', which does not exist or cannot be read",
                    path.display()
                )));
                }
            };
        let url = if path.is_dir() {
            url::Url::from_directory_path(&path)
        } else {
            url::Url::from_file_path(&path)
        };
        url.map_err(|()| {
            fields.field_error("url", format!("'{}' is not a usable path", path.display()))
        })
    };
    if !text.contains("://") {
        return local(std::path::PathBuf::from(&text));
    }
    let url = url::Url::parse(&text)
        .map_err(|e| fields.field_error("url", format!("'url' is not a URL ({e}): {text}")))?;
    match url.scheme() {
        "file" => {
            let path = url.to_file_path().map_err(|()| {
                fields.field_error("url", format!("'url' {text} is not a local path"))
            })?;
            local(path)
        }
        "s3" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(fields.field_error(
                    "url",
                    format!("'url' {text} names no bucket; write s3://bucket/prefix"),
                ));
            }
            Ok(url)
        }
        "http" | "https" => {
            if url.path().ends_with('/') {
                return Err(fields.field_error(
                    "url",
                    format!(
                        "'url' {text} is a folder; an http(s) URL must name one file (folders \
                     cannot be listed over HTTP)"
                    ),
                ));
            }
            Ok(url)
        }
        other => Err(fields.field_error(
            "url",
            format!(
                "'url' has the scheme '{other}'; files are read from file://, s3://, http:// or \
             https:// URLs"
            ),
        )),
    }
}

type Bad<'a> = &'a dyn Fn(String) -> crate::error::Error;

/// `text` as a glob, or the error that says why it is not one.
fn pattern(text: &str, what: &str, bad: Bad<'_>) -> Result<glob::Pattern> {
    glob::Pattern::new(text).map_err(|e| {
        bad(format!(
            "{what} \"{text}\" is not a glob ({}); use * for any name, ** for any folders, \
             ? for one character",
            e.msg
        ))
    })
}

/// The format keys of `map` (a connection's or a declared table's).
fn parse_options(map: &Map<String, Value>, bad: Bad<'_>) -> Result<ParseOptions> {
    let text = |key: &str| -> Result<Option<String>> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(bad(format!("'{key}' must be a string, got {other}"))),
        }
    };
    let one_char = |key: &str| -> Result<Option<char>> {
        match text(key)? {
            None => Ok(None),
            Some(s) => {
                let s = if s == "\\t" { "\t".to_owned() } else { s };
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) if c.is_ascii() => Ok(Some(c)),
                    _ => Err(bad(format!(
                        "'{key}' must be one ASCII character (\"\\t\" for a tab), got \"{s}\""
                    ))),
                }
            }
        }
    };
    // A key naming one of a set of choices, parsed by `parse`.
    fn choice<T>(
        text: Option<String>,
        key: &str,
        names: &str,
        parse: fn(&str) -> Option<T>,
        bad: Bad<'_>,
    ) -> Result<Option<T>> {
        match text.map(|t| t.trim().to_owned()) {
            None => Ok(None),
            Some(t) => parse(&t)
                .map(Some)
                .ok_or_else(|| bad(format!("'{key}' must be one of {names}, got '{t}'"))),
        }
    }
    let format = choice(
        text("format")?,
        "format",
        FileFormat::NAMES,
        FileFormat::parse,
        bad,
    )?;
    let compression = choice(
        text("compression")?,
        "compression",
        Compression::NAMES,
        Compression::parse,
        bad,
    )?;
    let bad_rows = choice(
        text("bad_rows")?,
        "bad_rows",
        BadRows::NAMES,
        BadRows::parse,
        bad,
    )?;
    let header = match map.get("header") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(other) => return Err(bad(format!("'header' must be true or false, got {other}"))),
    };
    let sample_rows = match map.get("sample_rows") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n > 0) => {
            Some(n.as_u64().expect("checked") as usize)
        }
        Some(other) => {
            return Err(bad(format!(
                "'sample_rows' must be a positive number of rows, got {other}"
            )));
        }
    };
    Ok(ParseOptions {
        format,
        compression,
        header,
        delimiter: one_char("delimiter")?,
        quote: one_char("quote")?,
        null_string: text("null_string")?,
        sample_rows,
        bad_rows,
    })
}

fn declared_table(name: &str, table: &Value, bad: Bad<'_>) -> Result<DeclaredTable> {
    let Value::Object(map) = table else {
        return Err(bad(format!(
            "table '{name}' in 'tables' must be an object such as {{\"glob\": \"logs/*.json\"}}, \
             got {table}"
        )));
    };
    let valid = [TABLE_KEYS, FORMAT_KEYS].concat();
    check_keys(map, &valid).map_err(|(_, m)| bad(format!("table '{name}' in 'tables': {m}")))?;
    let string = |key: &str| match map.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim().to_owned())),
        Some(other) => Err(bad(format!(
            "table '{name}': '{key}' must be a non-empty string, got {other}"
        ))),
    };
    let path = string("path")?;
    let glob = string("glob")?
        .map(|g| pattern(&g, &format!("table '{name}': 'glob'"), bad))
        .transpose()?;
    if path.is_some() == glob.is_some() {
        return Err(bad(format!(
            "table '{name}' in 'tables' needs either 'path' (a folder or file under the url) \
             or 'glob' (such as \"logs/*/*.json\"), not {}",
            if path.is_some() { "both" } else { "neither" }
        )));
    }
    let parse = parse_options(map, &|m| bad(format!("table '{name}': {m}")))?;
    let schema = match map.get("schema") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(columns)) => columns
            .iter()
            .map(|(column, ty)| match ty {
                Value::String(text) => {
                    sql_type(text).map(|t| (column.clone(), t)).ok_or_else(|| {
                        bad(format!(
                            "table '{name}': the type '{text}' of column '{column}' is not one \
                         Quarry knows; use a SQL type such as bigint, double, varchar, \
                         boolean, date, timestamp, decimal(10,2), or an Arrow type such as \
                         Int32"
                        ))
                    })
                }
                other => Err(bad(format!(
                    "table '{name}': the type of column '{column}' must be a string, got {other}"
                ))),
            })
            .collect::<Result<_>>()?,
        Some(other) => {
            return Err(bad(format!(
                "table '{name}': 'schema' must be an object of column → type, such as \
                 {{\"id\": \"bigint\"}}; got {other}"
            )));
        }
    };
    Ok(DeclaredTable {
        name: name.to_owned(),
        path,
        glob,
        parse,
        schema,
    })
}

/// The Arrow type a SQL type name (or an Arrow type's own name) stands for.
pub fn sql_type(text: &str) -> Option<DataType> {
    let lower = text.trim().to_ascii_lowercase();
    let simple = match lower.as_str() {
        "bigint" | "int8" | "long" => Some(DataType::Int64),
        "int" | "integer" | "int4" => Some(DataType::Int32),
        "smallint" | "int2" => Some(DataType::Int16),
        "tinyint" => Some(DataType::Int8),
        "double" | "double precision" | "float8" | "float" => Some(DataType::Float64),
        "real" | "float4" => Some(DataType::Float32),
        "varchar" | "text" | "string" | "char" => Some(DataType::Utf8),
        "boolean" | "bool" => Some(DataType::Boolean),
        "date" => Some(DataType::Date32),
        "timestamp" => Some(DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            None,
        )),
        "timestamptz" | "timestamp with time zone" => Some(DataType::Timestamp(
            datafusion::arrow::datatypes::TimeUnit::Microsecond,
            Some("UTC".into()),
        )),
        _ => None,
    };
    if simple.is_some() {
        return simple;
    }
    for prefix in ["decimal", "numeric"] {
        if let Some(args) = lower
            .strip_prefix(prefix)
            .and_then(|rest| rest.trim().strip_prefix('('))
            .and_then(|rest| rest.strip_suffix(')'))
        {
            let mut parts = args.split(',').map(|p| p.trim().parse::<i64>());
            let precision = parts.next()?.ok()?;
            let scale = parts.next().unwrap_or(Ok(0)).ok()?;
            if !(1..=38).contains(&precision) || scale < 0 || scale > precision {
                return None;
            }
            return Some(DataType::Decimal128(precision as u8, scale as i8));
        }
    }
    text.trim().parse::<DataType>().ok()
}
