//! The `quarry` command: the interactive shell by default; `-c` and `-f` run statements and
//! exit; piped standard input runs as a script.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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

  QUARRY_SERVER_PASSWORD=... quarry serve  serve Flight SQL clients on 127.0.0.1:50051
  QUARRY_SERVER_PASSWORD=... quarry serve --http-addr 127.0.0.1:8080
                                           ...and the REST API (GET /openapi.json)

In the shell, .help lists the commands (.tables, .schema, .mode, .timer, ...).";

/// Quarry: query all your databases with one SQL dialect.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    action: Option<Action>,

    /// Data directory (metadata store, key file, cache, history) [default: ~/.quarry]
    #[arg(long, env = "QUARRY_HOME", value_name = "DIR", global = true)]
    data_dir: Option<PathBuf>,

    /// Metadata store: postgres://user@host/db to share one between processes
    /// [default: quarry.db in the data directory]
    #[arg(
        long = "store",
        env = "QUARRY_STORE_URL",
        value_name = "URL",
        hide_env_values = true,
        global = true
    )]
    store_url: Option<String>,

    /// How much of the cache to keep decoded in memory: a size (4GiB), a share of
    /// memory (25%), or 0 for none [default: 25%]
    #[arg(
        long = "memory-cache",
        env = "QUARRY_MEMORY_CACHE",
        value_name = "SIZE",
        global = true,
        value_parser = memory_budget
    )]
    memory_cache: Option<u64>,

    /// Where the Parquet cache lives: s3://bucket/prefix (the S3 client reads the AWS_*
    /// variables: AWS_ENDPOINT, AWS_REGION, AWS_ACCESS_KEY_ID, ...)
    /// [default: the data directory]
    #[arg(
        long = "cache-url",
        env = "QUARRY_CACHE_URL",
        value_name = "URL",
        hide_env_values = true,
        global = true
    )]
    cache_url: Option<String>,

    /// Run statements that read only cached tables on the Ballista cluster whose scheduler
    /// is at df://host:port (the cache must be on object storage its executors share)
    #[cfg(feature = "distributed")]
    #[arg(long, env = "QUARRY_BALLISTA", value_name = "URL", global = true)]
    ballista: Option<String>,

    /// With --ballista: run a statement the cluster cannot (it reads a live table, say)
    /// in this process instead of failing it
    #[cfg(feature = "distributed")]
    #[arg(long, requires = "ballista", global = true)]
    ballista_fallback: bool,

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

    /// How results are written when not interactive [default: table]. With json, each
    /// statement writes one JSON document (an array of row objects), one after another
    #[arg(long, value_enum, value_name = "FORMAT")]
    format: Option<Mode>,

    /// Print each statement's elapsed time
    #[arg(long)]
    timer: bool,
}

/// What to do instead of the shell.
#[derive(Subcommand, Debug)]
enum Action {
    /// Serve Arrow Flight SQL clients (ADBC, JDBC, pyarrow), and with --http-addr a REST API,
    /// on the same engine and data dir
    #[command(after_help = SERVE_HELP)]
    Serve(ServeArgs),
    /// Print the argon2 hash of a password read from standard input, for a users file
    HashPassword,
    /// Store a secret read from standard input in the operating system's keyring, for a
    /// connection to use as {"keyring": {"service": SERVICE, "user": USER}}
    #[command(subcommand)]
    Keyring(KeyringAction),
    /// Run a process of an Apache DataFusion Ballista cluster that runs cached-table
    /// queries, reading the cache at --cache-url
    #[cfg(feature = "distributed")]
    #[command(subcommand)]
    Ballista(BallistaProcess),
}

/// What `quarry keyring` does.
#[derive(Subcommand, Debug)]
enum KeyringAction {
    /// Store (or replace) the entry SERVICE, USER with the secret on standard input
    Set {
        /// The entry's service
        service: String,
        /// The entry's user
        user: String,
    },
}

