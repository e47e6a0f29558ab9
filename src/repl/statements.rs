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
    let bytes = text.as_bytes();
    let mut state = State::Code;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let next = bytes.get(i + 1).copied();
        match state {
            State::Code => match b {
                b';' => return Some(i),
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
    None
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

/// Whether `text` starts with a command rather than SQL.
pub fn is_command(text: &str) -> bool {
    let text = text.trim_start();
    text.starts_with('.') || text.starts_with('\\')
}

/// Whether an editor buffer is ready to run: a command line, or SQL with a closing `;`.
pub fn is_complete(buffer: &str) -> bool {
    is_blank(buffer) || is_command(buffer) || statement_end(buffer).is_some()
}

/// Accumulates lines and hands out complete inputs.
#[derive(Debug, Default)]
pub struct Splitter {
    buffer: String,
}

impl Splitter {
    /// Adds one line (without its newline) and returns the inputs it completed.
    pub fn push_line(&mut self, line: &str) -> Vec<Input> {
        if is_blank(&self.buffer) && is_command(line) {
            self.buffer.clear();
            return vec![Input::Command(line.trim().to_owned())];
        }
        self.buffer.push_str(line);
        self.buffer.push('\n');
        let mut inputs = Vec::new();
        while let Some(end) = statement_end(&self.buffer) {
            let statement = self.buffer[..end].to_owned();
            self.buffer.drain(..=end);
            if !is_blank(&statement) {
                inputs.push(Input::Sql(statement.trim().to_owned()));
            }
        }
        // After a `;` the rest of the line starts afresh, so `SELECT 1; .tables` works.
        if !inputs.is_empty() && is_command(&self.buffer) {
            inputs.push(Input::Command(self.buffer.trim().to_owned()));
            self.buffer.clear();
        }
        inputs
    }

    /// The unfinished statement left at the end of the input, if any.
    pub fn finish(&mut self) -> Option<Input> {
        let rest = std::mem::take(&mut self.buffer);
        (!is_blank(&rest)).then(|| Input::Sql(rest.trim().to_owned()))
    }

    /// Whether a statement has been started and not finished.
    pub fn is_pending(&self) -> bool {
        !is_blank(&self.buffer)
    }
}

/// Every input of a whole script, the unfinished tail included.
pub fn split_script(script: &str) -> Vec<Input> {
    let mut splitter = Splitter::default();
    let mut inputs: Vec<Input> = script
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

    #[test]
    fn a_command_may_follow_a_statement_on_its_line() {
        assert_eq!(
            split_script("SELECT 1; .tables demo\nSELECT 2;"),
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
            split_script(script),
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
            split_script(".tables\nSELECT\n.5;\n\\dt x"),
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
            split_script("SELECT 1; SELECT 2;;\nSELECT 3"),
            [sql("SELECT 1"), sql("SELECT 2"), sql("SELECT 3")]
        );
    }

    #[test]
    fn completeness_for_the_editor() {
        assert!(is_complete("SELECT 1;"));
        assert!(is_complete(".help"));
        assert!(is_complete("  "));
        assert!(!is_complete("SELECT 1"));
        assert!(!is_complete("SELECT ';'"));
        assert!(!is_complete("SELECT 1 -- done;"));
        assert!(is_blank("-- only a comment\n/* and another */"));
        assert!(!is_blank("/* unclosed"));
    }
}
