//! Tables from a listing of files. Each file in the root is a table named after its stem;
//! each folder is a table of the files under it (hive `key=value` folders become partition
//! columns); tables declared in the config take the files their path or glob names first.
//!
//! Names are the stems and folder names made SQL identifiers: lowercase, characters other
//! than letters, digits and `_` become `_`, a leading digit gets a `t_` prefix. When names
//! collide, a folder keeps the name and each file takes its format as a suffix
//! (`sales/` → `sales`, `sales.csv` → `sales_csv`); what still collides is numbered in path
//! order (`_2`, `_3`). Files and folders whose names start with `.` or `_` are skipped, as
//! Spark's and Hive's markers (`_SUCCESS`) are.

use std::collections::{BTreeMap, HashMap};

use super::config::{DeclaredTable, FilesConfig, ParseOptions};
use crate::file_set::{Compression, FileEntry, FileFormat, FileSet, PartitionColumn};

/// One listed file, its path relative to the connection's root.
#[derive(Clone, Debug, PartialEq)]
pub struct Listed {
    /// Path under the root, `/`-separated.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modified, ms since the epoch.
    pub modified_ms: i64,
    /// The store's ETag.
    pub etag: Option<String>,
}

/// A table the layout gives, before its schema is read.
#[derive(Clone, Debug)]
pub struct PlannedTable {
    /// Its SQL name.
    pub name: String,
    /// Its files and format.
    pub set: FileSet,
    /// How its files are parsed.
    pub parse: ParseOptions,
    /// Column types that replace inferred ones.
    pub schema_override: Vec<(String, datafusion::arrow::datatypes::DataType)>,
}

/// The hive spelling of a NULL partition value.
const HIVE_NULL: &str = "__HIVE_DEFAULT_PARTITION__";

/// The tables of `listed` under `config`; `single_file` is the one file a URL names.
pub fn plan(
    listed: &[Listed],
    config: &FilesConfig,
    single_file: Option<&str>,
) -> Vec<PlannedTable> {
    let visible: Vec<&Listed> = listed.iter().filter(|f| !hidden(&f.path)).collect();
    if let Some(file) = single_file {
        let Some(entry) = visible.iter().find(|f| f.path == file) else {
            return Vec::new();
        };
        let name = FileFormat::detect(file)
            .map(|(_, _, stem)| sanitize(stem))
            .unwrap_or_else(|| sanitize(file));
        return table(name, "", &[entry], &config.parse, Vec::new())
            .into_iter()
            .collect();
    }
    let mut claimed = vec![false; visible.len()];
    let mut tables = Vec::new();
    for declared in &config.tables {
        let pattern = declared.glob.as_ref();
        let location = declared_location(declared);
        let mut files = Vec::new();
        for (i, file) in visible.iter().enumerate() {
            let takes = match (&pattern, &declared.path) {
                (Some(p), _) => p.matches(&file.path),
                (None, Some(path)) => {
                    let path = path.trim_matches('/');
                    file.path == path || file.path.starts_with(&format!("{path}/"))
                }
                (None, None) => false,
            };
            if takes {
                claimed[i] = true;
                files.push(*file);
            }
        }
        let parse = declared.parse.or(&config.parse);
        if let Some(t) = table(
            declared.name.clone(),
            &location,
            &files,
            &parse,
            declared.schema.clone(),
        ) {
            tables.push(t);
        }
    }
    let narrow = config.glob.as_ref();
    let mut root_files = Vec::new();
    let mut folders: BTreeMap<&str, Vec<&Listed>> = BTreeMap::new();
    for (i, file) in visible.iter().enumerate() {
        if claimed[i] || narrow.as_ref().is_some_and(|p| !p.matches(&file.path)) {
            continue;
        }
        match file.path.split_once('/') {
            None => root_files.push(*file),
            Some((folder, _)) => folders.entry(folder).or_default().push(*file),
        }
    }
    root_files.sort_by(|a, b| a.path.cmp(&b.path));
    let declared_names: Vec<String> = tables.iter().map(|t| t.name.clone()).collect();
    let mut layout = Vec::new();
    for (folder, files) in &folders {
        if let Some(t) = table(
            sanitize(folder),
            &format!("{folder}/"),
            files,
            &config.parse,
            Vec::new(),
        ) {
            layout.push(t);
        }
    }
    let folder_names: Vec<String> = layout.iter().map(|t| t.name.clone()).collect();
    // The formats of the root files each name stands for.
    let mut formats_by_name: HashMap<String, Vec<FileFormat>> = HashMap::new();
    let detected: Vec<_> = root_files
        .iter()
        .filter_map(|file| {
            FileFormat::detect(&file.path).map(|(f, _, stem)| (*file, f, sanitize(stem)))
        })
        .collect();
    for (_, format, name) in &detected {
        formats_by_name
            .entry(name.clone())
            .or_default()
            .push(*format);
    }
    for (file, format, name) in detected {
        let other_format = formats_by_name[&name].iter().any(|f| *f != format);
        let name = if folder_names.contains(&name) || other_format {
            format!("{name}_{}", format.as_str())
        } else {
            name
        };
        if let Some(t) = table(name, &file.path, &[file], &config.parse, Vec::new()) {
            layout.push(t);
        }
    }
    // Declared tables win their names; the rest are numbered in path order.
    let mut taken: HashMap<String, usize> = declared_names.into_iter().map(|n| (n, 1)).collect();
    for mut t in layout {
        let count = taken.entry(t.name.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            t.name = format!("{}_{count}", t.name);
        }
        tables.push(t);
    }
    tables
}

