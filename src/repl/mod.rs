//! The `quarry` shell: runs statements and commands from the interactive editor, `-c`,
//! `-f` files and piped scripts, and writes their results.

pub mod commands;
pub mod complete;
pub mod progress;
pub mod render;
pub mod statements;

use std::fs::File;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{Config as EditorConfig, Editor};
use tokio::runtime::Runtime;

use self::commands::Command;
use self::complete::QuarryHelper;
use self::progress::FetchProgress;
use self::render::{Mode, RenderOptions};
use self::statements::{Input, Located, Splitter};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::session::DefaultSchema;

/// Rows a table shows at most in the interactive shell unless `.maxrows` says otherwise.
pub const INTERACTIVE_MAX_ROWS: usize = 40;
/// How deep `.read` may nest before it is taken for a loop.
const MAX_READ_DEPTH: usize = 16;

/// What the shell does after an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Read the next input.
    Continue,
    /// Leave.
    Quit,
}

/// The shell's settings, changed by dot-commands.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// How results are written.
    pub mode: Mode,
    /// Rows a table shows at most.
    pub max_rows: Option<usize>,
    /// Print each statement's elapsed time.
    pub timer: bool,
}

/// Runs inputs against an engine and writes their results.
pub struct Shell {
    engine: Engine,
    settings: Settings,
    interactive: bool,
    output: Box<dyn Write + Send>,
    output_is_terminal: bool,
    read_depth: usize,
    progress: Option<std::sync::Arc<FetchProgress>>,
    /// The mode `\x` goes back to.
    unexpanded_mode: Mode,
}

impl Shell {
    /// A shell writing to standard output. `interactive` adds row counts, timing and
    /// terminal-fitted tables.
    pub fn new(engine: Engine, settings: Settings, interactive: bool) -> Self {
        Shell {
            engine,
            settings,
            interactive,
            output: Box::new(std::io::stdout()),
            output_is_terminal: std::io::stdout().is_terminal(),
            read_depth: 0,
            progress: None,
            unexpanded_mode: Mode::Table,
        }
    }

    /// A shell writing its results to `output` (used by tests and embedders).
    pub fn with_output(engine: Engine, settings: Settings, output: Box<dyn Write + Send>) -> Self {
        Shell {
            output,
            output_is_terminal: false,
            ..Shell::new(engine, settings, false)
        }
    }

