//! The `quarry` command: the interactive shell by default; `-c` and `-f` run statements and
//! exit; piped standard input runs as a script.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use quarry::Engine;
use quarry::repl::render::Mode;
use quarry::repl::{self, Settings, Shell};

const EXAMPLES: &str = "\
Examples:
  quarry                                   open the interactive shell
  quarry -c \"SELECT 1 + 1\"                 run statements and exit
  quarry -f report.sql --format csv        run a script, write CSV
  echo \"SELECT 42;\" | quarry --format json  run piped statements
  quarry -c \"SELECT * FROM create_connection('shop', 'postgres',
      '{\\\"host\\\": \\\"127.0.0.1\\\", \\\"database\\\": \\\"shop\\\", \\\"user\\\": \\\"me\\\"}')\"

In the shell, .help lists the commands (.tables, .schema, .mode, .timer, ...).";

/// Quarry: query all your databases with one SQL dialect.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    /// Data directory (metadata store, key file, cache, history) [default: ~/.quarry]
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

    /// Run these SQL statements (and dot-commands), print their results and exit
    #[arg(
        short = 'c',
        long = "command",
        value_name = "SQL",
        conflicts_with = "file"
    )]
    command: Option<String>,

    /// Run the statements in FILE and exit
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,

    /// Go on after a failed statement (the exit status still reports the failure)
    #[arg(long)]
    keep_going: bool,

    /// How results are written when not interactive
    #[arg(long, value_enum, default_value_t = Mode::Table, value_name = "FORMAT")]
    format: Mode,

    /// Print each statement's elapsed time
    #[arg(long)]
    timer: bool,
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUARRY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // The shell turns a panic into an error message; the default report would add a
    // second, developer-facing one.
    std::panic::set_hook(Box::new(|info| tracing::debug!("panic: {info}")));
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match run(&runtime, cli) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(_) => ExitCode::FAILURE,
        Err(e) => {
            repl::report(&e);
            ExitCode::FAILURE
        }
    }
}

/// Runs what the command line asks for; returns how many statements failed.
fn run(runtime: &tokio::runtime::Runtime, cli: Cli) -> quarry::Result<usize> {
    let mut builder = Engine::builder();
    if let Some(dir) = cli.data_dir {
        builder = builder.data_dir(dir);
    }
    if let Some(url) = cli.store_url {
        builder = builder.store_url(url);
    }
    let engine = runtime.block_on(builder.build())?;
    let interactive = cli.command.is_none() && cli.file.is_none() && std::io::stdin().is_terminal();
    let settings = Settings {
        mode: cli.format,
        max_rows: interactive.then_some(repl::INTERACTIVE_MAX_ROWS),
        timer: cli.timer,
    };
    if interactive {
        repl::run_interactive(runtime, engine, settings)?;
        return Ok(0);
    }
    let mut shell = Shell::new(engine, settings, false);
    let script = match (cli.command, cli.file) {
        (Some(sql), _) => sql,
        (None, Some(path)) => std::fs::read_to_string(&path)
            .map_err(quarry::Error::io("cannot read the script", path))?,
        (None, None) => {
            let stdin = std::io::stdin().lock();
            return repl::run_reader(runtime, &mut shell, stdin, cli.keep_going);
        }
    };
    Ok(runtime
        .block_on(shell.run_script(&script, cli.keep_going))
        .0)
}
