//! Refresh modes against a real PostgreSQL server: `append` picks up new rows (also at the
//! equal watermark, in the overlap window out of cursor order, and with a NULL cursor)
//! without missing or duplicating any, by key or by whole row; `upsert` leaves each key
//! with its latest row and keeps deleted rows until a full refresh; compaction merges the
//! delta files while a scan reads them; bad settings are refused when they are set.

use quarry::Engine;
use quarry::events::Event;
use serde_json::json;
use sqlx::{Connection, Row};

use crate::access_modes::error_of;
use crate::support::PgSourceFixture;

/// Every row of `sql` (whose columns are all text) on the source.
async fn source_rows(fx: &mut PgSourceFixture, sql: &str) -> Vec<Vec<String>> {
    sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut fx.admin)
        .await
        .unwrap()
        .iter()
        .map(|row| {
            (0..row.len())
                .map(|i| {
                    row.try_get::<Option<String>, _>(i)
                        .unwrap()
                        .unwrap_or_else(|| "NULL".to_owned())
                })
                .collect()
        })
        .collect()
}

/// A PostgreSQL source set up with `sql`, discovered, and `table`'s options set.
async fn source_with(sql: &str, table: &str, options: serde_json::Value) -> PgSourceFixture {
    let mut fx = PgSourceFixture::new().await;
    fx.exec(sql).await;
    fx.engine.discover_connection("pg").await.unwrap();
    set_options(&fx.engine, table, options).await;
    fx
}

async fn set_options(engine: &Engine, table: &str, options: serde_json::Value) {
    engine
        .sql(&format!(
            "SELECT * FROM set_table_options('{table}', '{options}')"
        ))
        .await
        .unwrap()
        .collect()
        .await
        .unwrap();
}

async fn refresh(engine: &Engine, table: &str) -> quarry::table::CacheEntry {
    let [_, schema, name] = table.splitn(3, '.').collect::<Vec<_>>()[..] else {
        panic!("{table}")
    };
    engine.refresh_table("pg", schema, name).await.unwrap()
}

/// The events of the source and of Quarry's copy, by id: they must be equal.
async fn assert_same_events(fx: &mut PgSourceFixture, why: &str) {
    let source = source_rows(
        fx,
        "SELECT id::text AS k, v, (extract(epoch FROM at) * 1000000)::bigint::text FROM events ORDER BY id",
    )
    .await;
    let copy = crate::files::rows(
        &fx.engine,
        "SELECT id, v, CAST(at AS BIGINT) AS at_us FROM pg.public.events ORDER BY id",
    )
    .await;
    assert_eq!(copy, source, "{why}");
}

#[tokio::test]
async fn append_misses_and_duplicates_no_row_on_postgresql() {
    let table = "pg.public.events";
    let mut fx = source_with(
        "CREATE TABLE events (id bigint PRIMARY KEY, v text NOT NULL, at timestamptz);
         INSERT INTO events SELECT i, 'first ' || i, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second'
         FROM generate_series(1, 100) i;",
        table,
        json!({"refresh": "append", "cursor_column": "at", "overlap": "1h"}),
    )
    .await;
    assert_same_events(&mut fx, "the first fetch").await;
    let first = fx
        .engine
        .cache_entries(&fx.engine.connection("pg").await.unwrap())
        .await
        .unwrap()
        .into_iter()
        .find(|e| e.is_current)
        .unwrap();

    // New rows past the mark, and rows at exactly the mark (the equal-watermark case).
    fx.exec(
        "INSERT INTO events SELECT i, 'second ' || i, timestamptz '2026-01-01 00:00:00+00' + i * interval '1 second'
         FROM generate_series(101, 150) i;
         INSERT INTO events VALUES (1000, 'at the mark', timestamptz '2026-01-01 00:00:00+00' + 150 * interval '1 second');",
    )
    .await;
    let second = refresh(&fx.engine, table).await;
    assert_eq!(second.path, first.path, "the base file is not rewritten");
    assert_eq!(second.deltas.len(), 1, "{second:?}");
    assert_same_events(&mut fx, "after rows past and at the mark").await;

    // More rows at the same mark; rows inside the overlap window out of cursor order; and a
    // row with a NULL cursor (read by every refresh, kept once).
    fx.exec(
        "INSERT INTO events VALUES (1001, 'also at the mark', timestamptz '2026-01-01 00:00:00+00' + 150 * interval '1 second');
         INSERT INTO events VALUES (1002, 'late, in the window', timestamptz '2026-01-01 00:00:00+00' + 10 * interval '1 second');
         INSERT INTO events VALUES (1003, 'no cursor', NULL);",
    )
    .await;
    refresh(&fx.engine, table).await;
    assert_same_events(
        &mut fx,
        "after the equal mark, the window and a NULL cursor",
    )
    .await;
    let unchanged = refresh(&fx.engine, table).await;
    assert_same_events(&mut fx, "after a refresh with nothing new").await;

    // Freshness is visible: the refresh mode and what the last refresh did.
    let info = crate::files::rows(
        &fx.engine,
        "SELECT refresh_mode, last_refresh_kind, last_refresh_rows, cache_files, \
         last_error IS NULL AS ok FROM quarry.information_schema.tables WHERE table_name = 'events'",
    )
    .await;
    assert_eq!(
        info,
        vec![vec![
            "append".to_owned(),
            "append".to_owned(),
            "0".to_owned(),
            unchanged.files().count().to_string(),
            "true".to_owned()
        ]],
    );
}

