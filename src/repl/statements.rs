//! Splits typed or scripted text into statements: a statement ends at a `;` outside quotes
//! and comments; a line starting with `.` or `\` at a statement's start is a command.

/// One complete piece of input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// SQL text ending at its `;` (the `;` left out).
    Sql(String),
    /// A dot-command or backslash command line, trimmed.
    Command(String),
}

/// An input and where it starts in its script (1-based line and column).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    /// The input.
    pub input: Input,
    /// Line of its first character.
    pub line: usize,
    /// Column (in characters) of its first character.
    pub column: usize,
}

impl Located {
    /// The SQL text preceded by whitespace that puts its first character at its line and
    /// column, so the parser's error positions are positions in the script.
    pub fn positioned_sql(&self) -> Option<String> {
        match &self.input {
            Input::Sql(sql) => Some(format!(
                "{}{}{sql}",
                "\n".repeat(self.line.saturating_sub(1)),
                " ".repeat(self.column.saturating_sub(1))
            )),
            Input::Command(_) => None,
        }
    }
}

/// Where the scanner is inside the text.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Code,
    SingleQuote,
    DoubleQuote,
    Backtick,
    LineComment,
    BlockComment(u32),
}

/// The byte offset of the first `;` that ends a statement in `text`, if any.
pub fn statement_end(text: &str) -> Option<usize> {
    scan(text).0
}

/// Whether `text` ends inside a quoted run or a comment.
fn ends_open(text: &str) -> bool {
    scan(text).1 != State::Code
}

