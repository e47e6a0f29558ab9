//! Shared by every source's discovery: groups column rows (ordered by schema, table and
//! position) into table records, and gives each table the Arrow schema its fetch must
//! produce, from the same mapping the fetch uses.

use chrono::{DateTime, Utc};
use datafusion::arrow::datatypes::{DataType, Field, Schema};

use crate::table::{
    ColumnRecord, ConstraintColumn, TableRecord, group_constraints, schema_to_json,
};

/// The columns every source's discovery query returns, whatever the database.
pub struct TableColumnRow {
    /// Source schema.
    pub schema: String,
    /// Source table.
    pub table: String,
    /// `table`, `view`, ... as the query reports it.
    pub table_type: String,
    /// The source's row estimate.
    pub row_estimate: Option<i64>,
    /// The source's size estimate in bytes.
    pub byte_estimate: Option<i64>,
    /// Column name.
    pub column: String,
    /// 1-based position.
    pub position: i64,
}

impl TableColumnRow {
    /// Reads the shared columns of one discovery row.
    pub fn read<R: sqlx::Row>(row: &R) -> Result<Self, sqlx::Error>
    where
        for<'a> &'a str: sqlx::ColumnIndex<R>,
        for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
        for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(TableColumnRow {
            schema: row.try_get("table_schema")?,
            table: row.try_get("table_name")?,
            table_type: row.try_get("table_type")?,
            row_estimate: row.try_get("row_estimate")?,
            byte_estimate: row.try_get("byte_estimate")?,
            column: row.try_get("column_name")?,
            position: row.try_get("ordinal_position")?,
        })
    }
}

/// A discovered column before grouping.
pub struct DiscoveredColumn {
    /// Column name.
    pub name: String,
    /// 1-based position.
    pub position: i64,
    /// Exact source type text.
    pub source_type: String,
    /// Numeric precision and scale, where the type has them.
    pub precision_scale: (Option<i64>, Option<i64>),
    /// Whether NULLs are allowed.
    pub nullable: bool,
    /// The Arrow type it maps to.
    pub arrow: DataType,
}

/// Collects columns into tables.
pub struct TableCollector {
    now: DateTime<Utc>,
    tables: Vec<TableRecord>,
    fields: Vec<Vec<Field>>,
}

impl Default for TableCollector {
    fn default() -> Self {
        TableCollector {
            now: Utc::now(),
            tables: Vec::new(),
            fields: Vec::new(),
        }
    }
}

impl TableCollector {
    /// Adds a column of `schema.table`, starting a new table (of `table_type`, with its
    /// row and byte estimates) when the table changes.
    pub fn column(
        &mut self,
        schema: String,
        table: String,
        table_type: &str,
        (row_estimate, byte_estimate): (Option<i64>, Option<i64>),
        column: DiscoveredColumn,
    ) {
        if self
            .tables
            .last()
            .is_none_or(|t| t.schema != schema || t.name != table)
        {
            self.tables.push(TableRecord {
                schema,
                name: table,
                table_type: table_type.to_owned(),
                row_estimate,
                byte_estimate,
                options: Default::default(),
                arrow_schema: None,
                discovered_at: self.now,
                fetch_count: 0,
                columns: Vec::new(),
                constraints: Vec::new(),
                refresh: Default::default(),
                files: None,
            });
            self.fields.push(Vec::new());
        }
        let (precision, scale) = column.precision_scale;
        self.tables
            .last_mut()
            .expect("pushed above")
            .columns
            .push(ColumnRecord {
                name: column.name.clone(),
                ordinal_position: column.position,
                source_type: column.source_type,
                numeric_precision: precision,
                numeric_scale: scale,
                is_nullable: column.nullable,
                arrow_type: column.arrow.to_string(),
            });
        self.fields
            .last_mut()
            .expect("pushed above")
            .push(Field::new(column.name, column.arrow, column.nullable));
    }

    /// The tables, each with its serialized Arrow schema.
    pub fn finish(mut self) -> Vec<TableRecord> {
        for (table, fields) in self.tables.iter_mut().zip(self.fields) {
            table.arrow_schema = Some(schema_to_json(&Schema::new(fields)));
        }
        self.tables
    }
}

/// Reads every row of a constraint query, keeping the kinds Quarry knows.
pub fn read_constraint_rows<R: sqlx::Row>(rows: &[R]) -> Result<Vec<ConstraintColumn>, sqlx::Error>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    for<'r> String: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    let mut read = Vec::with_capacity(rows.len());
    for row in rows {
        read.extend(ConstraintColumn::read(row)?);
    }
    Ok(read)
}

/// Gives each table its constraints; rows of tables discovery did not keep are dropped.
pub fn attach_constraints(tables: &mut [TableRecord], rows: Vec<ConstraintColumn>) {
    let mut by_table = group_constraints(rows);
    for table in tables {
        if let Some(constraints) = by_table.remove(&(table.schema.clone(), table.name.clone())) {
            table.constraints = constraints;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::ConstraintKind;

    fn row(
        table: &str,
        name: &str,
        kind: ConstraintKind,
        column: &str,
        position: i64,
    ) -> ConstraintColumn {
        ConstraintColumn {
            schema: "s".into(),
            table: table.into(),
            name: name.into(),
            kind,
            column: column.into(),
            position,
            references: (kind == ConstraintKind::ForeignKey)
                .then(|| ("s".into(), "parent".into(), format!("p_{column}"))),
        }
    }

    #[test]
    fn constraint_rows_group_in_key_order_per_table() {
        let mut collector = TableCollector::default();
        for (table, column) in [("child", "a"), ("child", "b"), ("parent", "p_a")] {
            collector.column(
                "s".into(),
                table.into(),
                "table",
                (None, None),
                DiscoveredColumn {
                    name: column.into(),
                    position: 1,
                    source_type: "int".into(),
                    precision_scale: (None, None),
                    nullable: false,
                    arrow: DataType::Int32,
                },
            );
        }
        let mut tables = collector.finish();
        attach_constraints(
            &mut tables,
            vec![
                row("child", "idx", ConstraintKind::Index, "b", 1),
                row("child", "fk", ConstraintKind::ForeignKey, "b", 2),
                row("child", "fk", ConstraintKind::ForeignKey, "a", 1),
                row("child", "pk", ConstraintKind::PrimaryKey, "a", 1),
                row("gone", "pk", ConstraintKind::PrimaryKey, "x", 1),
            ],
        );
        let child = &tables[0].constraints;
        assert_eq!(
            child.iter().map(|c| c.kind).collect::<Vec<_>>(),
            [
                ConstraintKind::PrimaryKey,
                ConstraintKind::ForeignKey,
                ConstraintKind::Index
            ]
        );
        assert_eq!(tables[0].primary_key().unwrap().columns, ["a"]);
        assert_eq!(child[1].columns, ["a", "b"]);
        let target = child[1].references.as_ref().unwrap();
        assert_eq!(
            (target.table.as_str(), &target.columns[..]),
            ("parent", &["p_a".to_owned(), "p_b".to_owned()][..])
        );
        assert!(tables[1].constraints.is_empty());
    }
}