#[tokio::test]
async fn append_without_a_key_keeps_as_many_equal_rows_as_the_source() {
    let table = "pg.public.readings";
    let mut fx = source_with(
        "CREATE TABLE readings (t integer, v text);
         INSERT INTO readings VALUES (1, 'a'), (2, 'b'), (2, 'b'), (3, 'c');",
        table,
        json!({"refresh": "append", "cursor_column": "t"}),
    )
    .await;
    let counted = "SELECT t, v, count(*) AS n FROM pg.public.readings GROUP BY t, v ORDER BY t, v";
    let source_counted =
        "SELECT t::text AS k, v, count(*)::text FROM readings GROUP BY t, v ORDER BY t, v";
    assert_eq!(
        crate::files::rows(&fx.engine, counted).await,
        source_rows(&mut fx, source_counted).await
    );
    // One more row equal to two at the mark, one new value at the mark, and a NULL cursor.
    fx.exec("INSERT INTO readings VALUES (3, 'c'), (3, 'd'), (4, 'e'), (NULL, 'x');")
        .await;
    refresh(&fx.engine, table).await;
    assert_eq!(
        crate::files::rows(&fx.engine, counted).await,
        source_rows(&mut fx, source_counted).await
    );
    refresh(&fx.engine, table).await;
    assert_eq!(
        crate::files::rows(&fx.engine, counted).await,
        source_rows(&mut fx, source_counted).await,
        "a refresh with nothing new adds nothing"
    );
}

#[tokio::test]
async fn upsert_keeps_each_keys_latest_row_and_a_full_refresh_drops_deleted_ones() {
    let table = "pg.public.items";
    let mut fx = source_with(
        "CREATE TABLE items (id integer PRIMARY KEY, v text NOT NULL, updated_at timestamp NOT NULL);
         INSERT INTO items SELECT i, 'v1 ' || i, timestamp '2026-01-01' FROM generate_series(1, 50) i;",
        table,
        json!({"refresh": "upsert", "cursor_column": "updated_at", "full_every": 3}),
    )
    .await;
    let copy = "SELECT id, v FROM pg.public.items ORDER BY id";
    let source = "SELECT id::text AS k, v FROM items ORDER BY id";
    assert_eq!(
        crate::files::rows(&fx.engine, copy).await,
        source_rows(&mut fx, source).await
    );

    fx.exec(
        "UPDATE items SET v = 'v2 ' || id, updated_at = timestamp '2026-01-02' WHERE id % 10 = 0;
         INSERT INTO items VALUES (51, 'new', timestamp '2026-01-02');
         DELETE FROM items WHERE id = 7;",
    )
    .await;
    let after = refresh(&fx.engine, table).await;
    assert!(after.deltas.is_empty(), "upsert writes one file: {after:?}");
    let mut expected = source_rows(&mut fx, source).await;
    // The deleted row stays until a full refresh: a cursor cannot see a deletion.
    expected.insert(6, vec!["7".to_owned(), "v1 7".to_owned()]);
    assert_eq!(crate::files::rows(&fx.engine, copy).await, expected);

    // The same key changed again, at the very mark.
    fx.exec("UPDATE items SET v = 'v3' WHERE id = 10;").await;
    refresh(&fx.engine, table).await;
    expected[9] = vec!["10".to_owned(), "v3".to_owned()];
    assert_eq!(crate::files::rows(&fx.engine, copy).await, expected);
    let kind = "SELECT last_refresh_kind FROM quarry.information_schema.tables \
                WHERE table_name = 'items'";
    assert_eq!(
        crate::files::rows(&fx.engine, kind).await,
        vec![vec!["upsert"]]
    );

    // full_every = 3: the third refresh after the full one is full, and drops row 7.
    refresh(&fx.engine, table).await;
    assert_eq!(
        crate::files::rows(&fx.engine, kind).await,
        vec![vec!["full"]]
    );
    assert_eq!(
        crate::files::rows(&fx.engine, copy).await,
        source_rows(&mut fx, source).await
    );
}

