//! What discovery records about a table of a `files` connection: its format and parse
//! options, where its files are, its hive partition columns, and each file with its size,
//! modification time and ETag. Kept as JSON beside the table's record, so a later discovery
//! can say which tables changed and a fetch reads exactly the files discovery saw.

use serde::{Deserialize, Serialize};

/// A file format Quarry reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    /// Apache Parquet.
    Parquet,
    /// Arrow IPC files.
    Arrow,
    /// Comma (or other) separated values.
    Csv,
    /// Newline-delimited JSON: one object per line.
    Ndjson,
    /// A JSON array of objects.
    Json,
}

impl FileFormat {
    /// Every format, in the order a folder of mixed files prefers them.
    pub const ALL: [FileFormat; 5] = [
        FileFormat::Parquet,
        FileFormat::Arrow,
        FileFormat::Csv,
        FileFormat::Ndjson,
        FileFormat::Json,
    ];
    /// The names [`FileFormat::parse`] takes, for messages.
    pub const NAMES: &'static str = "parquet, arrow, csv, ndjson, json";

    /// The format named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "parquet" => FileFormat::Parquet,
            "arrow" | "ipc" | "feather" => FileFormat::Arrow,
            "csv" => FileFormat::Csv,
            "ndjson" | "jsonl" => FileFormat::Ndjson,
            "json" => FileFormat::Json,
            _ => return None,
        })
    }

    /// The format's name.
    pub fn as_str(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Arrow => "arrow",
            FileFormat::Csv => "csv",
            FileFormat::Ndjson => "ndjson",
            FileFormat::Json => "json",
        }
    }

    /// Whether files of this format are columnar with a footer (read in place by default);
    /// text formats are parsed once into the cache instead.
    pub fn is_columnar(self) -> bool {
        matches!(self, FileFormat::Parquet | FileFormat::Arrow)
    }

    /// The format and compression a file name's extensions say (`a.csv.gz`: CSV, gzip),
    /// and the name without them (the stem).
    pub fn detect(file_name: &str) -> Option<(FileFormat, Compression, &str)> {
        let (rest, compression) = match file_name.rsplit_once('.') {
            Some((rest, ext)) => match Compression::from_extension(ext) {
                Some(c) => (rest, c),
                None => (file_name, Compression::None),
            },
            None => (file_name, Compression::None),
        };
        let (stem, ext) = rest.rsplit_once('.')?;
        let format = match ext.to_ascii_lowercase().as_str() {
            "parquet" | "pq" => FileFormat::Parquet,
            "arrow" | "ipc" | "feather" => FileFormat::Arrow,
            "csv" | "tsv" => FileFormat::Csv,
            "ndjson" | "jsonl" => FileFormat::Ndjson,
            "json" => FileFormat::Json,
            _ => return None,
        };
        // Compressed columnar files are not a thing readers agree on.
        if format.is_columnar() && compression != Compression::None {
            return None;
        }
        Some((format, compression, stem))
    }
}

/// Whole-file compression of a text format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Not compressed.
    #[default]
    None,
    /// gzip (`.gz`).
    Gzip,
    /// Zstandard (`.zst`).
    Zstd,
}

impl Compression {
    /// The names [`Compression::parse`] takes, for messages.
    pub const NAMES: &'static str = "none, gzip, zstd";

    /// The compression named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "none" | "uncompressed" => Compression::None,
            "gzip" | "gz" => Compression::Gzip,
            "zstd" | "zst" => Compression::Zstd,
            _ => return None,
        })
    }

    fn from_extension(ext: &str) -> Option<Self> {
        match ext.to_ascii_lowercase().as_str() {
            "gz" | "gzip" => Some(Compression::Gzip),
            "zst" | "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The compression's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// How CSV files are parsed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CsvOptions {
    /// Whether the first line names the columns (default true).
    pub header: bool,
    /// The field separator (default `,`; `\t` for `.tsv`).
    pub delimiter: char,
    /// The quote character (default `"`).
    pub quote: char,
    /// The text that stands for NULL (default: an empty field).
    pub null_string: Option<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        CsvOptions {
            header: true,
            delimiter: ',',
            quote: '"',
            null_string: None,
        }
    }
}

/// What a fetch does with a row it cannot parse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BadRows {
    /// Fail the fetch, naming the file, line and column (the default).
    #[default]
    Fail,
    /// Leave the row out and count it.
    Skip,
}

impl BadRows {
    /// The names [`BadRows::parse`] takes, for messages.
    pub const NAMES: &'static str = "fail, skip";

    /// The policy named `text`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "fail" => Some(BadRows::Fail),
            "skip" => Some(BadRows::Skip),
            _ => None,
        }
    }
}

/// A hive-style partition column (`year=2024/` folders).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PartitionColumn {
    /// The key in the folder names.
    pub name: String,
    /// `Int64` when every value is an integer, else `Utf8`.
    pub arrow_type: String,
}

/// One file of a table, as discovery listed it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileEntry {
    /// Its path in the connection's store (relative to the connection's root).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modified, in milliseconds since the Unix epoch.
    pub modified_ms: i64,
    /// The store's ETag, where it gives one.
    pub etag: Option<String>,
    /// The values of the partition columns, from its folder names (`None`: hive's null).
    pub partition_values: Vec<Option<String>>,
    /// Its row count, where its footer says (Parquet), for join planning.
    #[serde(default)]
    pub rows: Option<u64>,
}

/// What discovery recorded about one table of a `files` connection.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileSet {
    /// How its files are parsed.
    pub format: FileFormat,
    /// Whole-file compression (text formats).
    pub compression: Compression,
    /// CSV parse options (CSV only).
    pub csv: CsvOptions,
    /// What a fetch does with a row it cannot parse.
    pub bad_rows: BadRows,
    /// The table's place in the connection's store: a folder (ending in `/`), a file, or
    /// empty for the root.
    pub location: String,
    /// Hive partition columns, outermost first; they follow the file columns.
    pub partition_columns: Vec<PartitionColumn>,
    /// Its files, sorted by path.
    pub files: Vec<FileEntry>,
}

impl FileSet {
    /// The JSON the store keeps.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a file set serializes")
    }

    /// The file set stored as `text` (`None` if unreadable: the table is then discovered
    /// again before it is read).
    pub fn from_json(text: &str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// Whether its files must be read row by row: skipped bad rows, or a CSV null string
    /// (DataFusion's CSV reader does not apply one).
    pub fn needs_row_reader(&self) -> bool {
        (self.bad_rows == BadRows::Skip && !self.format.is_columnar())
            || (self.format == FileFormat::Csv && self.csv.null_string.is_some())
    }

    /// Total size of its files.
    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_compression_come_from_the_extensions() {
        assert_eq!(
            FileFormat::detect("orders.csv.gz"),
            Some((FileFormat::Csv, Compression::Gzip, "orders"))
        );
        assert_eq!(
            FileFormat::detect("part-0.parquet"),
            Some((FileFormat::Parquet, Compression::None, "part-0"))
        );
        assert_eq!(
            FileFormat::detect("events.jsonl.zst"),
            Some((FileFormat::Ndjson, Compression::Zstd, "events"))
        );
        assert_eq!(FileFormat::detect("README.md"), None);
        assert_eq!(FileFormat::detect("noext"), None);
        assert_eq!(FileFormat::detect("a.parquet.gz"), None);
    }
}
