//! The Python Flight SQL clients (ADBC driver, pyarrow) against a real server: the tests
//! live in tests/python; this starts the server they talk to and installs the clients if
//! they are missing.

use crate::flight::{PASSWORD, Served};
use crate::support::{ensure_python_packages, python};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_clients_pass_their_suite() {
    ensure_python_packages(
        "import adbc_driver_flightsql.dbapi, pyarrow.flight",
        &["adbc-driver-flightsql", "pyarrow"],
    )
    .await;
    let served = Served::start().await;
    let out = tokio::process::Command::new(python())
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/python/test_flight_sql.py"
        ))
        .arg("-v")
        .env("QUARRY_FLIGHT_URI", served.uri())
        .env("QUARRY_FLIGHT_PASSWORD", PASSWORD)
        .output()
        .await
        .unwrap();
    let report = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // Every test ran: none was skipped or missing.
    assert!(report.contains("Ran 14 tests"), "{report}");
}