#[tokio::test]
async fn compaction_merges_deltas_while_a_scan_reads_them() {
    let table = "pg.public.events";
    let mut fx = source_with(
        "CREATE TABLE events (id bigint PRIMARY KEY, v text NOT NULL, at timestamptz);
         INSERT INTO events SELECT i, 'row ' || i, NULL FROM generate_series(1, 2000) i;",
        table,
        json!({"refresh": "append", "cursor_column": "id"}),
    )
    .await;
    let mut events = fx.engine.subscribe();
    let mut last = refresh(&fx.engine, table).await;
    for step in 0..3 {
        let from = 2001 + step * 10;
        fx.exec(&format!(
            "INSERT INTO events SELECT i, 'row ' || i, NULL FROM generate_series({from}, {}) i;",
            from + 9
        ))
        .await;
        last = refresh(&fx.engine, table).await;
    }
    assert!(!last.deltas.is_empty(), "{last:?}");

    // A scan in small batches takes its first batch, the deltas are merged, and the scan
    // reads on: it sees every row of the version it started on.
    let frame = fx
        .engine
        .sql("SELECT id FROM pg.public.events")
        .await
        .unwrap();
    let mut stream = frame.execute_stream().await.unwrap();
    use futures::StreamExt;
    let mut seen = stream.next().await.unwrap().unwrap().num_rows();
    let compacted = fx
        .engine
        .compact_table("pg", "public", "events")
        .await
        .unwrap();
    // It may have been compacted in the background already; either way one file is left.
    let entry = match compacted {
        Some(entry) => entry,
        None => fx
            .engine
            .cache_entries(&fx.engine.connection("pg").await.unwrap())
            .await
            .unwrap()
            .into_iter()
            .find(|e| e.is_current)
            .unwrap(),
    };
    assert!(entry.deltas.is_empty(), "{entry:?}");
    assert_eq!(entry.row_count, 2030);
    while let Some(batch) = stream.next().await {
        seen += batch.unwrap().num_rows();
    }
    assert_eq!(seen, 2030, "the scan read the whole version it started on");
    assert_same_events(&mut fx, "after compaction").await;
    let compactions = std::iter::from_fn(|| events.try_recv().ok())
        .filter(|e| matches!(e, Event::CacheCompacted { .. }))
        .count();
    assert!(compactions >= 1);
}

#[tokio::test]
async fn refresh_settings_that_do_not_fit_the_table_are_refused_when_set() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec(
        "CREATE TABLE logs (line text, at timestamptz, n integer, flag boolean);
         CREATE TABLE keyed (id integer PRIMARY KEY, n integer);",
    )
    .await;
    fx.engine.discover_connection("pg").await.unwrap();
    let set = |table: &str, options: serde_json::Value| {
        format!("SELECT * FROM set_table_options('pg.public.{table}', '{options}')")
    };
    let cases = [
        (
            set("logs", json!({"refresh": "append", "cursor_column": "att"})),
            "'att' is not a column of the table (did you mean 'at'?)",
        ),
        (
            set(
                "logs",
                json!({"refresh": "append", "cursor_column": "line"}),
            ),
            "cursor_column 'line' is Utf8, which a cursor cannot be",
        ),
        (
            set(
                "logs",
                json!({"refresh": "append", "cursor_column": "flag"}),
            ),
            "which a cursor cannot be",
        ),
        (
            set("logs", json!({"refresh": "append"})),
            "set 'cursor_column'",
        ),
        (
            set("logs", json!({"refresh": "upsert", "cursor_column": "at"})),
            "no primary key",
        ),
        (
            set(
                "logs",
                json!({"refresh": "append", "cursor_column": "at", "overlap": 5}),
            ),
            "must be a duration",
        ),
        (
            set(
                "logs",
                json!({"refresh": "append", "cursor_column": "n", "overlap": "5m"}),
            ),
            "must be a number",
        ),
        (
            set(
                "keyed",
                json!({"refresh": "upsert", "cursor_column": "n", "key": ["idd"]}),
            ),
            "key column 'idd' is not a column",
        ),
        (
            set("keyed", json!({"refresh": "sometimes"})),
            "'refresh' must be one of full, append, upsert",
        ),
    ];
    for (sql, expected) in cases {
        let error = error_of(&fx.engine, &sql).await;
        assert!(error.contains(expected), "{sql}: {error}");
    }
    // Nothing was stored by the refused calls; a table without a key may still append.
    set_options(
        &fx.engine,
        "pg.public.logs",
        json!({"refresh": "append", "cursor_column": "at", "overlap": "10m"}),
    )
    .await;
    set_options(
        &fx.engine,
        "pg.public.keyed",
        json!({"refresh": "upsert", "cursor_column": "n"}),
    )
    .await;
}