fn declared_location(declared: &DeclaredTable) -> String {
    match (&declared.path, &declared.glob) {
        (Some(path), _) => path.trim_matches('/').to_owned(),
        (None, Some(glob)) => {
            let glob = glob.as_str();
            // The folders before the first segment with a glob character.
            let literal: Vec<&str> = glob
                .split('/')
                .take_while(|s| !s.contains(['*', '?', '[', '{']))
                .collect();
            match literal.len() {
                0 => String::new(),
                n if n == glob.split('/').count() => literal.join("/"),
                _ => format!("{}/", literal.join("/")),
            }
        }
        (None, None) => String::new(),
    }
}

/// The table of `files` under `location`, in the format most of them have (or the one
/// `parse` sets); `None` if no file has a format Quarry reads.
fn table(
    name: String,
    location: &str,
    files: &[&Listed],
    parse: &ParseOptions,
    schema_override: Vec<(String, datafusion::arrow::datatypes::DataType)>,
) -> Option<PlannedTable> {
    let kind = |file: &Listed| -> Option<(FileFormat, Compression)> {
        let name = file.path.rsplit('/').next().unwrap_or(&file.path);
        let detected = FileFormat::detect(name).map(|(f, c, _)| (f, c));
        match (parse.format, detected) {
            (Some(format), Some((_, c))) => Some((format, parse.compression.unwrap_or(c))),
            (Some(format), None) => Some((format, parse.compression.unwrap_or_default())),
            (None, Some((f, c))) => Some((f, parse.compression.unwrap_or(c))),
            (None, None) => None,
        }
    };
    let mut counts: HashMap<(FileFormat, Compression), usize> = HashMap::new();
    for file in files {
        if let Some(k) = kind(file) {
            *counts.entry(k).or_default() += 1;
        }
    }
    let (&chosen, _) = counts.iter().max_by_key(|(k, n)| {
        let rank = FileFormat::ALL.iter().position(|f| *f == k.0).unwrap_or(0);
        (**n, usize::MAX - rank, k.1 == Compression::None)
    })?;
    let mut members: Vec<&Listed> = files
        .iter()
        .copied()
        .filter(|f| kind(f) == Some(chosen))
        .collect();
    members.sort_by(|a, b| a.path.cmp(&b.path));
    let folder = if location.ends_with('/') || location.is_empty() {
        location
    } else {
        ""
    };
    let partitions = partition_columns(folder, &members);
    let files = members
        .iter()
        .map(|f| FileEntry {
            path: f.path.clone(),
            size: f.size,
            modified_ms: f.modified_ms,
            etag: f.etag.clone(),
            partition_values: partitions
                .as_ref()
                .map(|(_, values)| values[&f.path].clone())
                .unwrap_or_default(),
            rows: None,
        })
        .collect();
    let first = members.first().map_or("", |f| f.path.as_str());
    Some(PlannedTable {
        name,
        set: FileSet {
            format: chosen.0,
            compression: chosen.1,
            csv: parse.csv(first),
            bad_rows: parse.bad_rows.unwrap_or_default(),
            location: location.to_owned(),
            partition_columns: partitions.map(|(columns, _)| columns).unwrap_or_default(),
            files,
        },
        parse: parse.clone(),
        schema_override,
    })
}

type Partitions = (Vec<PartitionColumn>, HashMap<String, Vec<Option<String>>>);

/// The hive partition columns of files under `folder`: every file's folders between
/// `folder` and its name are `key=value`, with the same keys in the same order.
fn partition_columns(folder: &str, files: &[&Listed]) -> Option<Partitions> {
    let mut keys: Option<Vec<String>> = None;
    let mut values = HashMap::new();
    for file in files {
        let relative = file.path.strip_prefix(folder)?;
        let segments: Vec<&str> = relative.split('/').collect();
        let dirs = &segments[..segments.len() - 1];
        let mut these_keys = Vec::new();
        let mut these_values = Vec::new();
        for dir in dirs {
            let (key, value) = dir.split_once('=')?;
            if key.is_empty() {
                return None;
            }
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8_lossy()
                .into_owned();
            these_keys.push(key.to_owned());
            these_values.push((value != HIVE_NULL).then_some(value));
        }
        match &keys {
            None => keys = Some(these_keys),
            Some(k) if *k == these_keys => {}
            Some(_) => return None,
        }
        values.insert(file.path.clone(), these_values);
    }
    let keys = keys.filter(|k| !k.is_empty())?;
    let columns = keys
        .iter()
        .enumerate()
        .map(|(i, key)| {
            let integer = values.values().all(|v: &Vec<Option<String>>| {
                v[i].as_deref().is_none_or(|s| s.parse::<i64>().is_ok())
            });
            PartitionColumn {
                name: key.clone(),
                arrow_type: if integer { "Int64" } else { "Utf8" }.to_owned(),
            }
        })
        .collect();
    Some((columns, values))
}