    /// Runs one input. A panic anywhere below becomes an error naming it as a bug, so one
    /// bad statement never takes the shell down.
    pub async fn run(&mut self, input: &Input) -> Result<Flow> {
        use futures::FutureExt;
        match std::panic::AssertUnwindSafe(self.run_unguarded(input))
            .catch_unwind()
            .await
        {
            Ok(result) => result,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown cause");
                Err(Error::Usage(format!(
                    "internal error while running this statement ({what}); this is a bug in \
                     Quarry, please report it with the statement"
                )))
            }
        }
    }

    async fn run_unguarded(&mut self, input: &Input) -> Result<Flow> {
        match input {
            Input::Sql(sql) => self.run_sql(sql).await.map(|()| Flow::Continue),
            Input::Command(line) => self.run_command(commands::parse(line)?).await,
        }
    }

    /// Runs one input of a script: parser errors then give positions in the script.
    pub async fn run_located(&mut self, located: &Located) -> Result<Flow> {
        match located.positioned_sql() {
            Some(sql) => self.run(&Input::Sql(sql)).await,
            None => self.run(&located.input).await,
        }
    }

    /// Runs every input of `script` in order; stops at the first error unless `keep_going`.
    /// Returns how many inputs failed. Errors are reported on standard error, with the
    /// script's name (`origin`) and the line of the failing input when it has one.
    pub async fn run_script(
        &mut self,
        script: &str,
        origin: Option<&str>,
        keep_going: bool,
    ) -> (usize, Flow) {
        let mut failures = 0;
        for located in statements::split_script(script) {
            match Box::pin(self.run_located(&located)).await {
                Ok(Flow::Quit) => return (failures, Flow::Quit),
                Ok(Flow::Continue) => {}
                Err(e) => {
                    match origin {
                        Some(origin) => report_at(origin, located.line, &e),
                        None => report(&e),
                    }
                    failures += 1;
                    if !keep_going {
                        break;
                    }
                }
            }
        }
        (failures, Flow::Continue)
    }

    async fn run_sql(&mut self, sql: &str) -> Result<()> {
        for statement in self.engine.parse(sql)? {
            let start = Instant::now();
            let session_table = session_table_made(&statement);
            let frame = self.engine.plan(statement).await?;
            let stream = crate::session::execute(frame).await?;
            let options = RenderOptions {
                mode: self.settings.mode,
                max_rows: self.settings.max_rows,
                terminal: self.output_is_terminal,
            };
            let rendered = match (&self.progress, self.output_is_terminal) {
                // Bars and results share the terminal: a bar goes before a result is drawn.
                (Some(progress), true) => {
                    let mut out = ClearingWriter {
                        out: &mut self.output,
                        progress,
                    };
                    render::render(stream, &mut out, options).await?
                }
                _ => render::render(stream, &mut self.output, options).await?,
            };
            self.output
                .flush()
                .map_err(Error::io("cannot write the result", "the output"))?;
            self.footer(rendered, start.elapsed());
            if let Some(table) = session_table {
                eprintln!(
                    "Note: table {table} lives in memory for this session only; CREATE VIEW \
                     keeps a query for later sessions."
                );
            }
        }
        Ok(())
    }

    /// The line after a result in the interactive shell: rows (and how many were shown)
    /// and, with `.timer on`, the elapsed time.
    fn footer(&self, rendered: render::Rendered, elapsed: Duration) {
        if let Some(progress) = &self.progress {
            progress.clear();
        }
        let time = format!("{:.3} s", elapsed.as_secs_f64());
        let line = if !self.interactive {
            self.settings.timer.then(|| format!("Time: {time}"))
        } else if !rendered.has_columns {
            Some(if self.settings.timer {
                format!("OK in {time}")
            } else {
                "OK".into()
            })
        } else {
            let plural = if rendered.rows == 1 { "row" } else { "rows" };
            let mut line = format!("{} {plural}", rendered.rows);
            if rendered.shown < rendered.rows && self.settings.mode == Mode::Table {
                line.push_str(&format!(" ({} shown; .maxrows to change)", rendered.shown));
            }
            if self.settings.timer {
                line.push_str(&format!(" in {time}"));
            }
            Some(line)
        };
        if let Some(line) = line {
            // To the terminal even when `.output` sends results to a file.
            if self.interactive {
                println!("{line}");
            } else {
                eprintln!("{line}");
            }
        }
    }

    async fn run_command(&mut self, command: Command) -> Result<Flow> {
        match command {
            Command::Help => {
                write!(self.output, "{}", commands::help())
                    .map_err(Error::io("cannot write", "the output"))?;
            }
            Command::Connections => {
                self.run_sql(
                    "SELECT name, id, source_type, test_status, test_latency_ms, test_error \
                     FROM quarry.information_schema.connections ORDER BY name",
                )
                .await?
            }
            Command::Tables(filter) => {
                let mut conditions = Vec::new();
                if let Some(filter) = filter {
                    let mut parts = filter.splitn(2, '.');
                    let connection = parts.next().unwrap_or_default();
                    self.known_connection(connection)?;
                    conditions.push(format!("connection_name = {}", literal(connection)));
                    if let Some(schema) = parts.next() {
                        conditions.push(format!("table_schema = {}", literal(schema)));
                    }
                }
                let filter = if conditions.is_empty() {
                    String::new()
                } else {
                    format!("WHERE {}", conditions.join(" AND "))
                };
                // The view's own column names, so what `.tables` shows can be queried.
                self.run_sql(&format!(
                    "SELECT connection_name, table_schema, table_name, table_type, \
                     row_estimate, cached, cache_rows \
                     FROM quarry.information_schema.tables {filter} ORDER BY 1, 2, 3"
                ))
                .await?
            }
            Command::Schema(Some(table)) => self.describe(&table).await?,
            Command::Schema(None) => self.run_sql(&columns_query("TRUE")).await?,
            Command::Timer(on) => self.settings.timer = on,
            Command::Mode(Some(mode)) => self.settings.mode = mode,
            Command::Mode(None) => {
                let name = format!("{:?}", self.settings.mode).to_lowercase();
                writeln!(self.output, "{name}").map_err(Error::io("cannot write", "the output"))?;
            }
            Command::Expanded(on) => {
                let expanded = self.settings.mode == Mode::Line;
                let want = on.unwrap_or(!expanded);
                if want && !expanded {
                    self.unexpanded_mode = self.settings.mode;
                    self.settings.mode = Mode::Line;
                } else if !want && expanded {
                    self.settings.mode = self.unexpanded_mode;
                }
                let state = if want { "on" } else { "off" };
                eprintln!("Expanded display is {state}.");
            }
            Command::MaxRows(rows) => self.settings.max_rows = rows,
            Command::Output(None) => {
                self.output = Box::new(std::io::stdout());
                self.output_is_terminal = std::io::stdout().is_terminal();
            }
            Command::Output(Some(path)) => {
                let file = File::create(&path).map_err(Error::io(
                    "cannot open the output file",
                    PathBuf::from(&path),
                ))?;
                self.output = Box::new(std::io::BufWriter::new(file));
                self.output_is_terminal = false;
            }
            Command::Read(path) => {
                if self.read_depth >= MAX_READ_DEPTH {
                    return Err(Error::Usage(format!(
                        ".read nested {MAX_READ_DEPTH} deep; does '{path}' read itself?"
                    )));
                }
                let script = std::fs::read_to_string(&path)
                    .map_err(Error::io("cannot read the script", PathBuf::from(&path)))?;
                self.read_depth += 1;
                let (failures, flow) = Box::pin(self.run_script(&script, Some(&path), false)).await;
                self.read_depth -= 1;
                if failures > 0 {
                    return Err(Error::Usage(format!("{path}: stopped at the error above")));
                }
                return Ok(flow);
            }
            Command::Quit => return Ok(Flow::Quit),
        }
        Ok(Flow::Continue)
    }

    /// `.schema [connection.schema.]table`: the table's columns from the catalog views.
    async fn describe(&mut self, name: &str) -> Result<()> {
        let parts: Vec<&str> = name.split('.').map(|p| p.trim_matches('"')).collect();
        let condition = match parts.as_slice() {
            [table] => format!("table_name = {}", literal(table)),
            [qualifier, table] => format!(
                "(connection_name = {q} OR table_schema = {q}) AND table_name = {t}",
                q = literal(qualifier),
                t = literal(table)
            ),
            [connection, schema, table] => format!(
                "connection_name = {} AND table_schema = {} AND table_name = {}",
                literal(connection),
                literal(schema),
                literal(table)
            ),
            _ => {
                return Err(Error::Usage(
                    "usage: .schema [connection.schema.]table".into(),
                ));
            }
        };
        let table = parts.last().copied().unwrap_or_default();
        let snapshot = self.engine.snapshot();
        let exists = snapshot
            .connections
            .values()
            .any(|c| c.schemas.values().any(|tables| tables.contains_key(table)));
        if !exists {
            let names = snapshot
                .connections
                .values()
                .flat_map(|c| c.schemas.values().flat_map(|t| t.keys()));
            let mut message = format!("no table named '{name}'");
            if let Some(near) = crate::suggest::closest(table, names) {
                message.push_str(&format!("; did you mean '{near}'?"));
            }
            message.push_str(" (.tables lists the tables)");
            return Err(Error::Usage(message));
        }
        self.run_sql(&columns_query(&condition)).await
    }

    fn known_connection(&self, name: &str) -> Result<()> {
        let snapshot = self.engine.snapshot();
        if snapshot.connections.contains_key(name) {
            return Ok(());
        }
        let mut message = format!("no connection named '{name}'");
        if let Some(near) = crate::suggest::closest(name, snapshot.connections.keys()) {
            message.push_str(&format!("; did you mean '{near}'?"));
        }
        message.push_str(" (.connections lists them)");
        Err(Error::Usage(message))
    }
}

