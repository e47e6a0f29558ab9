//! Differential tests: seeded generated queries over one small dataset loaded into
//! PostgreSQL and MariaDB, each run on the source directly and through Quarry twice: from the
//! cache and live (pushed down to the source), the answers compared. A failure prints the
//! query, the SQL Quarry pushed down and both answers.
//!
//! `QUARRY_DIFF_QUERIES` (default 300 per source) and `QUARRY_DIFF_SEED` run more or other
//! queries: `QUARRY_DIFF_QUERIES=3000 cargo test differential`.
//!
//! Where the engines are documented to differ, the rule is encoded here, never a looser
//! comparison:
//! - `CAST(decimal AS BIGINT)` truncates toward zero in DataFusion (arrow-rs's cast kernel,
//!   `arrow-cast` `cast_decimal_to_integer`); PostgreSQL and MySQL round. The source side
//!   is asked for `CAST(TRUNC(x) AS …)`.
//! - `AVG` has a different scale everywhere: DataFusion gives `decimal(p+4, s+4)` for
//!   decimals and `double` for integers (`datafusion-functions-aggregate`, `average.rs`),
//!   PostgreSQL up to 16 fraction digits, MySQL `s + div_precision_increment` (4) digits,
//!   rounded. Averages are compared to within 1e-4, the last digit MySQL keeps.
//! - MariaDB compares text with its collation: the tables use `utf8mb4_bin`, as Quarry
//!   compares bytes. NULLs sort first in MySQL and last in the others, so ORDER BY keys
//!   are never nullable. Floats hold multiples of 0.25 so every engine prints them exactly.

use std::fmt::Write as _;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use sqlx::Row;

use crate::support::{MySqlSourceFixture, PgSourceFixture};

const DEFAULT_QUERIES: usize = 300;
const DEFAULT_SEED: u64 = 20_261_201;

/// splitmix64: a seeded generator, enough for choosing query shapes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    fn int(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next() as usize % items.len()]
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// The dataset, as SQL both servers accept (the MySQL tables get a binary collation).
fn dataset(mysql: bool) -> String {
    let mut rng = Rng(7);
    let words = ["alpha", "beta", "gamma", "delta", "eps", "zeta"];
    let collate = if mysql { " COLLATE utf8mb4_bin" } else { "" };
    let mut sql = format!(
        "CREATE TABLE t1 (id integer NOT NULL PRIMARY KEY, a integer NOT NULL, b integer, \
         d numeric(10,2), f double precision NOT NULL, s varchar(12){collate}, \
         g integer NOT NULL);\n\
         CREATE TABLE t2 (id integer NOT NULL PRIMARY KEY, t1_id integer NOT NULL, \
         amount numeric(12,3) NOT NULL, label varchar(8){collate});\n"
    );
    let mut rows = Vec::new();
    for id in 1..=60 {
        let b = if rng.chance(12) {
            "NULL".to_owned()
        } else {
            rng.int(0, 50).to_string()
        };
        let d = if rng.chance(10) {
            "NULL".to_owned()
        } else {
            format!("{:.2}", rng.int(-5000, 5000) as f64 / 100.0)
        };
        let s = if rng.chance(15) {
            "NULL".to_owned()
        } else {
            format!("'{}'", rng.pick(&words))
        };
        rows.push(format!(
            "({id}, {}, {b}, {d}, {}, {s}, {})",
            rng.int(-20, 20),
            rng.int(-40, 40) as f64 * 0.25,
            rng.int(0, 5)
        ));
    }
    writeln!(sql, "INSERT INTO t1 VALUES {};", rows.join(", ")).unwrap();
    let mut rows = Vec::new();
    for id in 1..=120 {
        let label = if rng.chance(20) {
            "NULL".to_owned()
        } else {
            format!("'{}'", rng.pick(&["x", "y", "z"]))
        };
        rows.push(format!(
            "({id}, {}, {:.3}, {label})",
            rng.int(1, 70),
            rng.int(0, 99_999) as f64 / 1000.0
        ));
    }
    writeln!(sql, "INSERT INTO t2 VALUES {};", rows.join(", ")).unwrap();
    // Row estimates for discovery: Quarry orders joins by them.
    sql.push_str(if mysql {
        "ANALYZE TABLE t1, t2;\n"
    } else {
        "ANALYZE t1; ANALYZE t2;\n"
    });
    sql
}

/// How a result column is compared.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Int,
    Dec,
    Float,
    Text,
    Avg,
}

#[derive(Clone, Copy, PartialEq)]
enum Dialect {
    Quarry,
    Postgres,
    Mysql,
}

/// Where the queries run: the dialect of the source, and Quarry's names of its tables.
struct Target {
    source: Dialect,
    /// Quarry's qualified `t1` and `t2` for same-connection queries.
    own: [String; 2],
    /// Quarry's `t2` in the other connection (same data), for cross-connection joins.
    other_t2: String,
}

/// One generated query in both dialects.
struct Query {
    quarry: String,
    source: String,
    kinds: Vec<Kind>,
    ordered: bool,
}

/// Builds a query's text for one dialect from the parts every family uses.
struct Render<'a> {
    dialect: Dialect,
    target: &'a Target,
}

