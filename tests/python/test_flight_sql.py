"""Quarry's Flight SQL server through stock Python clients: the ADBC Flight SQL driver
and pyarrow's Flight client. Run by tests/it/flight_python.rs, which starts the server and
passes its address, the password and the PostgreSQL-backed connection in the environment."""

import os
import threading
import time
import unittest

import adbc_driver_flightsql.dbapi as flightsql
import adbc_driver_manager
import pyarrow as pa
import pyarrow.flight as flight

URI = os.environ["QUARRY_FLIGHT_URI"]
PASSWORD = os.environ["QUARRY_FLIGHT_PASSWORD"]


def protobuf_string(field, text):
    """One length-delimited protobuf field (lengths here stay under 128 bytes)."""
    data = text.encode() if isinstance(text, str) else text
    assert len(data) < 128
    return bytes([field << 3 | 2, len(data)]) + data


def flight_sql_command(name, catalog=None, db_schema=None, table=None):
    """A Flight SQL keys command (catalog = 1, db_schema = 2, table = 3) wrapped in Any."""
    body = b""
    for field, value in ((1, catalog), (2, db_schema), (3, table)):
        if value is not None:
            body += protobuf_string(field, value)
    url = "type.googleapis.com/arrow.flight.protocol.sql." + name
    return protobuf_string(1, url) + protobuf_string(2, body)


def connect(password=PASSWORD):
    return flightsql.connect(
        URI,
        db_kwargs={"username": "quarry", "password": password},
        autocommit=True,
    )


class Login(unittest.TestCase):
    def test_right_password_connects(self):
        with connect() as conn, conn.cursor() as cur:
            cur.execute("SELECT 41 + 1 AS answer")
            self.assertEqual(cur.fetchone(), (42,))

    def test_wrong_password_is_refused(self):
        with self.assertRaises(adbc_driver_manager.Error) as caught:
            with connect("wrong") as conn, conn.cursor() as cur:
                cur.execute("SELECT 1")
        self.assertIn("UNAUTHENTICATED", str(caught.exception).upper())

    def test_pyarrow_flight_client_logs_in(self):
        client = flight.FlightClient(URI)
        token = client.authenticate_basic_token("quarry", PASSWORD)
        self.assertEqual(token[0], b"authorization")
        self.assertTrue(token[1].startswith(b"Bearer "))
        with self.assertRaises(flight.FlightUnauthenticatedError):
            client.authenticate_basic_token("quarry", "nope")