/// The table a `CREATE TABLE` statement makes in the session, if it is one.
fn session_table_made(statement: &datafusion::sql::parser::Statement) -> Option<String> {
    use datafusion::sql::parser::Statement;
    use datafusion::sql::sqlparser::ast;
    match statement {
        Statement::Statement(inner) => match inner.as_ref() {
            ast::Statement::CreateTable(create) => Some(create.name.to_string()),
            _ => None,
        },
        Statement::CreateExternalTable(create) => Some(create.name.to_string()),
        _ => None,
    }
}

/// Clears the progress bars before each write of a result to the terminal.
struct ClearingWriter<'a> {
    out: &'a mut Box<dyn Write + Send>,
    progress: &'a FetchProgress,
}

impl Write for ClearingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.progress.clear();
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// The columns of the tables matching `condition`, under the view's own column names.
fn columns_query(condition: &str) -> String {
    format!(
        "SELECT connection_name, table_schema, table_name, column_name, arrow_type, \
         source_type, is_nullable FROM quarry.information_schema.columns WHERE {condition} \
         ORDER BY 1, 2, 3, ordinal_position"
    )
}

/// `value` as a SQL string literal.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Prints an error as the shell shows it: `Error: ` and the message's first line, then the
/// rest as a hint.
pub fn report(error: &Error) {
    eprintln!("{}", describe_error(error));
}