/// `count(*)` of `table` through Quarry.
async fn count(engine: &Engine, table: &str) -> String {
    crate::files::rows(engine, &format!("SELECT count(*) AS n FROM {table}")).await[0][0].clone()
}

#[tokio::test]
async fn on_stale_serve_answers_from_the_old_copy_while_it_refreshes() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec(
        "CREATE TABLE events (id bigint PRIMARY KEY, v text NOT NULL);
         INSERT INTO events SELECT i, 'row ' || i FROM generate_series(1, 10) i;",
    )
    .await;
    // Every copy is older than max_age by the time a query reads it.
    let mut config = crate::support::pg_source_config(&fx.db.name);
    config["max_age"] = json!("1us");
    config["on_stale"] = json!("serve");
    fx.engine
        .register_connection("stale", "postgres", config)
        .await
        .unwrap();
    fx.engine.discover_connection("stale").await.unwrap();
    let table = "stale.public.events";
    assert_eq!(count(&fx.engine, table).await, "10");

    // The source holds the refresh back (a lock the test releases): the query answers from
    // the old copy without waiting for it.
    fx.exec("INSERT INTO events SELECT i, 'row ' || i FROM generate_series(11, 15) i;")
        .await;
    let mut gate = sqlx::PgConnection::connect(&fx.db.url).await.unwrap();
    sqlx::raw_sql("BEGIN; LOCK TABLE events IN ACCESS EXCLUSIVE MODE;")
        .execute(&mut gate)
        .await
        .unwrap();
    assert_eq!(count(&fx.engine, table).await, "10", "the stale copy");
    sqlx::raw_sql("COMMIT").execute(&mut gate).await.unwrap();
    fx.engine.background_copies_done().await;
    assert_eq!(count(&fx.engine, table).await, "15", "the refreshed copy");
    fx.engine.background_copies_done().await;

    // A refresh that fails keeps the old copy served; the error is on the table and sent
    // as an event.
    let mut events = fx.engine.subscribe();
    fx.exec("ALTER TABLE events RENAME TO events_gone;").await;
    assert_eq!(count(&fx.engine, table).await, "15");
    fx.engine.background_copies_done().await;
    let failed = std::iter::from_fn(|| events.try_recv().ok())
        .any(|e| matches!(e, Event::FetchFailed { .. }));
    assert!(failed, "a failed refresh is sent as an event");
    let error = crate::files::rows(
        &fx.engine,
        "SELECT last_error FROM quarry.information_schema.tables \
         WHERE connection_name = 'stale' AND table_name = 'events'",
    )
    .await;
    assert!(error[0][0].contains("events"), "{error:?}");
    assert_eq!(count(&fx.engine, table).await, "15", "still the old copy");
    fx.engine.background_copies_done().await;
}