fn hidden(path: &str) -> bool {
    path.split('/')
        .any(|s| s.starts_with('.') || s.starts_with('_'))
}

/// `text` as a SQL identifier (see the module's naming rule).
pub fn sanitize(text: &str) -> String {
    let mut name = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_alphanumeric() { c } else { '_' };
        if !(c == '_' && name.ends_with('_')) {
            name.push(c);
        }
    }
    let name = name.trim_matches('_');
    match name.chars().next() {
        None => "t".to_owned(),
        Some(c) if c.is_ascii_digit() => format!("t_{name}"),
        Some(_) => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(paths: &[&str]) -> Vec<Listed> {
        paths
            .iter()
            .map(|p| Listed {
                path: p.to_string(),
                size: 10,
                modified_ms: 0,
                etag: None,
            })
            .collect()
    }

    fn config(extra: serde_json::Value) -> FilesConfig {
        let dir = std::env::temp_dir();
        let mut value = serde_json::json!({ "url": dir.display().to_string() });
        for (k, v) in extra.as_object().unwrap() {
            value[k] = v.clone();
        }
        match crate::source::SourceConfig::parse(crate::SourceType::Files, &value).unwrap() {
            crate::source::SourceConfig::Files(c) => c,
            _ => unreachable!(),
        }
    }

    fn names(tables: &[PlannedTable]) -> Vec<&str> {
        let mut names: Vec<&str> = tables.iter().map(|t| t.name.as_str()).collect();
        names.sort();
        names
    }

    #[test]
    fn names_are_sql_identifiers() {
        assert_eq!(sanitize("Sales 2024-Q1"), "sales_2024_q1");
        assert_eq!(sanitize("2024"), "t_2024");
        assert_eq!(sanitize("--"), "t");
        assert_eq!(sanitize("Größe"), "gr_e");
    }

    #[test]
    fn root_files_and_folders_are_tables_and_markers_are_skipped() {
        let files = listed(&[
            "orders.csv",
            "README.md",
            "events/part-0.ndjson",
            "events/part-1.ndjson",
            "events/_SUCCESS",
            ".hidden.csv",
        ]);
        let tables = plan(&files, &config(serde_json::json!({})), None);
        assert_eq!(names(&tables), ["events", "orders"]);
        let events = tables.iter().find(|t| t.name == "events").unwrap();
        assert_eq!(events.set.format, FileFormat::Ndjson);
        assert_eq!(events.set.files.len(), 2);
    }

    #[test]
    fn collisions_give_files_their_format_and_then_a_number() {
        let files = listed(&[
            "sales/a.parquet",
            "sales.csv",
            "Sales.json",
            "x y.csv",
            "x_y.csv",
        ]);
        let tables = plan(&files, &config(serde_json::json!({})), None);
        assert_eq!(
            names(&tables),
            ["sales", "sales_csv", "sales_json", "x_y", "x_y_2"]
        );
    }

    #[test]
    fn hive_folders_become_typed_partition_columns() {
        let files = listed(&[
            "t/year=2023/region=eu/a.parquet",
            "t/year=2024/region=us%20east/b.parquet",
            "t/year=2024/region=__HIVE_DEFAULT_PARTITION__/c.parquet",
        ]);
        let tables = plan(&files, &config(serde_json::json!({})), None);
        let t = &tables[0];
        assert_eq!(
            t.set
                .partition_columns
                .iter()
                .map(|c| (c.name.as_str(), c.arrow_type.as_str()))
                .collect::<Vec<_>>(),
            [("year", "Int64"), ("region", "Utf8")]
        );
        // Sorted by path: hive's null spelling comes before "us%20east".
        assert_eq!(t.set.files[1].partition_values[1], None);
        assert_eq!(
            t.set.files[2].partition_values,
            [Some("2024".to_owned()), Some("us east".to_owned())]
        );
    }

    #[test]
    fn globs_narrow_the_layout_and_declared_tables_take_their_files_first() {
        let files = listed(&[
            "a/x.csv",
            "a/y.json",
            "b/z.csv",
            "logs/1/e.json",
            "logs/2/e.json",
        ]);
        let narrowed = plan(
            &files,
            &config(serde_json::json!({"glob": "*/*.csv"})),
            None,
        );
        assert_eq!(names(&narrowed), ["a", "b"]);
        assert_eq!(narrowed[0].set.format, FileFormat::Csv);
        let declared = plan(
            &files,
            &config(serde_json::json!({"tables": {"events": {"glob": "logs/*/*.json"}}})),
            None,
        );
        assert_eq!(names(&declared), ["a", "b", "events"]);
        let events = declared.iter().find(|t| t.name == "events").unwrap();
        assert_eq!(events.set.files.len(), 2);
        assert_eq!(events.set.location, "logs/");
    }
}
