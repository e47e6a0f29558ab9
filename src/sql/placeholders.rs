//! Positional `?` placeholders (the `qmark` style of ADBC's DB-API driver, JDBC, ODBC and
//! most BI tools) numbered left to right as DataFusion's `$1 … $n`.

use std::ops::ControlFlow;

use datafusion::error::DataFusionError;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{Expr, Value, visit_expressions_mut};

/// Rewrites each bare `?` of `statement` to `$1`, `$2`, … in the order they appear in the
/// text, and `?N` (SQLite's numbered form) to `$N`. A statement that mixes bare `?` with
/// numbered placeholders is refused: which value goes where would be a guess.
pub fn number_placeholders(statement: &mut Statement) -> Result<(), DataFusionError> {
    let Statement::Statement(inner) = statement else {
        return Ok(());
    };
    // First pass: where each bare `?` stands, and whether numbered ones occur too.
    let mut bare = Vec::new();
    let mut numbered = None;
    let _ = visit_expressions_mut(inner.as_mut(), |expr| {
        if let Expr::Value(value) = expr
            && let Value::Placeholder(text) = &value.value
        {
            if text == "?" {
                bare.push((value.span.start.line, value.span.start.column));
            } else if numbered.is_none() {
                numbered = Some(text.clone());
            }
        }
        ControlFlow::<()>::Continue(())
    });
    if bare.is_empty() {
        // Only `?N` needs rewriting, to DataFusion's `$N`.
        let _ = visit_expressions_mut(inner.as_mut(), |expr| {
            if let Expr::Value(value) = expr
                && let Value::Placeholder(text) = &mut value.value
                && let Some(number) = text.strip_prefix('?')
            {
                *text = format!("${number}");
            }
            ControlFlow::<()>::Continue(())
        });
        return Ok(());
    }
    if let Some(other) = numbered {
        return Err(DataFusionError::Plan(format!(
            "the statement mixes positional '?' placeholders with the numbered '{other}'; \
             use one style: only '?' (numbered left to right) or only '$1', '$2', …"
        )));
    }
    // The visitor's order follows the syntax tree, not always the text: number by position.
    let mut order: Vec<usize> = (0..bare.len()).collect();
    order.sort_by_key(|&i| bare[i]);
    let mut number_of = vec![0; bare.len()];
    for (number, &i) in order.iter().enumerate() {
        number_of[i] = number + 1;
    }
    let mut seen = 0;
    let _ = visit_expressions_mut(inner.as_mut(), |expr| {
        if let Expr::Value(value) = expr
            && let Value::Placeholder(text) = &mut value.value
            && text == "?"
        {
            *text = format!("${}", number_of[seen]);
            seen += 1;
        }
        ControlFlow::<()>::Continue(())
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParser;
    use datafusion::sql::sqlparser::dialect::GenericDialect;

    use super::*;

    fn numbered(sql: &str) -> Result<String, DataFusionError> {
        let mut statement = DFParser::parse_sql_with_dialect(sql, &GenericDialect {})
            .unwrap()
            .pop_front()
            .unwrap();
        number_placeholders(&mut statement)?;
        Ok(statement.to_string())
    }

    #[test]
    fn question_marks_are_numbered_left_to_right() {
        assert_eq!(
            numbered("SELECT a FROM t WHERE b = ? AND c = ?").unwrap(),
            "SELECT a FROM t WHERE b = $1 AND c = $2"
        );
        // The projection comes before WHERE and LIMIT in the text, and so in the numbering.
        assert_eq!(
            numbered("SELECT ? + a FROM t WHERE b IN (?, ?) LIMIT ?").unwrap(),
            "SELECT $1 + a FROM t WHERE b IN ($2, $3) LIMIT $4"
        );
    }

    #[test]
    fn numbered_styles_pass_and_mixing_is_refused() {
        assert_eq!(
            numbered("SELECT $2, $1").unwrap(),
            "SELECT $2, $1",
            "dollar placeholders stay as written"
        );
        assert_eq!(numbered("SELECT ?2, ?1").unwrap(), "SELECT $2, $1");
        let mixed = numbered("SELECT a FROM t WHERE b = ? AND c = $1")
            .unwrap_err()
            .to_string();
        assert!(mixed.contains("mixes positional '?'"), "{mixed}");
        assert!(mixed.contains("'$1'"), "{mixed}");
    }
}