impl Render<'_> {
    fn t1(&self) -> String {
        match self.dialect {
            Dialect::Quarry => self.target.own[0].clone(),
            _ => "t1".into(),
        }
    }

    fn t2(&self) -> String {
        match self.dialect {
            Dialect::Quarry => self.target.own[1].clone(),
            _ => "t2".into(),
        }
    }

    fn other_t2(&self) -> String {
        match self.dialect {
            Dialect::Quarry => self.target.other_t2.clone(),
            _ => "t2".into(),
        }
    }

    /// A selected expression: sources hand every value back as text.
    fn out(&self, expr: &str, alias: &str) -> String {
        match self.dialect {
            Dialect::Quarry => format!("{expr} AS {alias}"),
            Dialect::Postgres => format!("CAST({expr} AS TEXT) AS {alias}"),
            Dialect::Mysql => format!("CAST({expr} AS CHAR) AS {alias}"),
        }
    }

    /// `CAST(x AS BIGINT)` with DataFusion's truncation (see the module's rules).
    fn dec_to_int(&self, x: &str) -> String {
        match self.dialect {
            Dialect::Quarry => format!("CAST({x} AS BIGINT)"),
            Dialect::Postgres => format!("CAST(TRUNC({x}) AS BIGINT)"),
            Dialect::Mysql => format!("CAST(TRUNCATE({x}, 0) AS SIGNED)"),
        }
    }

    fn select(&self, items: &[(String, Kind)]) -> String {
        items
            .iter()
            .enumerate()
            .map(|(i, (e, _))| self.out(e, &format!("c{i}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A scalar expression over t1 (qualified by `q`), with its kind.
fn expression(rng: &mut Rng, r: &Render, q: &str) -> (String, Kind) {
    let k = rng.int(-10, 10);
    match rng.int(0, 18) {
        18 => (
            format!("substr({q}s, {}, {})", rng.int(1, 4), rng.int(0, 3)),
            Kind::Text,
        ),
        14 => (format!("COALESCE({q}s, 'none')"), Kind::Text),
        15 => (
            format!("CASE WHEN {q}b IS NULL THEN 'no b' WHEN {q}b > {k} THEN 'big' ELSE {q}s END"),
            Kind::Text,
        ),
        16 => (format!("CAST({q}b AS DECIMAL(12,2)) * 2"), Kind::Dec),
        17 => (format!("{q}a % 4"), Kind::Int),
        0 => (format!("{q}a + {q}b"), Kind::Int),
        1 => (format!("{q}a * 3 - {q}b"), Kind::Int),
        2 => (format!("{q}d * 2"), Kind::Dec),
        3 => (format!("{q}d + {q}a"), Kind::Dec),
        4 => (format!("{q}d - 1.25"), Kind::Dec),
        5 => (format!("{q}f * 2 + 1"), Kind::Float),
        6 => (format!("{q}f - {q}a"), Kind::Float),
        7 => (
            format!("CASE WHEN {q}a > {k} THEN {q}b ELSE {q}a END"),
            Kind::Int,
        ),
        8 => (format!("COALESCE({q}b, {q}a)"), Kind::Int),
        9 => (r.dec_to_int(&format!("{q}d")), Kind::Int),
        10 => (format!("CAST({q}a AS DECIMAL(10,2)) + {q}d"), Kind::Dec),
        11 => (format!("-{q}a"), Kind::Int),
        12 => (format!("abs({q}a - {k})"), Kind::Int),
        _ => (format!("{q}d * {q}d"), Kind::Dec),
    }
}

/// A condition over t1 (qualified by `q`).
fn predicate(rng: &mut Rng, r: &Render, q: &str) -> String {
    let k = rng.int(-15, 15);
    let dec = format!("{:.2}", rng.int(-5000, 5000) as f64 / 100.0);
    match rng.int(0, 23) {
        22 => format!(
            "substr({q}s, 1, 2) IN ('be', '{}')",
            rng.pick(&["ga", "ze", "ep"])
        ),
        // One condition the source does not get (abs stays local), one it does.
        23 => format!("abs({q}a) > {} AND {q}b IS NOT NULL", rng.int(0, 12)),
        14 => format!(
            "{q}s LIKE '{}'",
            rng.pick(&["_eta", "%ta", "e_s", "%a%", "g_mm%"])
        ),
        15 => format!("{q}s NOT LIKE '%{}'", rng.pick(&["a", "s", "ta"])),
        16 => format!(
            "{q}s {} '{}'",
            rng.pick(&["<", ">=", "<>"]),
            rng.pick(&["beta", "delta", "eps"])
        ),
        17 => format!("{q}s IN ('beta', '{}')", rng.pick(&["eps", "zeta", "nope"])),
        18 => format!("{q}b IS NULL OR {q}b > {}", k + 20),
        19 => format!("{q}d BETWEEN -{} AND {dec}", rng.int(0, 40)),
        20 => format!(
            "CASE WHEN {q}s = 'beta' THEN {q}a ELSE {q}g END > {}",
            k.rem_euclid(6)
        ),
        21 => match r.dialect {
            Dialect::Postgres => format!("CAST({q}a AS DOUBLE PRECISION) < {q}f"),
            _ => format!("CAST({q}a AS DOUBLE) < {q}f"),
        },
        0 => format!("{q}a > {k}"),
        1 => format!("{q}b IS NULL"),
        2 => format!("{q}b IS NOT NULL AND {q}b < {}", k + 25),
        3 => format!("{q}d > {dec}"),
        4 => format!("{q}d <= {dec} OR {q}d IS NULL"),
        5 => format!("{q}f < {}", k as f64 * 0.5),
        6 => format!("{q}s = '{}'", rng.pick(&["beta", "gamma", "zeta"])),
        7 => format!("{q}s LIKE '{}%'", rng.pick(&["a", "g", "e", "z"])),
        8 => format!("{} = {}", r.dec_to_int(&format!("{q}d")), k * 3),
        9 => format!("{q}a BETWEEN {k} AND {}", k + 8),
        10 => format!("{q}a IN ({k}, {}, {})", k + 1, k + 5),
        11 => format!("NOT ({q}a > {k} OR {q}b < 10)"),
        12 => format!("{q}d = {}", rng.pick(&["12.50", "-3.10", "0.00", "27.45"])),
        _ => format!("{q}g <> {}", k.rem_euclid(6)),
    }
}

/// One query of a random family, rendered for Quarry and for the source.
fn generate(seed: u64, target: &Target) -> Query {
    let family = Rng(seed).int(0, 10);
    let render = |dialect| {
        // The same choices for both dialects: the same seed.
        let mut rng = Rng(seed);
        rng.next();
        let r = Render { dialect, target };
        let (t1, t2) = (r.t1(), r.t2());
        let (sql, kinds, ordered): (String, Vec<Kind>, bool) = match family {
            // Projections and filters.
            0 | 1 => {
                let mut items = vec![("id".to_owned(), Kind::Int)];
                for _ in 0..rng.int(1, 3) {
                    items.push(expression(&mut rng, &r, ""));
                }
                let p = predicate(&mut rng, &r, "");
                let sql = format!("SELECT {} FROM {t1} WHERE {p}", r.select(&items));
                (sql, items.iter().map(|i| i.1).collect(), false)
            }
            // Joins in one connection, inner or left.
            2 => {
                let join = if rng.chance(50) { "JOIN" } else { "LEFT JOIN" };
                let (e, kind) = expression(&mut rng, &r, "x.");
                let items = vec![
                    ("x.id".to_owned(), Kind::Int),
                    ("y.id".to_owned(), Kind::Int),
                    ("y.amount".to_owned(), Kind::Dec),
                    (e, kind),
                ];
                let p = predicate(&mut rng, &r, "x.");
                let sql = format!(
                    "SELECT {} FROM {t1} x {join} {t2} y ON x.id = y.t1_id WHERE {p}",
                    r.select(&items)
                );
                (sql, items.iter().map(|i| i.1).collect(), false)
            }
            // Joins across the two connections (the other holds the same rows).
            3 => {
                let other = r.other_t2();
                let items = vec![
                    ("x.g".to_owned(), Kind::Int),
                    ("count(*)".to_owned(), Kind::Int),
                    ("sum(y.amount)".to_owned(), Kind::Dec),
                    ("max(y.label)".to_owned(), Kind::Text),
                ];
                let p = predicate(&mut rng, &r, "x.");
                let sql = format!(
                    "SELECT {} FROM {t1} x JOIN {other} y ON x.id = y.t1_id WHERE {p} GROUP BY x.g",
                    r.select(&items)
                );
                (sql, items.iter().map(|i| i.1).collect(), false)
            }
            // GROUP BY and HAVING.
            4 | 5 => {
                let items = if family == 5 {
                    // A single COUNT(DISTINCT) beside sums, one of them only in HAVING: a
                    // shape DataFusion rewrites.
                    vec![
                        ("g".to_owned(), Kind::Int),
                        ("count(DISTINCT b)".to_owned(), Kind::Int),
                        ("sum(a)".to_owned(), Kind::Int),
                    ]
                } else {
                    vec![
                        ("g".to_owned(), Kind::Int),
                        ("count(*)".to_owned(), Kind::Int),
                        ("sum(a)".to_owned(), Kind::Int),
                        ("min(d)".to_owned(), Kind::Dec),
                        ("sum(d)".to_owned(), Kind::Dec),
                        ("count(b)".to_owned(), Kind::Int),
                        ("max(s)".to_owned(), Kind::Text),
                        ("avg(d)".to_owned(), Kind::Avg),
                        ("avg(a)".to_owned(), Kind::Avg),
                    ]
                };
                let p = predicate(&mut rng, &r, "");
                let having = match rng.int(0, 3) {
                    0 => format!(" HAVING count(*) > {}", rng.int(1, 9)),
                    1 => format!(" HAVING sum(a) > {}", rng.int(-20, 20)),
                    2 => format!(" HAVING sum(d) >= {}.50", rng.int(-100, 100)),
                    _ => String::new(),
                };
                let sql = format!(
                    "SELECT {} FROM {t1} WHERE {p} GROUP BY g{having}",
                    r.select(&items)
                );
                (sql, items.iter().map(|i| i.1).collect(), false)
            }
            // DISTINCT.
            6 => {
                let items = if rng.chance(50) {
                    vec![("g".to_owned(), Kind::Int), ("b".to_owned(), Kind::Int)]
                } else {
                    vec![("s".to_owned(), Kind::Text)]
                };
                let p = predicate(&mut rng, &r, "");
                let sql = format!("SELECT DISTINCT {} FROM {t1} WHERE {p}", r.select(&items));
                (sql, items.iter().map(|i| i.1).collect(), false)
            }
            // ORDER BY with LIMIT, over a total order: compared in order.
            7 => {
                let (e, kind) = expression(&mut rng, &r, "");
                let items = vec![
                    ("id".to_owned(), Kind::Int),
                    ("a".to_owned(), Kind::Int),
                    (e, kind),
                ];
                let order = rng.pick(&["a DESC, id", "g, a, id DESC", "f, id", "id DESC"]);
                let p = predicate(&mut rng, &r, "");
                let sql = format!(
                    "SELECT {} FROM {t1} WHERE {p} ORDER BY {order} LIMIT {}",
                    r.select(&items),
                    rng.int(1, 25)
                );
                (sql, items.iter().map(|i| i.1).collect(), true)
            }
            // Window functions.
            8 => {
                let items = vec![
                    ("id".to_owned(), Kind::Int),
                    (
                        "row_number() OVER (PARTITION BY g ORDER BY id)".to_owned(),
                        Kind::Int,
                    ),
                    (
                        "sum(a) OVER (PARTITION BY g ORDER BY id)".to_owned(),
                        Kind::Int,
                    ),
                    ("lag(a) OVER (ORDER BY id)".to_owned(), Kind::Int),
                    ("rank() OVER (ORDER BY a)".to_owned(), Kind::Int),
                    (
                        "sum(d) OVER (PARTITION BY g ORDER BY id)".to_owned(),
                        Kind::Dec,
                    ),
                ];
                let sql = format!("SELECT {} FROM {t1}", r.select(&items));
                (sql, items.iter().map(|i| i.1).collect(), false)
            }
            // Chains of three or four inner joins, written in a random order, some through a
            // many-to-many key, some with a condition across inputs: Quarry reorders them.
            10 => {
                let (px, pz) = (predicate(&mut rng, &r, "x."), predicate(&mut rng, &r, "z."));
                let mut from = vec![format!("{t1} x"), format!("{t2} y"), format!("{t1} z")];
                let mut conditions = vec![
                    "y.t1_id = x.id".to_owned(),
                    rng.pick(&["z.id = y.t1_id + 1", "z.g = x.g", "z.id = y.id"])
                        .to_string(),
                    px,
                    pz,
                ];
                if rng.chance(60) {
                    from.push(format!("{t2} w"));
                    conditions.push(
                        rng.pick(&["w.t1_id = z.id", "w.label = y.label", "w.id = x.id"])
                            .to_string(),
                    );
                }
                if rng.chance(30) {
                    conditions.push("x.a < z.a + 5".to_owned());
                }
                for i in (1..from.len()).rev() {
                    from.swap(i, rng.int(0, i as i64) as usize);
                }
                for i in (1..conditions.len()).rev() {
                    conditions.swap(i, rng.int(0, i as i64) as usize);
                }
                let items = vec![
                    ("x.g".to_owned(), Kind::Int),
                    ("count(*)".to_owned(), Kind::Int),
                    ("sum(y.amount)".to_owned(), Kind::Dec),
                    ("min(z.id)".to_owned(), Kind::Int),
                    ("max(y.label)".to_owned(), Kind::Text),
                ];
                let sql = format!(
                    "SELECT {} FROM {} WHERE {} GROUP BY x.g",
                    r.select(&items),
                    from.join(", "),
                    conditions
                        .iter()
                        .map(|c| format!("({c})"))
                        .collect::<Vec<_>>()
                        .join(" AND ")
                );
                (sql, items.iter().map(|i| i.1).collect(), false)
            }
            // Subqueries.
            _ => match rng.int(0, 9) {
                9 => {
                    // NOT EXISTS under a condition on a scalar subquery (TPC-H Q22's shape).
                    let items = vec![("id".to_owned(), Kind::Int), ("s".to_owned(), Kind::Text)];
                    let p = predicate(&mut rng, &r, &format!("{t1}."));
                    let sql = format!(
                        "SELECT {} FROM {t1} WHERE {p} AND a > (SELECT avg(x.d) FROM {t1} x WHERE x.d > 0) AND NOT EXISTS (SELECT * FROM {t2} WHERE {t2}.t1_id = {t1}.id)",
                        r.select(&items)
                    );
                    (sql, items.iter().map(|i| i.1).collect(), false)
                }
                6 => {
                    // NOT EXISTS beside a filter on the outer table (TPC-H Q21, Q22's shape).
                    let items = vec![("id".to_owned(), Kind::Int), ("a".to_owned(), Kind::Int)];
                    let p = predicate(&mut rng, &r, &format!("{t1}."));
                    let sql = format!(
                        "SELECT {} FROM {t1} WHERE {p} AND NOT EXISTS (SELECT 1 FROM {t2} WHERE {t2}.t1_id = {t1}.id AND {t2}.amount > {}.5)",
                        r.select(&items),
                        rng.int(0, 99)
                    );
                    (sql, items.iter().map(|i| i.1).collect(), false)
                }
                7 => {
                    // IN over a grouped subquery with HAVING (TPC-H Q18's shape).
                    let items = vec![("id".to_owned(), Kind::Int), ("g".to_owned(), Kind::Int)];
                    let p = predicate(&mut rng, &r, &format!("{t1}."));
                    let sql = format!(
                        "SELECT {} FROM {t1} WHERE {p} AND id IN (SELECT t1_id FROM {t2} GROUP BY t1_id HAVING count(*) > {})",
                        r.select(&items),
                        rng.int(0, 2)
                    );
                    (sql, items.iter().map(|i| i.1).collect(), false)
                }
                8 => {
                    // EXISTS with a correlated inequality, under an aggregate (TPC-H Q4, Q21).
                    let items = vec![
                        ("g".to_owned(), Kind::Int),
                        ("count(*)".to_owned(), Kind::Int),
                        ("avg(d)".to_owned(), Kind::Avg),
                    ];
                    let sql = format!(
                        "SELECT {} FROM {t1} WHERE EXISTS (SELECT 1 FROM {t2} WHERE {t2}.t1_id = {t1}.id AND {t2}.id <> {t1}.a) GROUP BY g",
                        r.select(&items)
                    );
                    (sql, items.iter().map(|i| i.1).collect(), false)
                }
                5 => {
                    // A correlated scalar subquery in WHERE (TPC-H Q2 and Q17's shape).
                    let items = vec![("id".to_owned(), Kind::Int), ("g".to_owned(), Kind::Int)];
                    let sql = format!(
                        "SELECT {} FROM {t1} WHERE a = (SELECT max(x.a) FROM {t1} x WHERE x.g = {t1}.g)",
                        r.select(&items)
                    );
                    (sql, items.iter().map(|i| i.1).collect(), false)
                }
                0 => {
                    let items = vec![("id".to_owned(), Kind::Int), ("a".to_owned(), Kind::Int)];
                    let sql = format!(
                        "SELECT {} FROM {t1} WHERE id IN (SELECT t1_id FROM {t2} WHERE amount > {}.5)",
                        r.select(&items),
                        rng.int(0, 99)
                    );
                    (sql, items.iter().map(|i| i.1).collect(), false)
                }
                1 => {
                    let items = vec![("id".to_owned(), Kind::Int)];
                    let sql = format!(
                        "SELECT {} FROM {t1} WHERE EXISTS (SELECT 1 FROM {t2} WHERE {t2}.t1_id = {t1}.id AND {t2}.label = '{}')",
                        r.select(&items),
                        rng.pick(&["x", "y", "z"])
                    );
                    (sql, items.iter().map(|i| i.1).collect(), false)
                }
                2 => {
                    let items = vec![
                        ("id".to_owned(), Kind::Int),
                        (
                            format!("(SELECT count(*) FROM {t2} WHERE {t2}.t1_id = {t1}.id)"),
                            Kind::Int,
                        ),
                    ];
                    let p = predicate(&mut rng, &r, &format!("{t1}."));
                    let sql = format!("SELECT {} FROM {t1} WHERE {p}", r.select(&items));
                    (sql, items.iter().map(|i| i.1).collect(), false)
                }
                3 => {
                    let items = vec![("g".to_owned(), Kind::Int), ("total".to_owned(), Kind::Int)];
                    let sql = format!(
                        "SELECT {} FROM (SELECT g, sum(a) AS total FROM {t1} GROUP BY g) q WHERE total > {}",
                        r.select(&items),
                        rng.int(-30, 30)
                    );
                    (sql, items.iter().map(|i| i.1).collect(), false)
                }
                _ => {
                    let items = vec![("id".to_owned(), Kind::Int), ("a".to_owned(), Kind::Int)];
                    let sql = format!(
                        "SELECT {} FROM {t1} WHERE a > (SELECT avg(a) FROM {t1})",
                        r.select(&items)
                    );
                    (sql, items.iter().map(|i| i.1).collect(), false)
                }
            },
        };
        (sql, kinds, ordered)
    };
    let (quarry, kinds, ordered) = render(Dialect::Quarry);
    let (source, _, _) = render(target.source);
    Query {
        quarry,
        source,
        kinds,
        ordered,
    }
}

/// A value in the form both sides are compared in.
fn normal(kind: Kind, text: Option<&str>) -> Option<String> {
    let text = text?.trim();
    Some(match kind {
        Kind::Int => text
            .parse::<i128>()
            .unwrap_or_else(|_| panic!("not an integer: {text}"))
            .to_string(),
        Kind::Dec => {
            let mut t = text.to_owned();
            if t.contains('.') {
                t = t.trim_end_matches('0').trim_end_matches('.').to_owned();
            }
            if t == "-0" { "0".to_owned() } else { t }
        }
        Kind::Float => format!(
            "{:?}",
            text.parse::<f64>()
                .unwrap_or_else(|_| panic!("not a float: {text}"))
        ),
        Kind::Text => text.to_owned(),
        // Compared by `same_avg`.
        Kind::Avg => text.to_owned(),
    })
}

fn same_avg(a: &Option<String>, b: &Option<String>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            let (a, b): (f64, f64) = (a.parse().unwrap(), b.parse().unwrap());
            (a - b).abs() <= 1e-4
        }
        (a, b) => a == b,
    }
}

type Rows = Vec<Vec<Option<String>>>;

fn quarry_rows(batches: &[RecordBatch], kinds: &[Kind]) -> Rows {
    let options = FormatOptions::default();
    let mut rows = Vec::new();
    for batch in batches {
        let formatters: Vec<_> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options).unwrap())
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(
                kinds
                    .iter()
                    .enumerate()
                    .map(|(i, kind)| {
                        let text = (!batch.column(i).is_null(row))
                            .then(|| formatters[i].value(row).to_string());
                        normal(*kind, text.as_deref())
                    })
                    .collect(),
            );
        }
    }
    rows
}