class Queries(unittest.TestCase):
    def setUp(self):
        self.conn = connect()

    def tearDown(self):
        self.conn.close()

    def test_select_over_a_postgres_table(self):
        with self.conn.cursor() as cur:
            cur.execute("SELECT count(*), min(id), max(name) FROM pg.public.items")
            self.assertEqual(cur.fetchone(), (100, 1, "item 99"))

    def test_prepared_statement_with_two_parameters(self):
        with self.conn.cursor() as cur:
            cur.execute(
                "SELECT id FROM pg.public.items WHERE id > $1 AND name <> $2 ORDER BY id",
                parameters=(95, "item 97"),
            )
            self.assertEqual([row[0] for row in cur.fetchall()], [96, 98, 99, 100])

    def test_get_objects_lists_catalogs_schemas_tables_and_columns(self):
        objects = self.conn.adbc_get_objects(catalog_filter="pg").read_all().to_pylist()
        self.assertEqual([c["catalog_name"] for c in objects], ["pg"])
        schemas = {s["db_schema_name"]: s for s in objects[0]["catalog_db_schemas"]}
        tables = {t["table_name"]: t for t in schemas["public"]["db_schema_tables"]}
        self.assertEqual(tables["items"]["table_type"], "TABLE")
        columns = [c["column_name"] for c in tables["items"]["table_columns"]]
        self.assertEqual(columns, ["id", "name", "price"])

    def test_get_primary_keys_answers_from_discovery(self):
        # The ADBC driver's GetObjects leaves table_constraints empty and never sends
        # GetPrimaryKeys, so the command goes through pyarrow's Flight client as Flight SQL
        # encodes it: a protobuf Any around CommandGetPrimaryKeys.
        client = flight.FlightClient(URI)
        options = flight.FlightCallOptions(
            headers=[client.authenticate_basic_token("quarry", PASSWORD)]
        )
        descriptor = flight.FlightDescriptor.for_command(
            flight_sql_command("CommandGetPrimaryKeys", catalog="pg", table="orders")
        )
        info = client.get_flight_info(descriptor, options)
        keys = client.do_get(info.endpoints[0].ticket, options).read_all().to_pylist()
        self.assertEqual(
            [(k["table_name"], k["column_name"], k["key_name"], k["key_sequence"]) for k in keys],
            [("orders", "id", "orders_pkey", 1), ("orders", "line", "orders_pkey", 2)],
        )
        # The ADBC connection sees the same table the keys belong to.
        schema = self.conn.adbc_get_table_schema("orders", catalog_filter="pg")
        self.assertEqual(schema.names[:2], ["id", "line"])

    def test_get_table_schema(self):
        schema = self.conn.adbc_get_table_schema("items", catalog_filter="pg", db_schema_filter="public")
        self.assertEqual(schema.names, ["id", "name", "price"])
        self.assertEqual(schema.field("price").type, pa.decimal128(10, 2))

    def test_a_million_rows_stream(self):
        with self.conn.cursor() as cur:
            cur.execute("SELECT value FROM range(1000000)")
            reader = cur.fetch_record_batch()
            count, total, batches = 0, 0, 0
            for batch in reader:
                batches += 1
                count += batch.num_rows
                total += pa.compute.sum(batch.column(0)).as_py() or 0
        self.assertEqual(count, 1_000_000)
        self.assertEqual(total, 999_999 * 1_000_000 // 2)
        self.assertGreater(batches, 10)

    def test_cancel_stops_a_running_statement(self):
        cur = self.conn.cursor()
        started = time.monotonic()
        timer = threading.Timer(2.0, cur.adbc_cancel)
        timer.start()
        with self.assertRaises(adbc_driver_manager.Error) as caught:
            cur.execute("SELECT * FROM pg.public.slow")
            cur.fetchall()
        timer.cancel()
        self.assertIn("CANCEL", str(caught.exception).upper())
        self.assertLess(time.monotonic() - started, 50)
        cur.close()


class Sessions(unittest.TestCase):
    """Each ADBC connection is a session of its own on the server."""

    def setUp(self):
        self.a = connect()
        self.b = connect()

    def tearDown(self):
        self.a.close()
        self.b.close()

    def setting(self, conn):
        with conn.cursor() as cur:
            cur.execute(
                "SELECT value FROM information_schema.df_settings "
                "WHERE name = 'datafusion.execution.batch_size'"
            )
            return cur.fetchone()[0]

    def test_settings_and_temporary_views_stay_in_their_session(self):
        with self.a.cursor() as cur:
            cur.execute("SET datafusion.execution.batch_size = 7")
            cur.execute("CREATE TEMPORARY VIEW only_a AS SELECT 1 AS x")
        with self.b.cursor() as cur:
            cur.execute("SET datafusion.catalog.default_catalog = 'pg'")
            # The default catalog is now a connection, which holds no views of its own.
            cur.execute("CREATE VIEW datafusion.public.only_b AS SELECT 2 AS y")
        self.assertEqual(self.setting(self.a), "7")
        self.assertEqual(self.setting(self.b), "8192")
        with self.a.cursor() as cur:
            cur.execute("SELECT x FROM only_a")
            self.assertEqual(cur.fetchone(), (1,))
            with self.assertRaises(adbc_driver_manager.Error):
                cur.execute("SELECT y FROM only_b")
        with self.b.cursor() as cur:
            with self.assertRaises(adbc_driver_manager.Error):
                cur.execute("SELECT x FROM only_a")
            cur.execute("SELECT y FROM datafusion.public.only_b")
            self.assertEqual(cur.fetchone(), (2,))

    def test_ddl_runs_once(self):
        with self.a.cursor() as cur:
            cur.execute("CREATE TABLE t2 AS SELECT 42 AS v")
            cur.execute("SELECT v FROM t2")
            self.assertEqual(cur.fetchall(), [(42,)])
            cur.execute("DROP TABLE t2")
            with self.assertRaises(adbc_driver_manager.Error) as caught:
                cur.execute("SELECT v FROM t2")
            self.assertIn("t2", str(caught.exception))
            # Created again after the drop: it did not exist, so this works too.
            cur.execute("CREATE TABLE t2 AS SELECT 43 AS v")
            cur.execute("SELECT v FROM t2")
            self.assertEqual(cur.fetchall(), [(43,)])

    def test_use_sets_the_default_schema_of_its_session_only(self):
        with self.a.cursor() as cur:
            cur.execute("USE pg.public")
            cur.execute("SELECT count(*) FROM items")
            self.assertEqual(cur.fetchone(), (100,))
            cur.execute("SHOW search_path")
            self.assertEqual(cur.fetchone(), ("pg.public",))
        with self.b.cursor() as cur:
            with self.assertRaises(adbc_driver_manager.Error) as caught:
                cur.execute("SELECT count(*) FROM items")
            self.assertIn("did you mean pg.public.items?", str(caught.exception))
            cur.execute("SET search_path = 'pg.public'")
            cur.execute("SELECT count(*) FROM items")
            self.assertEqual(cur.fetchone(), (100,))

    def test_question_mark_and_dollar_placeholders(self):
        with self.a.cursor() as cur:
            cur.execute(
                "SELECT id FROM pg.public.items WHERE id > ? AND name <> ? ORDER BY id",
                parameters=(95, "item 97"),
            )
            self.assertEqual([row[0] for row in cur.fetchall()], [96, 98, 99, 100])
            cur.execute(
                "SELECT id FROM pg.public.items WHERE id > $1 AND name <> $2 ORDER BY id",
                parameters=(95, "item 97"),
            )
            self.assertEqual([row[0] for row in cur.fetchall()], [96, 98, 99, 100])
            with self.assertRaises(adbc_driver_manager.Error) as caught:
                cur.execute(
                    "SELECT id FROM pg.public.items WHERE id > ? AND name <> $1",
                    parameters=(95, "item 97"),
                )
            self.assertIn("mixes positional '?' placeholders", str(caught.exception))


if __name__ == "__main__":
    unittest.main()