#[tokio::test]
async fn a_schema_change_fails_the_refresh_or_evolves_the_table() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec(
        "CREATE TABLE events (id integer PRIMARY KEY, v text, w integer);
         INSERT INTO events VALUES (1, 'a', 10), (2, 'b', 20);",
    )
    .await;
    fx.engine.discover_connection("pg").await.unwrap();
    let table = "pg.public.events";
    assert_eq!(count(&fx.engine, table).await, "2");
    fx.exec(
        "ALTER TABLE events ADD COLUMN extra integer, DROP COLUMN w;
         ALTER TABLE events ALTER COLUMN v TYPE varchar(10);
         INSERT INTO events VALUES (3, 'c', 300);",
    )
    .await;

    // fail (the default): the message names each change, and the old copy is still read.
    let error = error_of(
        &fx.engine,
        "SELECT * FROM refresh_table('pg.public.events')",
    )
    .await;
    for part in [
        "columns of pg.public.events changed",
        "added extra (integer)",
        "removed w (integer)",
        "changed v from text to character varying(10)",
        "on_schema_change",
    ] {
        assert!(error.contains(part), "{part}: {error}");
    }
    assert_eq!(
        crate::files::rows(
            &fx.engine,
            "SELECT id, v, w FROM pg.public.events ORDER BY id"
        )
        .await,
        vec![vec!["1", "a", "10"], vec!["2", "b", "20"]]
    );
    let recorded = crate::files::rows(
        &fx.engine,
        "SELECT last_error FROM quarry.information_schema.tables WHERE table_name = 'events'",
    )
    .await;
    assert!(recorded[0][0].contains("added extra"), "{recorded:?}");

    // evolve: the refresh discovers the table again and fetches it whole.
    set_options(&fx.engine, table, json!({"on_schema_change": "evolve"})).await;
    refresh(&fx.engine, table).await;
    assert_eq!(
        crate::files::rows(
            &fx.engine,
            "SELECT id, v, extra FROM pg.public.events ORDER BY id"
        )
        .await,
        vec![
            vec!["1", "a", "NULL"],
            vec!["2", "b", "NULL"],
            vec!["3", "c", "300"]
        ]
    );
    let error = error_of(&fx.engine, "SELECT w FROM pg.public.events").await;
    assert!(error.contains('w'), "{error}");
}

/// When the schedule next refreshes `table`, as `information_schema.tables` shows it.
async fn next_refresh_at(engine: &Engine, table: &str) -> chrono::DateTime<chrono::Utc> {
    let micros = crate::files::rows(
        engine,
        &format!(
            "SELECT CAST(next_refresh_at AS BIGINT) AS at FROM quarry.information_schema.tables \
             WHERE table_name = '{table}'"
        ),
    )
    .await;
    chrono::DateTime::from_timestamp_micros(micros[0][0].parse().unwrap()).unwrap()
}

#[tokio::test]
async fn a_scheduled_refresh_runs_when_due_and_stops_retrying_a_failing_source() {
    let mut fx = PgSourceFixture::new().await;
    fx.exec(
        "CREATE TABLE events (id bigint PRIMARY KEY, v text NOT NULL);
         INSERT INTO events SELECT i, 'row ' || i FROM generate_series(1, 10) i;",
    )
    .await;
    fx.engine.discover_connection("pg").await.unwrap();
    let table = "pg.public.events";
    set_options(&fx.engine, table, json!({"refresh_interval": "5m"})).await;
    assert_eq!(count(&fx.engine, table).await, "10");
    fx.exec("INSERT INTO events SELECT i, 'row ' || i FROM generate_series(11, 15) i;")
        .await;

    // The clock is turned by hand: not due a second before the time the table shows, due
    // at it.
    let second = chrono::Duration::seconds(1);
    let due = next_refresh_at(&fx.engine, "events").await;
    let interval = chrono::Duration::minutes(5);
    assert!(due - chrono::Utc::now() > interval - chrono::Duration::minutes(1));
    assert!(due - chrono::Utc::now() <= interval + interval / 10);
    assert!(
        fx.engine
            .run_scheduled(due - second)
            .await
            .unwrap()
            .is_empty()
    );
    let started = fx.engine.run_scheduled(due).await.unwrap();
    assert_eq!(started.len(), 1);
    for (_, task) in started {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        count(&fx.engine, table).await,
        "15",
        "the scheduled refresh ran"
    );
    let next = next_refresh_at(&fx.engine, "events").await;
    assert!(next >= due + interval, "the next one is an interval on");

    // A failing source: retried after a growing backoff, then left until the next
    // interval; the copy is served all along.
    fx.exec("ALTER TABLE events RENAME TO events_gone;").await;
    let mut at = next;
    let mut waits = Vec::new();
    for _ in 0..=quarry::connections::RETRIES {
        assert!(
            fx.engine
                .run_scheduled(at - second)
                .await
                .unwrap()
                .is_empty()
        );
        let started = fx.engine.run_scheduled(at).await.unwrap();
        assert_eq!(started.len(), 1);
        for (_, task) in started {
            assert!(task.await.unwrap().is_err());
        }
        let retry = next_refresh_at(&fx.engine, "events").await;
        waits.push(retry - at);
        at = retry;
    }
    let (last, backoffs) = waits.split_last().unwrap();
    assert!(
        backoffs.windows(2).all(|w| w[1] > w[0]) && backoffs[0] < interval,
        "{waits:?}"
    );
    assert!(
        *last >= interval,
        "after the retries, the next interval: {waits:?}"
    );
    assert_eq!(count(&fx.engine, table).await, "15");
    let error = crate::files::rows(
        &fx.engine,
        "SELECT last_error FROM quarry.information_schema.tables WHERE table_name = 'events'",
    )
    .await;
    assert!(error[0][0].contains("events"), "{error:?}");
}

