//! Dot-commands (`.tables`, `.mode csv`, ...) and their psql-style aliases (`\dt`, `\q`):
//! parsed here into a [`Command`], run by the shell.

use super::render::Mode;
use crate::error::{Error, Result};

/// A command's names, arguments and one-line help.
pub struct CommandInfo {
    /// Its names; the first is the main one.
    pub names: &'static [&'static str],
    /// Its arguments, as `.help` shows them.
    pub args: &'static str,
    /// What it does.
    pub help: &'static str,
}

/// Every command, in `.help` order.
pub const COMMANDS: &[CommandInfo] = &[
    CommandInfo {
        names: &[".help", "\\?"],
        args: "",
        help: "show this help",
    },
    CommandInfo {
        names: &[".connections", "\\l"],
        args: "",
        help: "list connections and their status",
    },
    CommandInfo {
        names: &[".tables", "\\dt"],
        args: "[connection[.schema]]",
        help: "list tables with their cache state",
    },
    CommandInfo {
        names: &[".schema", "\\d"],
        args: "[[connection.schema.]table]",
        help: "show a table's columns, or every table's (\\d alone lists tables)",
    },
    CommandInfo {
        names: &[".timer"],
        args: "on|off",
        help: "show the time each statement takes",
    },
    CommandInfo {
        names: &[".mode"],
        args: "[table|csv|json|ndjson|line]",
        help: "set how results are written, or show how they are",
    },
    CommandInfo {
        names: &[".expanded", "\\x"],
        args: "[on|off]",
        help: "one line per value (mode line), or back; alone it toggles",
    },
    CommandInfo {
        names: &[".maxrows"],
        args: "N|off",
        help: "show at most N rows of a table result",
    },
    CommandInfo {
        names: &[".output", "\\o"],
        args: "[file|stdout]",
        help: "write results to a file, or back to the terminal",
    },
    CommandInfo {
        names: &[".read", "\\i"],
        args: "file",
        help: "run the statements in a file",
    },
    CommandInfo {
        names: &[".quit", ".exit", "\\q"],
        args: "",
        help: "leave Quarry (Ctrl-D too)",
    },
];

/// A parsed command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `.help`
    Help,
    /// `.connections`
    Connections,
    /// `.tables [connection[.schema]]`
    Tables(Option<String>),
    /// `.schema [table]`; `None` shows every table.
    Schema(Option<String>),
    /// `.timer on|off`
    Timer(bool),
    /// `.mode [M]`; `None` shows the current mode.
    Mode(Option<Mode>),
    /// `\x [on|off]`; `None` toggles.
    Expanded(Option<bool>),
    /// `.maxrows N|off`
    MaxRows(Option<usize>),
    /// `.output [file]`; `None` is standard output.
    Output(Option<String>),
    /// `.read file`
    Read(String),
    /// `.quit`
    Quit,
}

/// Parses one command line (starting with `.` or `\`).
pub fn parse(line: &str) -> Result<Command> {
    let line = line.trim().trim_end_matches(';').trim_end();
    let (name, rest) = line
        .split_once(char::is_whitespace)
        .map_or((line, ""), |(n, r)| (n, r.trim()));
    let Some(info) = COMMANDS.iter().find(|c| c.names.contains(&name)) else {
        return Err(unknown(name));
    };
    let usage = || {
        Error::Usage(format!(
            "usage: {} {}: {}",
            info.names[0], info.args, info.help
        ))
    };
    let arg = (!rest.is_empty()).then(|| unquote_arg(rest));
    let command = match info.names[0] {
        ".help" => Command::Help,
        ".connections" => Command::Connections,
        ".tables" => Command::Tables(arg),
        // `\d` alone lists tables, as in psql.
        ".schema" => match arg {
            Some(table) => Command::Schema(Some(table)),
            None if name == "\\d" => Command::Tables(None),
            None => Command::Schema(None),
        },
        ".timer" => match rest.to_ascii_lowercase().as_str() {
            "on" => Command::Timer(true),
            "off" => Command::Timer(false),
            _ => return Err(usage()),
        },
        ".mode" if rest.is_empty() => Command::Mode(None),
        ".mode" => match Mode::parse(rest) {
            Some(mode) => Command::Mode(Some(mode)),
            None => {
                return Err(Error::Usage(format!(
                    "unknown mode '{rest}': choose one of {}",
                    Mode::NAMES
                )));
            }
        },
        ".expanded" => match rest.to_ascii_lowercase().as_str() {
            "" => Command::Expanded(None),
            "on" => Command::Expanded(Some(true)),
            "off" => Command::Expanded(Some(false)),
            _ => return Err(usage()),
        },
        ".maxrows" => match rest.to_ascii_lowercase().as_str() {
            "off" | "none" | "0" => Command::MaxRows(None),
            n => match n.parse::<usize>() {
                Ok(n) => Command::MaxRows(Some(n)),
                Err(_) => return Err(usage()),
            },
        },
        ".output" => match arg.as_deref() {
            None | Some("stdout") | Some("-") => Command::Output(None),
            Some(file) => Command::Output(Some(file.to_owned())),
        },
        ".read" => Command::Read(arg.ok_or_else(usage)?),
        ".quit" => Command::Quit,
        _ => unreachable!("every command in COMMANDS is matched"),
    };
    let takes_args = !info.args.is_empty();
    if !takes_args && !rest.is_empty() {
        return Err(usage());
    }
    Ok(command)
}

