//! The `quarry` command: runs SQL given with `-c`, or reads statements from standard input
//! (a minimal prompt when it is a terminal).

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use datafusion::arrow::util::pretty::pretty_format_batches;
use quarry::Engine;

/// Quarry: query all your databases with one SQL dialect.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Data directory (metadata store, key file, cache) [default: ~/.quarry]
    #[arg(long, env = "QUARRY_HOME", value_name = "DIR")]
    data_dir: Option<PathBuf>,

    /// Metadata store: postgres://user@host/db to share one between processes
    /// [default: quarry.db in the data directory]
    #[arg(
        long = "store",
        env = "QUARRY_STORE_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    store_url: Option<String>,

    /// Run these SQL statements, print their results and exit
    #[arg(short = 'c', long = "command", value_name = "SQL")]
    command: Option<String>,
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUARRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("Error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> quarry::Result<()> {
    let mut builder = Engine::builder();
    if let Some(dir) = cli.data_dir {
        builder = builder.data_dir(dir);
    }
    if let Some(url) = cli.store_url {
        builder = builder.store_url(url);
    }
    let engine = builder.build().await?;
    match cli.command {
        Some(sql) => run_script(&engine, &sql).await,
        None => read_loop(&engine).await,
    }
}

/// Runs each statement of `sql` in order, stopping at the first failure.
async fn run_script(engine: &Engine, sql: &str) -> quarry::Result<()> {
    for statement in engine.parse(sql)? {
        let batches = engine.execute(statement).await?.collect().await?;
        if batches.iter().any(|b| b.num_columns() > 0) {
            println!(
                "{}",
                pretty_format_batches(&batches)
                    .map_err(datafusion::error::DataFusionError::from)?
            );
        }
    }
    Ok(())
}

/// Reads statements ending in `;` from standard input. Interactive errors are printed and
/// the loop goes on; a script stops at the first error.
async fn read_loop(engine: &Engine) -> quarry::Result<()> {
    let interactive = std::io::stdin().is_terminal();
    let mut buffer = String::new();
    let prompt = |continued: bool| {
        if interactive {
            print!("{}", if continued { "   ...> " } else { "quarry> " });
            let _ = std::io::stdout().flush();
        }
    };
    prompt(false);
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(quarry::Error::io("cannot read", "standard input"))?;
        buffer.push_str(&line);
        buffer.push('\n');
        if line.trim_end().ends_with(';') {
            let script = std::mem::take(&mut buffer);
            if let Err(e) = run_script(engine, &script).await {
                if !interactive {
                    return Err(e);
                }
                eprintln!("Error: {e}");
            }
        }
        prompt(!buffer.trim().is_empty());
    }
    if !buffer.trim().is_empty() {
        run_script(engine, &buffer).await?;
    }
    Ok(())
}
