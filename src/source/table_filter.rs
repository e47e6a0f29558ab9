//! Which of a source's tables a connection keeps: its `include` and `exclude` patterns,
//! stored in its config so that every later discovery applies them again.

use serde_json::Value;

/// The config keys of the filter.
pub const KEYS: &[&str] = &["include", "exclude"];

/// A connection's table filter. A pattern with a dot is matched against `schema.table`;
/// one without, against the table's name alone; `*` stands for any characters and `?` for
/// one.
#[derive(Clone, Debug, Default)]
pub struct TableFilter {
    include: Vec<glob::Pattern>,
    exclude: Vec<glob::Pattern>,
}

impl TableFilter {
    /// The filter of a config object; on a bad value, the key and what is wrong with it.
    pub fn parse(config: &Value) -> Result<Self, (&'static str, String)> {
        let list = |key: &'static str| -> Result<Vec<glob::Pattern>, (&'static str, String)> {
            let bad = |got: &Value| {
                (
                    key,
                    format!(
                        "'{key}' must be a list of table patterns such as [\"public.*\", \
                         \"orders\"]; got {got}"
                    ),
                )
            };
            match config.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| match item {
                        Value::String(text) if !text.trim().is_empty() => {
                            glob::Pattern::new(text.trim()).map_err(|e| {
                                (
                                    key,
                                    format!(
                                        "'{key}' pattern \"{text}\" is not valid ({}); use * \
                                         for any characters and ? for one",
                                        e.msg
                                    ),
                                )
                            })
                        }
                        other => Err(bad(other)),
                    })
                    .collect(),
                Some(other) => Err(bad(other)),
            }
        };
        Ok(TableFilter {
            include: list("include")?,
            exclude: list("exclude")?,
        })
    }

    /// Whether the table `schema.name` is kept: it matches an include pattern (or there is
    /// none) and no exclude pattern.
    pub fn keeps(&self, schema: &str, name: &str) -> bool {
        let qualified = format!("{schema}.{name}");
        let matches = |pattern: &glob::Pattern| {
            if pattern.as_str().contains('.') {
                pattern.matches(&qualified)
            } else {
                pattern.matches(name)
            }
        };
        (self.include.is_empty() || self.include.iter().any(matches))
            && !self.exclude.iter().any(matches)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn include_then_exclude_by_qualified_or_bare_name() {
        let filter = TableFilter::parse(&json!({
            "include": ["public.*", "audit.log_?"],
            "exclude": ["*_tmp", "public.secrets"],
        }))
        .unwrap();
        assert!(filter.keeps("public", "orders"));
        assert!(filter.keeps("audit", "log_1"));
        assert!(!filter.keeps("audit", "log_10"));
        assert!(!filter.keeps("public", "orders_tmp"));
        assert!(!filter.keeps("public", "secrets"));
        assert!(!filter.keeps("sales", "orders"));
        assert!(
            TableFilter::parse(&json!({}))
                .unwrap()
                .keeps("any", "table")
        );
    }

    #[test]
    fn a_bad_pattern_names_its_key() {
        let (key, message) = TableFilter::parse(&json!({ "exclude": ["[oops"] })).unwrap_err();
        assert_eq!(key, "exclude");
        assert!(message.contains("[oops"), "{message}");
        let (key, _) = TableFilter::parse(&json!({ "include": "public.*" })).unwrap_err();
        assert_eq!(key, "include");
    }
}