/// A Ballista cluster's processes.
#[cfg(feature = "distributed")]
#[derive(Subcommand, Debug)]
enum BallistaProcess {
    /// The scheduler: plans queries into stages and hands tasks to executors
    Scheduler {
        /// Address to listen on
        #[arg(long, default_value = "127.0.0.1:50050", value_name = "HOST:PORT")]
        bind: std::net::SocketAddr,
        /// Seconds an executor may miss heartbeats before its tasks are run elsewhere
        #[arg(long, default_value_t = 30, value_name = "SECONDS",
              value_parser = clap::value_parser!(u64).range(1..))]
        executor_timeout: u64,
    },
    /// An executor: runs tasks, reading the cache's files and serving shuffle data
    Executor {
        /// The scheduler's address
        #[arg(long, default_value = "127.0.0.1:50050", value_name = "HOST:PORT")]
        scheduler: String,
        /// Address its Arrow Flight service (shuffle data) listens on
        #[arg(long, default_value = "127.0.0.1:50051", value_name = "HOST:PORT")]
        bind: std::net::SocketAddr,
        /// Port of its gRPC service
        #[arg(long, default_value_t = 50052, value_name = "PORT")]
        grpc_port: u16,
        /// Tasks it runs at once [default: the machine's cores]
        #[arg(long, value_name = "N")]
        vcores: Option<usize>,
        /// Seconds between heartbeats to the scheduler (keep it under a third of the
        /// scheduler's --executor-timeout)
        #[arg(long, default_value_t = 10, value_name = "SECONDS",
              value_parser = clap::value_parser!(u64).range(1..))]
        heartbeat_interval: u64,
    },
}

const SERVE_HELP: &str = "\
Clients log in with a user and password (HTTP basic in the Flight handshake, or POST /login
over HTTP) and get a bearer token that works on both servers. Set QUARRY_SERVER_PASSWORD for
the user 'quarry', or give --users-file with name:hash lines (hashes from
`quarry hash-password`). There is no default password.

The REST API describes itself at GET /openapi.json.";

#[derive(clap::Args, Debug)]
struct ServeArgs {
    /// Address to listen on for Flight SQL
    #[arg(long, default_value = "127.0.0.1:50051", value_name = "HOST:PORT")]
    flight_addr: std::net::SocketAddr,

    /// Also serve the REST API (connection management, queries) on this address
    #[arg(long, value_name = "HOST:PORT")]
    http_addr: Option<std::net::SocketAddr>,

    /// TLS certificate chain (PEM); with --tls-key
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// TLS private key (PEM); with --tls-cert
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Users file: one name:argon2-hash per line
    #[arg(long, value_name = "FILE")]
    users_file: Option<PathBuf>,

    /// How long a login token stays valid, such as 30m or 12h
    #[arg(long, default_value = "12h", value_parser = humantime::parse_duration, value_name = "DURATION")]
    token_ttl: std::time::Duration,

    /// Sessions one user may hold at once (each login token is a session)
    #[arg(long, default_value_t = quarry::server::client_sessions::DEFAULT_SESSIONS_PER_USER, value_name = "N")]
    max_sessions_per_user: usize,
}

/// `--memory-cache` as clap checks it, so a wrong size exits with status 2.
fn memory_budget(size: &str) -> Result<u64, String> {
    quarry::config::parse_memory_budget(size).map_err(|e| e.to_string())
}

