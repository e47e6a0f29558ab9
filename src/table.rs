//! The records Quarry keeps about a source table, shared by the store, the sources, the
//! cache and events: the one name of a table ([`TableRef`]), a discovered table with its
//! columns, a cache entry, and the one JSON codec of the Arrow schemas they carry.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::Schema;

use crate::access::TableOptions;
use crate::error::{Error, Result};
use crate::file_set::FileSet;
use crate::id::ConnectionId;
use crate::refresh::{RefreshSettings, RefreshStatus};

/// A table of a connection: how the store, the cache, events and fetches name it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub struct TableRef {
    /// The owning connection.
    pub connection_id: ConnectionId,
    /// Source schema (`main` for SQLite).
    pub schema: String,
    /// Source table.
    pub table: String,
}

impl TableRef {
    /// `schema.table` of `connection_id`.
    pub fn new(
        connection_id: &ConnectionId,
        schema: impl Into<String>,
        table: impl Into<String>,
    ) -> Self {
        TableRef {
            connection_id: connection_id.clone(),
            schema: schema.into(),
            table: table.into(),
        }
    }

    /// Whether this is `record`, the discovered table.
    pub fn is(&self, record: &TableRecord) -> bool {
        self.schema == record.schema && self.table == record.name
    }
}

/// A discovered source table and its columns.
#[derive(Clone, Debug, PartialEq)]
pub struct TableRecord {
    /// Source schema (`main` for SQLite).
    pub schema: String,
    /// Source table name.
    pub name: String,
    /// `table` or `view`.
    pub table_type: String,
    /// The source's row estimate.
    pub row_estimate: Option<i64>,
    /// The source's estimate of the table's size on disk, in bytes.
    pub byte_estimate: Option<i64>,
    /// Options set on this table (`set_table_options`); kept across discoveries.
    pub options: TableOptions,
    /// The Arrow schema a fetch must produce, serialized.
    pub arrow_schema: Option<String>,
    /// When it was discovered.
    pub discovered_at: DateTime<Utc>,
    /// How many times it has been fetched into the cache.
    pub fetch_count: i64,
    /// Its columns in ordinal order.
    pub columns: Vec<ColumnRecord>,
    /// Its primary key, unique constraints, foreign keys and indexes, as discovered.
    pub constraints: Vec<Constraint>,
    /// What its last refresh did, and its last refresh error.
    pub refresh: RefreshStatus,
    /// A `files` connection's table: its format and files, as discovered.
    pub files: Option<FileSet>,
}

impl TableRecord {
    /// This table of `connection_id`.
    pub fn table_ref(&self, connection_id: &ConnectionId) -> TableRef {
        TableRef::new(connection_id, &self.schema, &self.name)
    }

    /// The primary key, if the source declares one.
    pub fn primary_key(&self) -> Option<&Constraint> {
        self.constraints
            .iter()
            .find(|c| c.kind == ConstraintKind::PrimaryKey)
    }

    /// The refresh settings it has: its own, over its connection's (`connection_config`).
    pub fn refresh_settings(&self, connection_config: &serde_json::Value) -> RefreshSettings {
        let defaults = RefreshSettings::from_config(connection_config).unwrap_or_default();
        self.options.refresh.or(&defaults)
    }

    /// How `now`, a later discovery of this table, differs in its columns: each column
    /// added, removed, or changed in source type or nullability, in words.
    pub fn column_changes(&self, now: &TableRecord) -> Vec<String> {
        let described = |c: &ColumnRecord| format!("{} ({})", c.name, c.source_type);
        let nullable = |c: &ColumnRecord| if c.is_nullable { "" } else { " NOT NULL" };
        let mut changes = Vec::new();
        for column in &now.columns {
            match self.columns.iter().find(|c| c.name == column.name) {
                None => changes.push(format!("added {}", described(column))),
                Some(old)
                    if old.source_type != column.source_type
                        || old.arrow_type != column.arrow_type
                        || old.is_nullable != column.is_nullable =>
                {
                    changes.push(format!(
                        "changed {} from {}{} to {}{}",
                        column.name,
                        old.source_type,
                        nullable(old),
                        column.source_type,
                        nullable(column)
                    ));
                }
                Some(_) => {}
            }
        }
        for old in &self.columns {
            if !now.columns.iter().any(|c| c.name == old.name) {
                changes.push(format!("removed {}", described(old)));
            }
        }
        changes
    }