/// A path or name argument, without surrounding quotes.
fn unquote_arg(arg: &str) -> String {
    let quoted = arg.len() >= 2
        && ((arg.starts_with('\'') && arg.ends_with('\''))
            || (arg.starts_with('"') && arg.ends_with('"')));
    if quoted {
        arg[1..arg.len() - 1].to_owned()
    } else {
        arg.to_owned()
    }
}

fn unknown(name: &str) -> Error {
    let closest = COMMANDS
        .iter()
        .flat_map(|c| c.names.iter())
        .map(|n| (strsim::levenshtein(n, name), *n))
        .min()
        .filter(|(distance, _)| *distance <= 2);
    let mut message = format!("unknown command '{}'", name.escape_debug());
    if let Some((_, near)) = closest {
        message.push_str(&format!("; did you mean {near}?"));
    }
    message.push_str(" (.help lists the commands)");
    Error::Usage(message)
}

/// The text `.help` prints.
pub fn help() -> String {
    let rows: Vec<(String, &str)> = COMMANDS
        .iter()
        .map(|c| {
            let names = c.names.join(", ");
            let usage = if c.args.is_empty() {
                names
            } else {
                format!("{names} {}", c.args)
            };
            (usage, c.help)
        })
        .collect();
    let width = rows.iter().map(|(u, _)| u.len()).max().unwrap_or(0);
    let mut text = String::from(
        "SQL statements end with ';' and may span lines. Tab completes names.\n\
         Connections: SELECT * FROM create_connection('name', 'postgres', '{\"host\": ...}');\n\
         Commands:\n",
    );
    for (usage, help) in rows {
        text.push_str(&format!("  {usage:width$}  {help}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_aliases() {
        assert_eq!(parse(".tables").unwrap(), Command::Tables(None));
        assert_eq!(
            parse("\\dt demo.main").unwrap(),
            Command::Tables(Some("demo.main".into()))
        );
        assert_eq!(parse("\\d").unwrap(), Command::Tables(None));
        assert_eq!(parse("\\d t").unwrap(), Command::Schema(Some("t".into())));
        assert_eq!(parse(".schema").unwrap(), Command::Schema(None));
        assert_eq!(parse(".mode CSV").unwrap(), Command::Mode(Some(Mode::Csv)));
        assert_eq!(parse(".mode").unwrap(), Command::Mode(None));
        assert_eq!(parse("\\x").unwrap(), Command::Expanded(None));
        assert_eq!(parse("\\x on").unwrap(), Command::Expanded(Some(true)));
        assert_eq!(parse(".maxrows off").unwrap(), Command::MaxRows(None));
        assert_eq!(parse(".maxrows 5").unwrap(), Command::MaxRows(Some(5)));
        assert_eq!(
            parse(".output 'a b.csv'").unwrap(),
            Command::Output(Some("a b.csv".into()))
        );
        assert_eq!(parse("\\q").unwrap(), Command::Quit);
        assert_eq!(parse(".quit;").unwrap(), Command::Quit);
    }

    #[test]
    fn mistakes_say_what_to_do() {
        let message = parse(".tabels").unwrap_err().to_string();
        assert!(message.contains("did you mean .tables?"), "{message}");
        let message = parse(".timer maybe").unwrap_err().to_string();
        assert!(message.contains("usage: .timer on|off"), "{message}");
        let message = parse(".mode xml").unwrap_err().to_string();
        assert!(
            message.contains("table, csv, json, ndjson, line"),
            "{message}"
        );
        assert!(parse(".quit now").is_err());
        assert!(parse(".read").is_err());
    }
}