/// The shell's options given with a subcommand, which would silently do nothing.
fn shell_options_with(cli: &Cli) -> Option<&'static str> {
    let given = [
        (cli.command.is_some(), "--command"),
        (cli.file.is_some(), "--file"),
        (cli.keep_going, "--keep-going"),
        (cli.format.is_some(), "--format"),
        (cli.timer, "--timer"),
    ];
    cli.action.as_ref().and(
        given
            .into_iter()
            .find(|(set, _)| *set)
            .map(|(_, name)| name),
    )
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
    if let Some(option) = shell_options_with(&cli) {
        use clap::CommandFactory;
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "{option} is an option of the shell, not of a subcommand; give it without \
                     the subcommand"
                ),
            )
            .exit();
    }
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
fn run(runtime: &tokio::runtime::Runtime, mut cli: Cli) -> quarry::Result<usize> {
    if let Some(Action::HashPassword) = cli.action {
        let password = read_secret("echo 's3cret' | quarry hash-password")?;
        println!("{}", quarry::server::auth::hash_password(&password)?);
        return Ok(0);
    }
    if let Some(Action::Keyring(KeyringAction::Set { service, user })) = &cli.action {
        let example = format!("echo 's3cret' | quarry keyring set {service} {user}");
        let secret = read_secret(&example)?;
        quarry::source::credential::store_in_keyring(service, user, &secret)?;
        eprintln!(
            "stored; use it as {{\"keyring\": {{\"service\": \"{service}\", \"user\": \"{user}\"}}}}"
        );
        return Ok(0);
    }
    #[cfg(feature = "distributed")]
    if let Some(Action::Ballista(process)) = cli.action {
        return runtime
            .block_on(ballista_process(process, cli.cache_url))
            .map(|()| 0);
    }
    let mut builder = Engine::builder();
    if let Some(dir) = cli.data_dir.take() {
        builder = builder.data_dir(dir);
    }
    if let Some(url) = cli.store_url.take() {
        builder = builder.store_url(url);
    }
    if let Some(bytes) = cli.memory_cache {
        builder = builder.memory_cache(bytes);
    }
    if let Some(url) = cli.cache_url.take() {
        builder = builder.cache_url(url);
    }
    #[cfg(feature = "distributed")]
    if let Some(url) = cli.ballista.take() {
        builder = builder.ballista(&url, cli.ballista_fallback)?;
    }
    let engine = runtime.block_on(builder.build())?;
    let handle = engine.clone();
    let result = run_with(runtime, engine, cli);
    // Background copies still in flight stop cleanly (no temp file, no entry); the next run
    // starts them again.
    runtime.block_on(handle.shutdown());
    result
}

/// Runs the shell, a script or the server on `engine`.
fn run_with(runtime: &tokio::runtime::Runtime, engine: Engine, cli: Cli) -> quarry::Result<usize> {
    if let Some(Action::Serve(args)) = cli.action {
        return runtime.block_on(serve(engine, args)).map(|()| 0);
    }
    let interactive = cli.command.is_none() && cli.file.is_none() && std::io::stdin().is_terminal();
    let settings = Settings {
        mode: cli.format.unwrap_or_default(),
        max_rows: interactive.then_some(repl::INTERACTIVE_MAX_ROWS),
        timer: cli.timer,
    };
    if interactive {
        repl::run_interactive(runtime, engine, settings)?;
        return Ok(0);
    }
    let mut shell = Shell::new(engine, settings, false);
    let (script, origin) = match (cli.command, cli.file) {
        (Some(sql), _) => (sql, None),
        (None, Some(path)) => (
            std::fs::read_to_string(&path)
                .map_err(quarry::Error::io("cannot read the script", &path))?,
            Some(path.display().to_string()),
        ),
        (None, None) => {
            let stdin = std::io::stdin().lock();
            return repl::run_reader(runtime, &mut shell, stdin, cli.keep_going);
        }
    };
    Ok(runtime
        .block_on(shell.run_script(&script, origin.as_deref(), cli.keep_going))
        .0)
}

/// Runs a Ballista scheduler or executor over the cache at `cache_url` until it stops.
#[cfg(feature = "distributed")]
async fn ballista_process(
    process: BallistaProcess,
    cache_url: Option<String>,
) -> quarry::Result<()> {
    let Some(url) = cache_url else {
        return Err(quarry::Error::Usage(
            "a Ballista process reads the cache's files: give it the cache URL the Quarry \
             servers use (--cache-url s3://bucket/prefix, or QUARRY_CACHE_URL)"
                .into(),
        ));
    };
    let cache = quarry::cache::CacheStorage::open(&url, &[])?;
    match process {
        BallistaProcess::Scheduler {
            bind,
            executor_timeout,
        } => {
            eprintln!("Ballista scheduler listening on df://{bind}");
            let options = quarry::cluster::SchedulerOptions {
                bind,
                executor_timeout: std::time::Duration::from_secs(executor_timeout),
            };
            quarry::cluster::run_scheduler(options, &cache).await
        }
        BallistaProcess::Executor {
            scheduler,
            bind,
            grpc_port,
            vcores,
            heartbeat_interval,
        } => {
            let (host, port) = scheduler
                .rsplit_once(':')
                .and_then(|(h, p)| Some((h.to_owned(), p.parse().ok()?)))
                .ok_or_else(|| {
                    quarry::Error::Usage(format!("--scheduler '{scheduler}' is not HOST:PORT"))
                })?;
            let vcores = vcores.unwrap_or_else(|| {
                std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
            });
            eprintln!("Ballista executor on {bind}, {vcores} task slots, scheduler {scheduler}");
            quarry::cluster::run_executor(
                quarry::cluster::ExecutorOptions {
                    scheduler: (host, port),
                    bind,
                    grpc_port,
                    vcores,
                    heartbeat: std::time::Duration::from_secs(heartbeat_interval),
                },
                &cache,
            )
            .await
        }
    }
}