    /// This table's current entry among its connection's `entries`.
    pub fn current_entry<'a>(&self, entries: &'a [CacheEntry]) -> Option<&'a CacheEntry> {
        entries
            .iter()
            .rev()
            .find(|e| e.is_current && e.table.is(self))
    }
}

/// A discovered column.
#[derive(Clone, Debug, PartialEq)]
pub struct ColumnRecord {
    /// Column name.
    pub name: String,
    /// 1-based position.
    pub ordinal_position: i64,
    /// Exact source type text, e.g. `numeric(38,10)`.
    pub source_type: String,
    /// Numeric precision, where the type has one.
    pub numeric_precision: Option<i64>,
    /// Numeric scale, where the type has one.
    pub numeric_scale: Option<i64>,
    /// Whether NULLs are allowed.
    pub is_nullable: bool,
    /// The Arrow type it maps to.
    pub arrow_type: String,
}

/// What a [`Constraint`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConstraintKind {
    /// The primary key.
    PrimaryKey,
    /// A unique constraint, or a unique index over whole columns.
    Unique,
    /// A foreign key.
    ForeignKey,
    /// An index that enforces nothing.
    Index,
}

impl ConstraintKind {
    /// Every kind.
    pub const ALL: [ConstraintKind; 4] = [
        ConstraintKind::PrimaryKey,
        ConstraintKind::Unique,
        ConstraintKind::ForeignKey,
        ConstraintKind::Index,
    ];

    /// The SQL name (`PRIMARY KEY`, `UNIQUE`, `FOREIGN KEY`, `INDEX`).
    pub fn as_str(self) -> &'static str {
        match self {
            ConstraintKind::PrimaryKey => "PRIMARY KEY",
            ConstraintKind::Unique => "UNIQUE",
            ConstraintKind::ForeignKey => "FOREIGN KEY",
            ConstraintKind::Index => "INDEX",
        }
    }

    /// The kind named `name` by [`ConstraintKind::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        ConstraintKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

/// A key, constraint or index of a source table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    /// Its name at the source (SQLite's unnamed primary key is `<table>_pkey`).
    pub name: String,
    /// What it is.
    pub kind: ConstraintKind,
    /// Its columns, in key order.
    pub columns: Vec<String>,
    /// For a foreign key, the table and columns it references, column for column.
    pub references: Option<ConstraintTarget>,
}

/// The referenced side of a foreign key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConstraintTarget {
    /// Source schema of the referenced table.
    pub schema: String,
    /// The referenced table.
    pub table: String,
    /// The referenced columns, in the order of the key's columns.
    pub columns: Vec<String>,
}

/// One column of a key, constraint or index: how sources report them and the store keeps
/// them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConstraintColumn {
    /// Source schema of the constrained table.
    pub schema: String,
    /// The constrained table.
    pub table: String,
    /// The constraint's or index's name.
    pub name: String,
    /// What it is.
    pub kind: ConstraintKind,
    /// The column.
    pub column: String,
    /// 1-based position in the key.
    pub position: i64,
    /// For a foreign key: the referenced schema, table and column.
    pub references: Option<(String, String, String)>,
}

/// Groups constraint columns into constraints, columns in key order, per (schema, table):
/// the primary key first, then unique constraints, foreign keys and indexes, each by name.
pub fn group_constraints(
    rows: Vec<ConstraintColumn>,
) -> BTreeMap<(String, String), Vec<Constraint>> {
    type Key = (String, String, ConstraintKind, String);
    let mut grouped: BTreeMap<Key, Vec<ConstraintColumn>> = BTreeMap::new();
    for row in rows {
        let key = (
            row.schema.clone(),
            row.table.clone(),
            row.kind,
            row.name.clone(),
        );
        grouped.entry(key).or_default().push(row);
    }
    let mut by_table: BTreeMap<(String, String), Vec<Constraint>> = BTreeMap::new();
    for ((schema, table, kind, name), mut columns) in grouped {
        columns.sort_by_key(|c| c.position);
        let references = match columns.iter().find_map(|c| c.references.as_ref()) {
            Some((schema, table, _)) if kind == ConstraintKind::ForeignKey => {
                Some(ConstraintTarget {
                    schema: schema.clone(),
                    table: table.clone(),
                    columns: columns
                        .iter()
                        .filter_map(|c| c.references.as_ref().map(|r| r.2.clone()))
                        .collect(),
                })
            }
            _ => None,
        };
        by_table
            .entry((schema, table))
            .or_default()
            .push(Constraint {
                name,
                kind,
                columns: columns.into_iter().map(|c| c.column).collect(),
                references,
            });
    }
    by_table
}

