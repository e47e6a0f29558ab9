//! The Python Flight SQL clients (ADBC driver, pyarrow) against a real server: the tests
//! live in tests/python; this starts the server they talk to and installs the clients if
//! they are missing.

use crate::flight::{PASSWORD, Served};

const PACKAGES: [&str; 2] = ["adbc-driver-flightsql", "pyarrow"];

/// The Python that runs the tests: `QUARRY_TEST_PYTHON` or `python3`.
fn python() -> String {
    std::env::var("QUARRY_TEST_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// Installs the client packages unless they import already (`.ci/run` installs them first).
async fn ensure_clients() {
    let imports = tokio::process::Command::new(python())
        .args(["-c", "import adbc_driver_flightsql.dbapi, pyarrow.flight"])
        .output()
        .await
        .expect("python3 runs (install Python 3 to run the Flight SQL client tests)");
    if imports.status.success() {
        return;
    }
    let install = tokio::process::Command::new(python())
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(PACKAGES)
        .status()
        .await
        .expect("pip runs");
    assert!(install.success(), "pip could not install {PACKAGES:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn python_clients_pass_their_suite() {
    ensure_clients().await;
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
    assert!(report.contains("Ran 9 tests"), "{report}");
}