/// The first statement end in `text`, and the state after the whole text when it has none.
fn scan(text: &str) -> (Option<usize>, State) {
    let bytes = text.as_bytes();
    let mut state = State::Code;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        match state {
            State::Code => match b {
                b';' => return (Some(i), State::Code),
                b'\'' => state = State::SingleQuote,
                b'"' => state = State::DoubleQuote,
                b'`' => state = State::Backtick,
                b'-' if next == Some(b'-') => {
                    state = State::LineComment;
                    i += 1;
                }
                b'/' if next == Some(b'*') => {
                    state = State::BlockComment(1);
                    i += 1;
                }
                _ => {}
            },
            // A doubled quote inside a quoted run is an escaped quote: the scanner leaves
            // and re-enters the run, which ends in the same state.
            State::SingleQuote if b == b'\'' => state = State::Code,
            State::DoubleQuote if b == b'"' => state = State::Code,
            State::Backtick if b == b'`' => state = State::Code,
            State::LineComment if b == b'\n' => state = State::Code,
            State::BlockComment(depth) => {
                if b == b'*' && next == Some(b'/') {
                    state = if depth == 1 {
                        State::Code
                    } else {
                        State::BlockComment(depth - 1)
                    };
                    i += 1;
                } else if b == b'/' && next == Some(b'*') {
                    state = State::BlockComment(depth + 1);
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    // A line comment ends with its line.
    match state {
        State::LineComment => (None, State::Code),
        other => (None, other),
    }
}

/// Whether `text` holds only whitespace and comments.
pub fn is_blank(text: &str) -> bool {
    let mut rest = text.trim_start();
    loop {
        if rest.is_empty() {
            return true;
        }
        if let Some(after) = rest.strip_prefix("--") {
            match after.find('\n') {
                Some(end) => rest = after[end..].trim_start(),
                None => return true,
            }
        } else if let Some(after) = rest.strip_prefix("/*") {
            match after.find("*/") {
                Some(end) => rest = after[end + 2..].trim_start(),
                None => return false,
            }
        } else {
            return false;
        }
    }
}

/// Whether `text` starts with a command rather than SQL: `.` or `\` and a letter (`.5`
/// is a number).
pub fn is_command(text: &str) -> bool {
    let mut chars = text.trim_start().chars();
    match (chars.next(), chars.next()) {
        (Some('.'), Some(c)) => c.is_ascii_alphabetic(),
        (Some('\\'), Some(c)) => c.is_ascii_alphabetic() || c == '?',
        _ => false,
    }
}

/// Accumulates lines and hands out complete inputs with their positions.
#[derive(Debug, Default)]
pub struct Splitter {
    buffer: String,
    /// Lines pushed so far.
    lines: usize,
    /// Line and column where `buffer` starts.
    start: (usize, usize),
}

impl Splitter {
    /// Adds one line (without its newline) and returns the inputs it completed. A command
    /// line runs as a command even in the middle of a statement, which goes on after it
    /// (as in psql), unless the statement has a quote or comment open.
    pub fn push_line(&mut self, line: &str) -> Vec<Located> {
        self.lines += 1;
        if is_command(line) && !ends_open(&self.buffer) {
            let column = line.len() - line.trim_start().len() + 1;
            if is_blank(&self.buffer) {
                self.buffer.clear();
            }
            return vec![Located {
                input: Input::Command(line.trim().to_owned()),
                line: self.lines,
                column,
            }];
        }
        if self.buffer.is_empty() {
            self.start = (self.lines, 1);
        }
        self.buffer.push_str(line);
        self.buffer.push('\n');
        let mut inputs = Vec::new();
        while let Some(end) = statement_end(&self.buffer) {
            let statement = &self.buffer[..end];
            if !is_blank(statement) {
                let (line, column) = position_of_text(statement, self.start);
                inputs.push(Located {
                    input: Input::Sql(statement.trim().to_owned()),
                    line,
                    column,
                });
            }
            self.start = advance(self.start, &self.buffer[..=end]);
            self.buffer.drain(..=end);
        }
        // After a `;` the rest of the line starts afresh, so `SELECT 1; .tables` works.
        if !inputs.is_empty() && is_command(&self.buffer) {
            let (line, column) = position_of_text(&self.buffer, self.start);
            inputs.push(Located {
                input: Input::Command(self.buffer.trim().to_owned()),
                line,
                column,
            });
            self.buffer.clear();
        }
        inputs
    }

    /// The unfinished statement left at the end of the input, if any.
    pub fn finish(&mut self) -> Option<Located> {
        let rest = std::mem::take(&mut self.buffer);
        let (line, column) = position_of_text(&rest, self.start);
        (!is_blank(&rest)).then(|| Located {
            input: Input::Sql(rest.trim().to_owned()),
            line,
            column,
        })
    }

    /// Whether a statement has been started and not finished.
    pub fn is_pending(&self) -> bool {
        !is_blank(&self.buffer)
    }
}

/// The position of the first character of `text` that is not blank or a comment, when
/// `text` starts at `start`.
fn position_of_text(text: &str, start: (usize, usize)) -> (usize, usize) {
    let mut rest = text.trim_start();
    loop {
        let after = if let Some(after) = rest.strip_prefix("--") {
            after.find('\n').map(|end| &after[end..])
        } else if let Some(after) = rest.strip_prefix("/*") {
            after.find("*/").map(|end| &after[end + 2..])
        } else {
            None
        };
        match after {
            Some(after) => rest = after.trim_start(),
            None => break,
        }
    }
    advance(start, &text[..text.len() - rest.len()])
}

/// The position after `text`, which starts at `start`.
fn advance((mut line, mut column): (usize, usize), text: &str) -> (usize, usize) {
    for c in text.chars() {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

/// Every input of a whole script, the unfinished tail included.
pub fn split_script(script: &str) -> Vec<Located> {
    let mut splitter = Splitter::default();
    let mut inputs: Vec<Located> = script
        .lines()
        .flat_map(|line| splitter.push_line(line))
        .collect();
    inputs.extend(splitter.finish());
    inputs
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sql(s: &str) -> Input {
        Input::Sql(s.into())
    }

    fn inputs(script: &str) -> Vec<Input> {
        split_script(script).into_iter().map(|l| l.input).collect()
    }

    #[test]
    fn a_command_may_follow_a_statement_on_its_line() {
        assert_eq!(
            inputs("SELECT 1; .tables demo\nSELECT 2;"),
            [
                sql("SELECT 1"),
                Input::Command(".tables demo".into()),
                sql("SELECT 2")
            ]
        );
    }

    #[test]
    fn semicolons_inside_quotes_and_comments_do_not_end_a_statement() {
        let script = "SELECT 'a;b', \"c;d\" -- e;f\n FROM t /* g; /* nested; */ h; */;\nSELECT 2;";
        assert_eq!(
            inputs(script),
            [
                sql("SELECT 'a;b', \"c;d\" -- e;f\n FROM t /* g; /* nested; */ h; */"),
                sql("SELECT 2"),
            ]
        );
    }

    #[test]
    fn doubled_quotes_are_escapes() {
        assert_eq!(statement_end("SELECT 'it''s;' ;"), Some(16));
        assert_eq!(statement_end("SELECT 'open;"), None);
    }

    #[test]
    fn commands_only_at_the_start_of_a_statement() {
        assert_eq!(
            inputs(".tables\nSELECT\n.5;\n\\dt x"),
            [
                Input::Command(".tables".into()),
                sql("SELECT\n.5"),
                Input::Command("\\dt x".into()),
            ]
        );
    }

    #[test]
    fn several_statements_on_one_line_and_an_unfinished_tail() {
        assert_eq!(
            inputs("SELECT 1; SELECT 2;;\nSELECT 3"),
            [sql("SELECT 1"), sql("SELECT 2"), sql("SELECT 3")]
        );
    }

    #[test]
    fn inputs_know_their_line_and_column() {
        let located = split_script("-- setup\nSELECT 1;  SELECT\n  2;\n\n  .tables");
        let positions: Vec<(usize, usize)> = located.iter().map(|l| (l.line, l.column)).collect();
        assert_eq!(positions, [(2, 1), (2, 12), (5, 3)]);
        assert_eq!(
            located[1].positioned_sql().unwrap(),
            format!("\n{}SELECT\n  2", " ".repeat(11))
        );
    }

    #[test]
    fn a_command_inside_a_statement_is_a_command_and_the_statement_goes_on() {
        assert_eq!(
            inputs("SELECT\n.tables\n1;\nSELECT '\n.not a command\n';"),
            [
                Input::Command(".tables".into()),
                sql("SELECT\n1"),
                sql("SELECT '\n.not a command\n'"),
            ]
        );
    }

    #[test]
    fn blank_is_whitespace_and_comments() {
        assert!(is_blank("-- only a comment\n/* and another */"));
        assert!(!is_blank("/* unclosed"));
    }
}
