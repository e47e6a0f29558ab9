//! What the server says about itself and its catalogs: SqlInfo, type info, table types,
//! and the catalogs, schemas and tables statements can name (read from the planner's
//! catalogs, so listing never fetches or contacts a source).

use std::sync::{Arc, LazyLock};

use arrow_flight::sql::metadata::{
    SqlInfoData, SqlInfoDataBuilder, XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    Nullable, Searchable, SqlInfo, SqlSupportedCaseSensitivity, SupportedSqlGrammar, XdbcDataType,
};
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::datasource::TableType;

use crate::session::Session;

/// One table as GetTables lists it.
pub struct TableInfo {
    /// Its catalog (a connection, `datafusion` or `quarry`).
    pub catalog: String,
    /// Its schema.
    pub schema: String,
    /// Its name.
    pub name: String,
    /// Table or view.
    pub kind: TableType,
    /// Its columns, as discovered.
    pub arrow_schema: Schema,
}

/// Every catalog, sorted.
pub fn catalogs(session: &Session) -> Vec<String> {
    let mut names = session.catalog_list().catalog_names();
    names.sort();
    names
}

/// Every (catalog, schema), sorted.
pub fn schemas(session: &Session) -> Vec<(String, String)> {
    let list = session.catalog_list();
    let mut pairs = Vec::new();
    for catalog in catalogs(session) {
        if let Some(provider) = list.catalog(&catalog) {
            let mut names = provider.schema_names();
            names.sort();
            pairs.extend(names.into_iter().map(|schema| (catalog.clone(), schema)));
        }
    }
    pairs
}

/// Every table with its schema, sorted by catalog, schema and name.
pub async fn tables(session: &Session) -> Vec<TableInfo> {
    let list = session.catalog_list();
    let mut tables = Vec::new();
    for (catalog, schema) in schemas(session) {
        let Some(provider) = list.catalog(&catalog).and_then(|c| c.schema(&schema)) else {
            continue;
        };
        let mut names = provider.table_names();
        names.sort();
        for name in names {
            // A table that vanished since the names were read is simply not listed.
            if let Ok(Some(table)) = provider.table(&name).await {
                tables.push(TableInfo {
                    catalog: catalog.clone(),
                    schema: schema.clone(),
                    name,
                    kind: table.table_type(),
                    arrow_schema: table.schema().as_ref().clone(),
                });
            }
        }
    }
    tables
}

/// The table types GetTables reports.
pub fn table_types() -> RecordBatch {
    let schema = Schema::new(vec![Field::new("table_type", DataType::Utf8, false)]);
    RecordBatch::try_new(
        Arc::new(schema),
        vec![Arc::new(StringArray::from(vec![
            "LOCAL TEMPORARY",
            "TABLE",
            "VIEW",
        ]))],
    )
    .expect("the table types batch matches its schema")
}

/// Facts about the server: name, version, SQL dialect, read-only, cancellation.
pub fn sql_info() -> &'static SqlInfoData {
    static INFO: LazyLock<SqlInfoData> = LazyLock::new(|| {
        let mut info = SqlInfoDataBuilder::new();
        info.append(SqlInfo::FlightSqlServerName, "Quarry");
        info.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        info.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        info.append(SqlInfo::FlightSqlServerReadOnly, true);
        info.append(SqlInfo::FlightSqlServerSql, true);
        info.append(SqlInfo::FlightSqlServerSubstrait, false);
        info.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        info.append(SqlInfo::FlightSqlServerCancel, true);
        info.append(SqlInfo::SqlDdlCatalog, false);
        info.append(SqlInfo::SqlDdlSchema, false);
        info.append(SqlInfo::SqlDdlTable, true);
        info.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
        info.append(
            SqlInfo::SqlIdentifierCase,
            SqlSupportedCaseSensitivity::SqlCaseSensitivityLowercase as i32,
        );
        info.append(
            SqlInfo::SqlQuotedIdentifierCase,
            SqlSupportedCaseSensitivity::SqlCaseSensitivityCaseInsensitive as i32,
        );
        info.append(
            SqlInfo::SqlSupportedGrammar,
            SupportedSqlGrammar::SqlCoreGrammar as i32,
        );
        info.append(SqlInfo::SqlAllTablesAreSelectable, true);
        info.append(SqlInfo::SqlTransactionsSupported, false);
        info.build().expect("the server facts are well formed")
    });
    &INFO
}

/// The SQL types statements use, for JDBC/ODBC clients' type info.
pub fn xdbc_types() -> &'static XdbcTypeInfoData {
    static TYPES: LazyLock<XdbcTypeInfoData> = LazyLock::new(|| {
        let mut types = XdbcTypeInfoDataBuilder::new();
        let entry =
            |name: &str, data_type: XdbcDataType, size: Option<i32>, quoted: bool| XdbcTypeInfo {
                type_name: name.into(),
                data_type,
                column_size: size,
                literal_prefix: quoted.then(|| "'".into()),
                literal_suffix: quoted.then(|| "'".into()),
                create_params: None,
                nullable: Nullable::NullabilityNullable,
                case_sensitive: quoted,
                searchable: Searchable::Full,
                unsigned_attribute: (!quoted).then_some(false),
                fixed_prec_scale: false,
                auto_increment: Some(false),
                local_type_name: Some(name.into()),
                minimum_scale: None,
                maximum_scale: None,
                sql_data_type: data_type,
                datetime_subcode: None,
                num_prec_radix: (!quoted).then_some(10),
                interval_precision: None,
            };
        for info in [
            entry("BOOLEAN", XdbcDataType::XdbcBit, Some(1), false),
            entry("TINYINT", XdbcDataType::XdbcTinyint, Some(3), false),
            entry("SMALLINT", XdbcDataType::XdbcSmallint, Some(5), false),
            entry("INTEGER", XdbcDataType::XdbcInteger, Some(10), false),
            entry("BIGINT", XdbcDataType::XdbcBigint, Some(19), false),
            entry("REAL", XdbcDataType::XdbcReal, Some(7), false),
            entry("DOUBLE", XdbcDataType::XdbcDouble, Some(15), false),
            entry("DECIMAL", XdbcDataType::XdbcDecimal, Some(38), false),
            entry("VARCHAR", XdbcDataType::XdbcVarchar, None, true),
            entry("BYTEA", XdbcDataType::XdbcVarbinary, None, true),
            entry("DATE", XdbcDataType::XdbcDate, Some(10), true),
            entry("TIME", XdbcDataType::XdbcTime, Some(15), true),
            entry("TIMESTAMP", XdbcDataType::XdbcTimestamp, Some(26), true),
        ] {
            types.append(info);
        }
        types.build().expect("the type info is well formed")
    });
    &TYPES
}
