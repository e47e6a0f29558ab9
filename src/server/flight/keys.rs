//! GetPrimaryKeys, GetImportedKeys and GetExportedKeys, answered from the keys discovery
//! stored (no source is contacted). A connection is a catalog; its schemas and tables are
//! the source's. Quarry does not discover foreign keys' update and delete rules, and reads
//! nothing it could cascade: both rules read NO_ACTION.

use std::sync::Arc;

use datafusion::arrow::array::{Int32Array, RecordBatch, StringArray, UInt8Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::table::{ConstraintKind, TableRecord};

/// NO_ACTION in Flight SQL's `UpdateDeleteRules`.
const NO_ACTION: u8 = 3;

/// Which tables a keys command asks about: `None` does not narrow.
pub struct TableFilter<'a> {
    /// The catalog (connection name).
    pub catalog: Option<&'a str>,
    /// The schema.
    pub schema: Option<&'a str>,
    /// The table.
    pub table: &'a str,
}

impl<'a> TableFilter<'a> {
    /// The filter of a keys command's `catalog`, `db_schema` and `table` fields.
    pub fn new(catalog: &'a Option<String>, schema: &'a Option<String>, table: &'a str) -> Self {
        TableFilter {
            catalog: catalog.as_deref(),
            schema: schema.as_deref(),
            table,
        }
    }

    fn matches(&self, catalog: &str, schema: &str, table: &str) -> bool {
        self.catalog.is_none_or(|c| c == catalog)
            && self.schema.is_none_or(|s| s == schema)
            && self.table == table
    }
}

/// The discovered tables of every connection `catalog` allows, with the connection's name
/// (its catalog). A foreign key references its own connection's tables, so both sides of
/// every key are here.
async fn tables(engine: &Engine, catalog: Option<&str>) -> Result<Vec<(String, TableRecord)>> {
    let mut all = Vec::new();
    for connection in engine.connections().await? {
        if catalog.is_some_and(|c| c != connection.name.as_str()) {
            continue;
        }
        for table in engine.tables(&connection).await? {
            all.push((connection.name.to_string(), table));
        }
    }
    Ok(all)
}

/// The schema of a GetPrimaryKeys answer, as the Flight SQL spec gives it.
pub fn primary_keys_schema() -> Schema {
    Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ])
}

/// The schema of a GetImportedKeys or GetExportedKeys answer, as the spec gives it.
pub fn foreign_keys_schema() -> Schema {
    Schema::new(vec![
        Field::new("pk_catalog_name", DataType::Utf8, true),
        Field::new("pk_db_schema_name", DataType::Utf8, true),
        Field::new("pk_table_name", DataType::Utf8, false),
        Field::new("pk_column_name", DataType::Utf8, false),
        Field::new("fk_catalog_name", DataType::Utf8, true),
        Field::new("fk_db_schema_name", DataType::Utf8, true),
        Field::new("fk_table_name", DataType::Utf8, false),
        Field::new("fk_column_name", DataType::Utf8, false),
        Field::new("key_sequence", DataType::Int32, false),
        Field::new("fk_key_name", DataType::Utf8, true),
        Field::new("pk_key_name", DataType::Utf8, true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ])
}

/// The primary key columns of the tables `filter` names, in key order.
pub async fn primary_keys(engine: &Engine, filter: &TableFilter<'_>) -> Result<RecordBatch> {
    let mut rows: Vec<[String; 5]> = Vec::new();
    let mut sequence = Vec::new();
    for (catalog, table) in tables(engine, filter.catalog).await? {
        if !filter.matches(&catalog, &table.schema, &table.name) {
            continue;
        }
        if let Some(key) = table.primary_key() {
            for (i, column) in key.columns.iter().enumerate() {
                rows.push([
                    catalog.clone(),
                    table.schema.clone(),
                    table.name.clone(),
                    column.clone(),
                    key.name.clone(),
                ]);
                sequence.push(i as i32 + 1);
            }
        }
    }
    let column = |i: usize| Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r[i])));
    RecordBatch::try_new(
        Arc::new(primary_keys_schema()),
        vec![
            column(0),
            column(1),
            column(2),
            column(3),
            column(4),
            Arc::new(Int32Array::from(sequence)),
        ],
    )
    .map_err(|e| Error::Sql(e.into()))
}

/// Which side of a foreign key the filter names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The table holding the foreign key (GetImportedKeys).
    Referencing,
    /// The table it references (GetExportedKeys).
    Referenced,
}

/// The foreign keys whose `side` is a table `filter` names, one row per column. A key
/// references a table of its own connection; the referenced key's name is the referenced
/// table's primary key, when the columns are that key.
pub async fn foreign_keys(
    engine: &Engine,
    filter: &TableFilter<'_>,
    side: Side,
) -> Result<RecordBatch> {
    let all = tables(engine, filter.catalog).await?;
    // (pk catalog, schema, table, column, fk catalog, schema, table, column, fk name, pk name)
    let mut rows: Vec<[Option<String>; 10]> = Vec::new();
    let mut sequence = Vec::new();
    for (catalog, table) in &all {
        for key in &table.constraints {
            let (ConstraintKind::ForeignKey, Some(target)) = (key.kind, &key.references) else {
                continue;
            };
            let named = match side {
                Side::Referencing => filter.matches(catalog, &table.schema, &table.name),
                Side::Referenced => filter.matches(catalog, &target.schema, &target.table),
            };
            if !named {
                continue;
            }
            let pk_name = all
                .iter()
                .find(|(c, t)| c == catalog && t.schema == target.schema && t.name == target.table)
                .and_then(|(_, t)| t.primary_key())
                .filter(|pk| pk.columns == target.columns)
                .map(|pk| pk.name.clone());
            for (i, (fk_column, pk_column)) in key.columns.iter().zip(&target.columns).enumerate() {
                rows.push([
                    Some(catalog.clone()),
                    Some(target.schema.clone()),
                    Some(target.table.clone()),
                    Some(pk_column.clone()),
                    Some(catalog.clone()),
                    Some(table.schema.clone()),
                    Some(table.name.clone()),
                    Some(fk_column.clone()),
                    Some(key.name.clone()),
                    pk_name.clone(),
                ]);
                sequence.push(i as i32 + 1);
            }
        }
    }
    let column = |i: usize| Arc::new(StringArray::from_iter(rows.iter().map(|r| r[i].clone())));
    let rules = || Arc::new(UInt8Array::from(vec![NO_ACTION; rows.len()]));
    RecordBatch::try_new(
        Arc::new(foreign_keys_schema()),
        vec![
            column(0),
            column(1),
            column(2),
            column(3),
            column(4),
            column(5),
            column(6),
            column(7),
            Arc::new(Int32Array::from(sequence)),
            column(8),
            column(9),
            rules(),
            rules(),
        ],
    )
    .map_err(|e| Error::Sql(e.into()))
}
