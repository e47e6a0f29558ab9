//! Object names as written in a statement (`conn.schema.table`), part by part.

use datafusion::sql::sqlparser::ast::{ObjectName, ObjectNamePart};

/// The parts of `name`, unquoted, as written (no case folding).
pub fn parts(name: &ObjectName) -> Vec<String> {
    name.0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => ident.value.clone(),
            other => other.to_string(),
        })
        .collect()
}