fn same_rows(ours: &Rows, theirs: &Rows, kinds: &[Kind], ordered: bool) -> bool {
    let (mut ours, mut theirs) = (ours.clone(), theirs.clone());
    if !ordered {
        ours.sort();
        theirs.sort();
    }
    ours.len() == theirs.len()
        && ours.iter().zip(&theirs).all(|(a, b)| {
            kinds.iter().enumerate().all(|(i, kind)| match kind {
                Kind::Avg => same_avg(&a[i], &b[i]),
                _ => a[i] == b[i],
            })
        })
}

fn show(rows: &Rows) -> String {
    rows.iter()
        .take(40)
        .map(|r| {
            r.iter()
                .map(|v| v.clone().unwrap_or_else(|| "NULL".into()))
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect::<Vec<_>>()
        .join("\n    ")
}

/// Quarry's rows for `sql`, or its error.
async fn quarry_answer(engine: &quarry::Engine, sql: &str, kinds: &[Kind]) -> Result<Rows, String> {
    match engine.sql(sql).await {
        Ok(frame) => match frame.collect().await {
            Ok(batches) => Ok(quarry_rows(&batches, kinds)),
            Err(e) => Err(e.to_string()),
        },
        Err(e) => Err(e.to_string()),
    }
}

/// What is wrong with `ours`, Quarry's answer to generated query `n` (seed `seed`) run
/// as `mode` with `sql`, against the source's `theirs`; `note` adds to the report.
#[allow(clippy::too_many_arguments)]
fn judge(
    n: u64,
    seed: u64,
    mode: &str,
    sql: &str,
    query: &Query,
    note: &str,
    ours: &Result<Rows, String>,
    theirs: &Rows,
) -> Option<String> {
    match ours {
        Ok(ours) if same_rows(ours, theirs, &query.kinds, query.ordered) => None,
        Ok(ours) => Some(format!(
            "query {n} {mode} (seed {}):\n  quarry: {sql}\n  source: {}{note}\n  quarry answered ({} rows):\n    {}\n  source answered ({} rows):\n    {}",
            seed.wrapping_add(n),
            query.source,
            ours.len(),
            show(ours),
            theirs.len(),
            show(theirs)
        )),
        Err(e) => Some(format!(
            "query {n} {mode} (seed {}):\n  quarry: {sql}{note}\n  failed: {e}",
            seed.wrapping_add(n),
        )),
    }
}

fn settings() -> (usize, u64) {
    let queries = std::env::var("QUARRY_DIFF_QUERIES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_QUERIES);
    let seed = std::env::var("QUARRY_DIFF_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    (queries, seed)
}

/// Both sources loaded with the dataset, in one engine with connections `pg` and `my`.
async fn sources() -> (PgSourceFixture, MySqlSourceFixture) {
    let mut pg = PgSourceFixture::new().await;
    pg.exec(&dataset(false)).await;
    let mut my = MySqlSourceFixture::new().await;
    my.exec(&dataset(true)).await;
    pg.engine
        .register_connection("my", "mysql", crate::support::mysql_source_config(&my.name))
        .await
        .unwrap();
    let mut live_pg = crate::support::pg_source_config(&pg.db.name);
    live_pg["mode"] = "live".into();
    pg.engine
        .register_connection("pg_live", "postgres", live_pg)
        .await
        .unwrap();
    let mut live_my = crate::support::mysql_source_config(&my.name);
    live_my["mode"] = "live".into();
    pg.engine
        .register_connection("my_live", "mysql", live_my)
        .await
        .unwrap();
    for name in ["pg", "my", "pg_live", "my_live"] {
        pg.engine.discover_connection(name).await.unwrap();
    }
    (pg, my)
}

async fn source_rows(
    pg: &mut PgSourceFixture,
    my: Option<&mut MySqlSourceFixture>,
    dialect: Dialect,
    sql: &str,
    kinds: &[Kind],
) -> Result<Rows, String> {
    let text = |row: &dyn Fn(usize) -> Option<String>| -> Vec<Option<String>> {
        kinds
            .iter()
            .enumerate()
            .map(|(i, kind)| normal(*kind, row(i).as_deref()))
            .collect()
    };
    let query = sqlx::AssertSqlSafe(sql.to_owned());
    match dialect {
        Dialect::Postgres => {
            let rows = sqlx::query(query)
                .fetch_all(&mut pg.admin)
                .await
                .map_err(|e| e.to_string())?;
            Ok(rows
                .iter()
                .map(|row| text(&|i| row.get::<Option<String>, _>(i)))
                .collect())
        }
        _ => {
            let my = my.expect("a MariaDB query runs where MariaDB is set up");
            let rows = sqlx::query(query)
                .fetch_all(&mut my.admin)
                .await
                .map_err(|e| e.to_string())?;
            Ok(rows
                .iter()
                .map(|row| text(&|i| row.get::<Option<String>, _>(i)))
                .collect())
        }
    }
}

async fn compare(source: Dialect) {
    let (queries, seed) = settings();
    let (mut pg, mut my) = sources().await;
    let target = |live: bool| {
        let (pg_name, my_name) = if live {
            ("pg_live", "my_live")
        } else {
            ("pg", "my")
        };
        match source {
            Dialect::Postgres => Target {
                source,
                own: [
                    format!("{pg_name}.public.t1"),
                    format!("{pg_name}.public.t2"),
                ],
                other_t2: format!("{my_name}.{}.t2", my.name),
            },
            _ => Target {
                source,
                own: [
                    format!("{my_name}.{}.t1", my.name),
                    format!("{my_name}.{}.t2", my.name),
                ],
                other_t2: format!("{pg_name}.public.t2"),
            },
        }
    };
    let (cached, live) = (target(false), target(true));
    let mut failures = Vec::new();
    let mut pushed = 0;
    for n in 0..queries as u64 {
        let query = generate(seed.wrapping_add(n), &cached);
        let live_sql = generate(seed.wrapping_add(n), &live).quarry;
        let theirs = source_rows(&mut pg, Some(&mut my), source, &query.source, &query.kinds)
            .await
            .unwrap_or_else(|e| panic!("the source refused\n  {}\n: {e}", query.source));
        let remote = remote_sql(&pg.engine, &live_sql).await;
        pushed += usize::from(remote.iter().any(|l| l.contains("VirtualExecutionPlan")));
        let mut answers = Vec::new();
        for (mode, sql) in [("cached", &query.quarry), ("live", &live_sql)] {
            let ours = quarry_answer(&pg.engine, sql, &query.kinds).await;
            let pushed_down = if mode == "live" {
                format!("\n  pushed down:\n    {}", remote.join("\n    "))
            } else {
                String::new()
            };
            failures.extend(judge(
                n,
                seed,
                mode,
                sql,
                &query,
                &pushed_down,
                &ours,
                &theirs,
            ));
            if let Ok(ours) = ours {
                answers.push(ours);
            }
        }
        // Pushed down or not, Quarry's answer is the same: averages too, to the last digit
        // (the source's own rounding may differ, so against the source they get a tolerance).
        let exact: Vec<Kind> = query
            .kinds
            .iter()
            .map(|k| if *k == Kind::Avg { Kind::Text } else { *k })
            .collect();
        if let [cached, live] = answers.as_slice()
            && !same_rows(cached, live, &exact, query.ordered)
        {
            failures.push(format!(
                "query {n} (seed {}): live and cached answers differ\n  quarry: {live_sql}\n  pushed down:\n    {}\n  cached ({} rows):\n    {}\n  live ({} rows):\n    {}",
                seed.wrapping_add(n),
                remote.join("\n    "),
                cached.len(),
                show(cached),
                live.len(),
                show(live)
            ));
        }
    }
    eprintln!("{pushed} of {queries} live queries sent a statement with their work to the source");
    // Most queries touch only one connection's tables: most of their work must go down.
    assert!(
        pushed * 2 > queries,
        "only {pushed} of {queries} live queries pushed anything down"
    );
    assert!(
        failures.is_empty(),
        "{} of {queries} queries differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// The statements a query sends to its sources, from its `EXPLAIN`.
async fn remote_sql(engine: &quarry::Engine, sql: &str) -> Vec<String> {
    let Ok(frame) = engine.sql(&format!("EXPLAIN {sql}")).await else {
        return Vec::new();
    };
    let Ok(batches) = frame.collect().await else {
        return Vec::new();
    };
    let text = datafusion::arrow::util::pretty::pretty_format_batches(&batches)
        .map(|t| t.to_string())
        .unwrap_or_default();
    text.lines()
        .filter(|l| l.contains("VirtualExecutionPlan") || l.contains("LiveScanExec"))
        .map(|l| {
            l.trim_matches(|c: char| c == '|' || c.is_whitespace())
                .to_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_queries_answer_as_postgresql_does() {
    compare(Dialect::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_queries_answer_as_mariadb_does() {
    compare(Dialect::Mysql).await;
}

#[test]
fn the_generator_is_seeded_and_covers_every_family() {
    let target = Target {
        source: Dialect::Postgres,
        own: ["pg.public.t1".into(), "pg.public.t2".into()],
        other_t2: "my.db.t2".into(),
    };
    let a = generate(42, &target);
    let b = generate(42, &target);
    assert_eq!(a.quarry, b.quarry);
    assert_eq!(a.source, b.source);
    let texts: Vec<String> = (0..300).map(|n| generate(n, &target).quarry).collect();
    for needle in [
        " JOIN ",
        "my.db.t2",
        "GROUP BY",
        "HAVING",
        "DISTINCT",
        "LIMIT",
        "OVER (",
        "EXISTS",
        "NOT EXISTS",
        "AND NOT EXISTS (SELECT *",
        "substr(",
        "abs(",
        "HAVING count(*) > ",
        "CASE WHEN",
        "COALESCE",
        "CAST(",
        " IN (SELECT",
        "LIKE '_",
        "NOT LIKE",
        " IN ('beta'",
        "s < '",
        "IS NULL OR",
    ] {
        assert!(
            texts.iter().any(|t| t.contains(needle)),
            "no query has {needle}"
        );
    }
}

/// The generated queries on the dataset as Parquet files (`t1` in hive folders by `g`),
/// read in place and from the cache through `files` connections, against PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_queries_on_parquet_files_answer_as_postgresql_does() {
    let (queries, seed) = settings();
    let mut pg = PgSourceFixture::new().await;
    pg.exec(&dataset(false)).await;
    pg.engine.discover_connection("pg").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("files");
    std::fs::create_dir_all(root.join("t1")).unwrap();
    for copy in [
        format!(
            "COPY (SELECT * FROM pg.public.t1) TO '{}/' STORED AS PARQUET PARTITIONED BY (g)",
            root.join("t1").display()
        ),
        format!(
            "COPY (SELECT * FROM pg.public.t2) TO '{}' STORED AS PARQUET",
            root.join("t2.parquet").display()
        ),
    ] {
        pg.engine.sql(&copy).await.unwrap().collect().await.unwrap();
    }
    for (name, mode) in [("files", "auto"), ("files_cached", "cache")] {
        pg.engine
            .create_connection(
                name,
                "files",
                serde_json::json!({"url": root.display().to_string(), "mode": mode}),
            )
            .await
            .unwrap()
            .discovery
            .unwrap();
    }
    let target = |name: &str| Target {
        source: Dialect::Postgres,
        own: [format!("{name}.main.t1"), format!("{name}.main.t2")],
        other_t2: "pg.public.t2".to_owned(),
    };
    let (in_place, cached) = (target("files"), target("files_cached"));
    let mut failures = Vec::new();
    for n in 0..queries as u64 {
        let query = generate(seed.wrapping_add(n), &in_place);
        let theirs = source_rows(
            &mut pg,
            None,
            Dialect::Postgres,
            &query.source,
            &query.kinds,
        )
        .await
        .unwrap_or_else(|e| panic!("the source refused\n  {}\n: {e}", query.source));
        let cached_sql = generate(seed.wrapping_add(n), &cached).quarry;
        for (mode, sql) in [("in place", &query.quarry), ("cached", &cached_sql)] {
            let ours = quarry_answer(&pg.engine, sql, &query.kinds).await;
            failures.extend(judge(n, seed, mode, sql, &query, "", &ours, &theirs));
        }
    }
    eprintln!("{queries} generated queries compared on Parquet files, in place and cached");
    assert!(
        failures.is_empty(),
        "{} of {queries} queries differ:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A join's filter meant for `y.id` must not land on `x.id` (same name, other table): with
/// DataFusion 55's dynamic filters it did, and the memory tier's copy dropped matching rows
/// (generated query 480 of seed 5 on the cached files). Checked on the first read (from
/// Parquet) and the later ones (from memory), against PostgreSQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_join_filter_never_lands_on_a_same_named_column_of_another_table() {
    let mut pg = PgSourceFixture::new().await;
    pg.exec(&dataset(false)).await;
    pg.engine.discover_connection("pg").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("files");
    std::fs::create_dir_all(&root).unwrap();
    for table in ["t1", "t2"] {
        let copy = format!(
            "COPY (SELECT * FROM pg.public.{table}) TO '{}' STORED AS PARQUET",
            root.join(format!("{table}.parquet")).display()
        );
        pg.engine.sql(&copy).await.unwrap().collect().await.unwrap();
    }
    pg.engine
        .create_connection(
            "files",
            "files",
            serde_json::json!({"url": root.display().to_string(), "mode": "cache"}),
        )
        .await
        .unwrap()
        .discovery
        .unwrap();
    let sql = |t1: &str, t2: &str| {
        format!(
            "SELECT x.g, count(*), sum(y.amount), min(z.id), max(y.label) \
             FROM {t1} x, {t2} y, {t2} w, {t1} z \
             WHERE z.id = y.id AND y.t1_id = x.id AND w.id = x.id AND x.g <> 4 \
             AND z.a BETWEEN -12 AND -4 GROUP BY x.g"
        )
    };
    let kinds = [Kind::Int, Kind::Int, Kind::Dec, Kind::Int, Kind::Text];
    let source = sql("t1", "t2").replace(
        "SELECT x.g, count(*), sum(y.amount), min(z.id), max(y.label)",
        "SELECT x.g::text, count(*)::text, sum(y.amount)::text, min(z.id)::text, max(y.label)",
    );
    let query = Query {
        quarry: sql("files.main.t1", "files.main.t2"),
        source: source.clone(),
        kinds: kinds.to_vec(),
        ordered: false,
    };
    let theirs = source_rows(&mut pg, None, Dialect::Postgres, &source, &kinds)
        .await
        .unwrap();
    assert!(theirs.len() > 2, "the query keeps rows from several groups");
    for run in 0..3 {
        let ours = quarry_answer(&pg.engine, &query.quarry, &kinds).await;
        let wrong = judge(run, 0, "cached", &query.quarry, &query, "", &ours, &theirs);
        assert!(wrong.is_none(), "run {run}: {}", wrong.unwrap_or_default());
    }
}