/// `append` and `upsert` on each source: the fetch's cursor condition is written in the
/// source's own dialect.
async fn incremental_refresh_on(kind: &str) {
    use crate::access_modes::Source;
    let mut source = Source::new(kind).await;
    source
        .exec(
            "CREATE TABLE items (id integer NOT NULL PRIMARY KEY, n integer NOT NULL, \
             version integer NOT NULL);",
        )
        .await;
    let values: Vec<String> = (1..=20).map(|i| format!("({i}, {i}, 1)")).collect();
    source
        .exec(&format!("INSERT INTO items VALUES {};", values.join(", ")))
        .await;
    source.connect("src", json!({"mode": "cache"})).await;
    let engine = &source.engine().clone();
    let schema = source.schema().to_owned();
    let events = source.events("src");
    let items = format!("src.{schema}.items");
    set_options(
        engine,
        &events,
        json!({"refresh": "append", "cursor_column": "id"}),
    )
    .await;
    set_options(
        engine,
        &items,
        json!({"refresh": "upsert", "cursor_column": "version"}),
    )
    .await;
    let ids = |table: &str| format!("SELECT count(*) AS n, sum(id) AS s FROM {table}");
    let base = crate::access_modes::ROWS;
    assert_eq!(
        crate::files::rows(engine, &ids(&events)).await,
        vec![vec![base.to_string(), (base * (base + 1) / 2).to_string()]]
    );
    let item_rows = format!("SELECT id, n FROM {items} ORDER BY id");
    assert_eq!(crate::files::rows(engine, &item_rows).await.len(), 20);

    source
        .exec(&format!(
            "INSERT INTO events VALUES ({}, 1, 'late'), ({}, 2, 'later');
             UPDATE items SET n = n + 100, version = 2 WHERE id IN (3, 4);",
            base + 1,
            base + 2
        ))
        .await;
    for table in [&events, &items] {
        let [_, schema, name] = table.splitn(3, '.').collect::<Vec<_>>()[..] else {
            unreachable!()
        };
        engine.refresh_table("src", schema, name).await.unwrap();
    }
    let total = base + 2;
    assert_eq!(
        crate::files::rows(engine, &ids(&events)).await,
        vec![vec![
            total.to_string(),
            (total * (total + 1) / 2).to_string()
        ]]
    );
    let expected: Vec<Vec<String>> = (1..=20)
        .map(|i| {
            let n = if i == 3 || i == 4 { i + 100 } else { i };
            vec![i.to_string(), n.to_string()]
        })
        .collect();
    assert_eq!(crate::files::rows(engine, &item_rows).await, expected);
}

#[tokio::test]
async fn incremental_refresh_on_mariadb() {
    incremental_refresh_on("mysql").await;
}

#[tokio::test]
async fn incremental_refresh_on_sqlite() {
    incremental_refresh_on("sqlite").await;
}

#[tokio::test]
async fn a_datetime_cursor_on_mariadb_reads_rows_at_the_mark_again() {
    let mut fx = crate::support::MySqlSourceFixture::new().await;
    fx.exec(
        "CREATE TABLE logs (id integer PRIMARY KEY, at datetime(6) NOT NULL);
         INSERT INTO logs VALUES (1, '2026-01-01 00:00:01.5'), (2, '2026-01-01 00:00:02.25');",
    )
    .await;
    fx.engine.discover_connection("my").await.unwrap();
    let table = format!("my.{}.logs", fx.name);
    set_options(
        &fx.engine,
        &table,
        json!({"refresh": "append", "cursor_column": "at"}),
    )
    .await;
    let rows = format!("SELECT id FROM {table} ORDER BY id");
    assert_eq!(crate::files::rows(&fx.engine, &rows).await.len(), 2);
    fx.exec("INSERT INTO logs VALUES (3, '2026-01-01 00:00:02.25'), (4, '2026-01-02 00:00:00');")
        .await;
    fx.engine
        .refresh_table("my", &fx.name, "logs")
        .await
        .unwrap();
    assert_eq!(
        crate::files::rows(&fx.engine, &rows).await,
        vec![vec!["1"], vec!["2"], vec!["3"], vec!["4"]]
    );
}
