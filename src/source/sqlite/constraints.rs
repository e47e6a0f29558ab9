//! A SQLite table's keys, constraints and indexes, from its pragmas. SQLite names neither
//! its primary key nor its foreign keys: they are called `<table>_pkey` and
//! `<table>_<columns>_fkey`, as PostgreSQL would name them. An index over an expression is
//! left out (it names no column); a partial unique index is a plain index.

use sqlx::sqlite::SqlitePool;
use sqlx::{Row, SqliteConnection};

use crate::table::{ConstraintColumn, ConstraintKind};

/// The constraint rows of `table`, whose primary key discovery read already (`key`, its
/// columns in key order).
pub(super) async fn constraints(
    pool: &SqlitePool,
    table: &str,
    key: Vec<String>,
) -> Result<Vec<ConstraintColumn>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let mut rows = Vec::new();
    let row = |name: &str, kind: ConstraintKind, column: String, position: i64| ConstraintColumn {
        schema: "main".into(),
        table: table.to_owned(),
        name: name.to_owned(),
        kind,
        column,
        position,
        references: None,
    };

    let key_name = format!("{table}_pkey");
    for (i, column) in key.into_iter().enumerate() {
        rows.push(row(
            &key_name,
            ConstraintKind::PrimaryKey,
            column,
            i as i64 + 1,
        ));
    }

    let indexes = sqlx::query(
        "SELECT name, \"unique\" AS is_unique, origin, partial FROM pragma_index_list($1)",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    for index in &indexes {
        let name: String = index.try_get("name")?;
        // The primary key's own index is the key, listed above.
        if index.try_get::<String, _>("origin")? == "pk" {
            continue;
        }
        let unique =
            index.try_get::<i64, _>("is_unique")? != 0 && index.try_get::<i64, _>("partial")? == 0;
        let columns: Vec<Option<String>> =
            sqlx::query_scalar("SELECT name FROM pragma_index_info($1) ORDER BY seqno")
                .bind(&name)
                .fetch_all(&mut *conn)
                .await?;
        let Some(columns) = columns.into_iter().collect::<Option<Vec<_>>>() else {
            continue;
        };
        let kind = if unique {
            ConstraintKind::Unique
        } else {
            ConstraintKind::Index
        };
        for (i, column) in columns.into_iter().enumerate() {
            rows.push(row(&name, kind, column, i as i64 + 1));
        }
    }

    let references = sqlx::query(
        "SELECT id, \"table\" AS parent, \"from\" AS child_column, \"to\" AS parent_column
         FROM pragma_foreign_key_list($1) ORDER BY id, seq",
    )
    .bind(table)
    .fetch_all(&mut *conn)
    .await?;
    let mut keys: Vec<(i64, String, Vec<ColumnPair>)> = Vec::new();
    for reference in &references {
        let id: i64 = reference.try_get("id")?;
        let pair = (
            reference.try_get("child_column")?,
            reference.try_get("parent_column")?,
        );
        match keys.last_mut() {
            Some((last, _, pairs)) if *last == id => pairs.push(pair),
            _ => keys.push((id, reference.try_get("parent")?, vec![pair])),
        }
    }
    for (_, parent, pairs) in keys {
        // `REFERENCES parent` without columns means the parent's primary key.
        let parent_key = if pairs.iter().any(|(_, to)| to.is_none()) {
            primary_key(&mut conn, &parent).await?
        } else {
            Vec::new()
        };
        let children: Vec<&str> = pairs.iter().map(|(from, _)| from.as_str()).collect();
        let name = format!("{table}_{}_fkey", children.join("_"));
        for (i, (from, to)) in pairs.iter().enumerate() {
            let Some(to) = to.clone().or_else(|| parent_key.get(i).cloned()) else {
                continue;
            };
            rows.push(ConstraintColumn {
                references: Some(("main".into(), parent.clone(), to)),
                ..row(
                    &name,
                    ConstraintKind::ForeignKey,
                    from.clone(),
                    i as i64 + 1,
                )
            });
        }
    }
    Ok(rows)
}

/// A foreign key's column and the parent column it names (none: the parent's key).
type ColumnPair = (String, Option<String>);

/// The primary key's columns of `table`, in key order; empty without one.
async fn primary_key(conn: &mut SqliteConnection, table: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM pragma_table_info($1) WHERE pk > 0 ORDER BY pk")
        .bind(table)
        .fetch_all(conn)
        .await
}