/// Reads a password from standard input and prints its hash.
/// One line of standard input, without its line end; `example` shows how to give it.
fn read_secret(example: &str) -> quarry::Result<secrecy::SecretString> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(quarry::Error::io(
            "cannot read the secret",
            "standard input",
        ))?;
    let secret = secrecy::SecretString::from(line.trim_end_matches(['\r', '\n']).to_owned());
    if secrecy::ExposeSecret::expose_secret(&secret).is_empty() {
        return Err(quarry::Error::Usage(format!(
            "nothing on standard input; try: {example}"
        )));
    }
    Ok(secret)
}

/// Runs the Flight SQL server (and the HTTP API when asked) until Ctrl-C.
async fn serve(engine: Engine, args: ServeArgs) -> quarry::Result<()> {
    use quarry::server::auth::{Authenticator, Users};
    use quarry::server::client_sessions::ClientSessions;
    use quarry::server::flight::{self, ServeOptions, TlsFiles};
    let users = match (&args.users_file, std::env::var("QUARRY_SERVER_PASSWORD")) {
        (Some(path), _) => Users::from_file(path)?,
        (None, Ok(password)) => Users::with_password(&secrecy::SecretString::from(password))?,
        (None, Err(_)) => {
            return Err(quarry::Error::Usage(
                "no password is set, so nobody could log in: set QUARRY_SERVER_PASSWORD (user \
                 'quarry') or give --users-file (hashes from `quarry hash-password`)"
                    .into(),
            ));
        }
    };
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    if tls.is_none() && flight::is_exposed(&args.flight_addr) {
        eprintln!(
            "Warning: serving {} without TLS: passwords and results cross the network in the \
             clear. Give --tls-cert and --tls-key.",
            args.flight_addr
        );
    }
    if let Some(addr) = args.http_addr.filter(flight::is_exposed) {
        eprintln!(
            "Warning: the REST API on {addr} is plain HTTP (TLS covers Flight SQL only): \
             passwords and results cross the network in the clear. Keep it on 127.0.0.1 or \
             put a TLS proxy in front."
        );
    }
    // A server runs for long: tables with a refresh_interval are refreshed while it does.
    engine.start_refresh_schedule();
    engine.start_keepalive();
    let scheme = if tls.is_some() { "grpc+tls" } else { "grpc" };
    let auth = std::sync::Arc::new(
        Authenticator::new(users, args.token_ttl).with_managed_users(engine.clone()),
    );
    let sessions = std::sync::Arc::new(ClientSessions::new(
        engine.clone(),
        args.max_sessions_per_user.max(1),
        args.token_ttl,
    ));
    let http = match args.http_addr {
        Some(addr) => Some(
            quarry::server::http::start(engine.clone(), auth.clone(), sessions.clone(), addr)
                .await?,
        ),
        None => None,
    };
    let server = flight::start(ServeOptions {
        addr: args.flight_addr,
        tls,
        auth,
        sessions,
    })
    .await?;
    // Scripts wait for these lines to know the ports are open.
    if let Some(http) = &http {
        eprintln!("Quarry HTTP API listening on http://{}", http.local_addr());
    }
    eprintln!(
        "Quarry Flight SQL listening on {scheme}://{}",
        server.local_addr()
    );
    if tokio::signal::ctrl_c().await.is_ok() {
        eprintln!("Shutting down.");
    }
    if let Some(http) = http {
        http.shutdown().await?;
    }
    server.shutdown().await
}