impl ConstraintColumn {
    /// Reads one row with the columns `table_schema`, `table_name`, `constraint_name`,
    /// `constraint_type`, `column_name`, `ordinal_position`, `referenced_schema`,
    /// `referenced_table` and `referenced_column` (sources' constraint queries and the
    /// store's table use these names); `None` for a kind Quarry does not keep.
    pub fn read<R: sqlx::Row>(row: &R) -> std::result::Result<Option<Self>, sqlx::Error>
    where
        for<'a> &'a str: sqlx::ColumnIndex<R>,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        let referenced: (Option<String>, Option<String>, Option<String>) = (
            row.try_get("referenced_schema")?,
            row.try_get("referenced_table")?,
            row.try_get("referenced_column")?,
        );
        let Some(kind) = ConstraintKind::parse(&row.try_get::<String, _>("constraint_type")?)
        else {
            return Ok(None);
        };
        Ok(Some(ConstraintColumn {
            schema: row.try_get("table_schema")?,
            table: row.try_get("table_name")?,
            name: row.try_get("constraint_name")?,
            kind,
            column: row.try_get("column_name")?,
            position: row.try_get("ordinal_position")?,
            references: match referenced {
                (Some(schema), Some(table), Some(column)) => Some((schema, table, column)),
                _ => None,
            },
        }))
    }

    /// The referenced schema, table and column, each `None` when this is no foreign key.
    pub fn referenced_parts(&self) -> (Option<String>, Option<String>, Option<String>) {
        match &self.references {
            Some((schema, table, column)) => (
                Some(schema.clone()),
                Some(table.clone()),
                Some(column.clone()),
            ),
            None => (None, None, None),
        }
    }
}

impl Constraint {
    /// Its columns as rows of `schema.table`, as the store keeps them.
    pub fn column_rows(&self, schema: &str, table: &str) -> Vec<ConstraintColumn> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, column)| ConstraintColumn {
                schema: schema.to_owned(),
                table: table.to_owned(),
                name: self.name.clone(),
                kind: self.kind,
                column: column.clone(),
                position: i as i64 + 1,
                references: self.references.as_ref().and_then(|r| {
                    let to = r.columns.get(i)?;
                    Some((r.schema.clone(), r.table.clone(), to.clone()))
                }),
            })
            .collect()
    }
}

/// One immutable, versioned copy of a source table: a base Parquet file, plus the delta
/// files `append` refreshes added since (a later version may share earlier versions' files).
#[derive(Clone, Debug, PartialEq)]
pub struct CacheEntry {
    /// The table it copies.
    pub table: TableRef,
    /// Version, increasing per table.
    pub version: i64,
    /// The base file's path, relative to the data dir.
    pub path: String,
    /// Delta files' paths, relative to the data dir, oldest first.
    pub deltas: Vec<String>,
    /// Rows in all its files.
    pub row_count: i64,
    /// Size of all its files, in bytes.
    pub byte_size: i64,
    /// Arrow schema of the file, serialized.
    pub arrow_schema: String,
    /// When the fetch finished.
    pub fetched_at: DateTime<Utc>,
    /// False once a newer version replaced it (kept until readers are done).
    pub is_current: bool,
    /// Rows its fetches left out as unparseable (`bad_rows = 'skip'`).
    pub skipped_rows: i64,
}

impl CacheEntry {
    /// Its files, relative to the data dir: the base, then the deltas.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.path.as_str()).chain(self.deltas.iter().map(String::as_str))
    }
}

/// Serializes an Arrow schema for the store.
pub fn schema_to_json(schema: &Schema) -> String {
    serde_json::to_string(schema).expect("an Arrow schema always serializes")
}

/// Reads a schema written by [`schema_to_json`].
pub fn schema_from_json(text: &str, table: &str) -> Result<Schema> {
    serde_json::from_str(text).map_err(|e| Error::Fetch {
        table: table.to_owned(),
        message: format!("the stored schema is unreadable ({e}); run discovery again"),
    })
}