/// Prints an error of a script's input psql style: `quarry:FILE:LINE: error: …`.
pub fn report_at(origin: &str, line: usize, error: &Error) {
    eprintln!("{}", describe_error_at(origin, line, error));
}

/// The text [`report_at`] prints.
pub fn describe_error_at(origin: &str, line: usize, error: &Error) -> String {
    let text = describe_error(error);
    let text = text.strip_prefix("Error: ").unwrap_or(&text);
    format!("quarry:{origin}:{line}: error: {text}")
}

/// The text [`report`] prints.
pub fn describe_error(error: &Error) -> String {
    let message = error.to_string();
    let mut lines = message.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("unknown error");
    let rest: Vec<&str> = lines.collect();
    if rest.is_empty() {
        format!("Error: {first}")
    } else {
        format!("Error: {first}\nHint: {}", rest.join(" "))
    }
}

/// Runs the interactive shell until `.quit`, Ctrl-D or end of input.
pub fn run_interactive(runtime: &Runtime, engine: Engine, settings: Settings) -> Result<()> {
    // An interactive shell runs for long: tables with a refresh_interval are refreshed while
    // it does (scripts and `-c` runs are over too soon to need it).
    {
        let _runtime = runtime.enter();
        engine.start_refresh_schedule();
        engine.start_keepalive();
    }
    let history = engine.config().data_dir.join("history.txt");
    let config = EditorConfig::builder()
        .auto_add_history(false)
        .max_history_size(10_000)
        .map_err(|e| Error::Usage(format!("cannot set up the line editor: {e}")))?
        .build();
    let mut editor: Editor<QuarryHelper, FileHistory> = Editor::with_config(config)
        .map_err(|e| Error::Usage(format!("cannot start the line editor: {e}")))?;
    editor.set_helper(Some(QuarryHelper::new(engine.clone())));
    // A missing history file is the normal first run.
    let _ = editor.load_history(&history);
    println!(
        "Quarry {} (data in {}). Type .help for help, .quit or Ctrl-D to leave.",
        env!("CARGO_PKG_VERSION"),
        engine.config().data_dir.display()
    );
    let progress = {
        let _runtime = runtime.enter();
        std::sync::Arc::new(FetchProgress::start(engine.subscribe()))
    };
    let mut shell = Shell::new(engine.clone(), settings, true);
    shell.progress = Some(std::sync::Arc::clone(&progress));
    // Lines are read one at a time, so a statement's later lines get their own prompt;
    // history keeps whole statements.
    let mut splitter = Splitter::default();
    let mut typed = String::new();
    loop {
        let prompt = prompt(&engine.default_session().default_schema());
        let shown = if splitter.is_pending() {
            continuation(&prompt)
        } else {
            prompt
        };
        let text = match editor.readline(&shown) {
            Ok(text) => text,
            Err(ReadlineError::Interrupted) => {
                splitter = Splitter::default();
                typed.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(Error::Usage(format!("cannot read input: {e}"))),
        };
        let mut inputs = Vec::new();
        for line in text.lines() {
            inputs.extend(splitter.push_line(line));
        }
        if !statements::is_blank(&text) {
            if !typed.is_empty() {
                typed.push('\n');
            }
            typed.push_str(&text);
        }
        if splitter.is_pending() && inputs.is_empty() {
            continue;
        }
        if !typed.is_empty() {
            let _ = editor.add_history_entry(std::mem::take(&mut typed).as_str());
            if let Err(e) = editor.save_history(&history) {
                tracing::warn!("cannot save the history to {}: {e}", history.display());
            }
        }
        let flow = runtime.block_on(async {
            let mut flow = Flow::Continue;
            for located in inputs {
                tokio::select! {
                    result = shell.run(&located.input) => match result {
                        Ok(next) => flow = next,
                        Err(e) => {
                            progress.clear();
                            report(&e);
                            break;
                        }
                    },
                    _ = tokio::signal::ctrl_c() => {
                        progress.clear();
                        eprintln!("Cancelled.");
                        break;
                    }
                }
                if flow == Flow::Quit {
                    break;
                }
            }
            flow
        });
        if flow == Flow::Quit {
            break;
        }
    }
    Ok(())
}

/// The shell's prompt: `quarry> `, or with a default schema set, `quarry tp.public> `.
pub fn prompt(default: &DefaultSchema) -> String {
    if default.is_initial() {
        "quarry> ".into()
    } else {
        format!("quarry {default}> ")
    }
}

/// The prompt of a statement's later lines, as wide as `prompt`: `   ...> `.
pub fn continuation(prompt: &str) -> String {
    format!("{:>width$}", "...> ", width = prompt.chars().count())
}

/// Runs a script read line by line from `reader` (piped standard input): each statement
/// runs as soon as its `;` arrives. Returns how many inputs failed.
pub fn run_reader(
    runtime: &Runtime,
    shell: &mut Shell,
    reader: impl BufRead,
    keep_going: bool,
) -> Result<usize> {
    let mut splitter = Splitter::default();
    let mut failures = 0;
    // Runs the inputs a line completed; false when the script must stop.
    let mut run = |inputs: Vec<Located>, failures: &mut usize| {
        for located in inputs {
            match runtime.block_on(shell.run_located(&located)) {
                Ok(Flow::Continue) => {}
                Ok(Flow::Quit) => return false,
                Err(e) => {
                    report_at("<stdin>", located.line, &e);
                    *failures += 1;
                    if !keep_going {
                        return false;
                    }
                }
            }
        }
        true
    };
    // Bytes that are not UTF-8 become replacement characters, so junk gets a syntax error
    // rather than ending the script.
    let mut reader = reader;
    let mut line = Vec::new();
    loop {
        line.clear();
        let read = reader
            .read_until(b'\n', &mut line)
            .map_err(Error::io("cannot read", "standard input"))?;
        if read == 0 {
            break;
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        if !run(
            splitter.push_line(text.strip_suffix('\r').unwrap_or(text)),
            &mut failures,
        ) {
            return Ok(failures);
        }
    }
    run(splitter.finish().into_iter().collect(), &mut failures);
    Ok(failures)
}
