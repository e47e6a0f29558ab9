//! The catalog and schema unqualified names resolve against, per session: set with
//! `USE catalog.schema` (DuckDB) or `SET search_path = 'catalog.schema'` (PostgreSQL), shown
//! with `SHOW search_path`. They are DataFusion's own `datafusion.catalog.default_*`
//! settings, so everything that resolves a name follows them.

use std::fmt;

use datafusion::catalog::CatalogProviderList;
use datafusion::execution::context::SessionState;
use datafusion::sql::parser::Statement;
use datafusion::sql::sqlparser::ast::{self, Expr, ObjectName, Set, Use, Value};

use super::names::parts;
use crate::error::{Error, Result};
use crate::suggest::closest;

/// The catalog and schema of unqualified names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultSchema {
    /// Catalog: a connection name, `datafusion` or `quarry`.
    pub catalog: String,
    /// Schema within it.
    pub schema: String,
}

impl DefaultSchema {
    /// The default of a new session: DataFusion's in-memory `datafusion.public`.
    pub fn is_initial(&self) -> bool {
        self.catalog == "datafusion" && self.schema == "public"
    }

    /// The default `state` resolves names against.
    pub fn of(state: &SessionState) -> Self {
        let options = &state.config_options().catalog;
        DefaultSchema {
            catalog: options.default_catalog.clone(),
            schema: options.default_schema.clone(),
        }
    }

    /// Makes this the default of `state`.
    pub fn apply(&self, state: &mut SessionState) {
        let options = &mut state.config_mut().options_mut().catalog;
        options.default_catalog = self.catalog.clone();
        options.default_schema = self.schema.clone();
    }
}

impl fmt::Display for DefaultSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.catalog, self.schema)
    }
}

/// What a statement asks of the default schema, if anything.
pub enum Request {
    /// Change it (`USE`, `SET search_path`) to the name given.
    Change(Vec<String>),
    /// Go back to `datafusion.public` (`USE DEFAULT`, `RESET search_path`).
    Reset,
    /// Show it (`SHOW search_path`).
    Show,
}

/// Whether `statement` is about the default schema.
pub fn request(statement: &Statement) -> Result<Option<Request>> {
    let Statement::Statement(inner) = statement else {
        return Ok(None);
    };
    Ok(match inner.as_ref() {
        ast::Statement::Use(Use::Default) => Some(Request::Reset),
        ast::Statement::Use(
            Use::Object(name) | Use::Catalog(name) | Use::Database(name) | Use::Schema(name),
        ) => Some(Request::Change(parts(name))),
        ast::Statement::Set(Set::SingleAssignment {
            variable, values, ..
        }) if is_search_path(variable) => Some(search_path(values)?),
        ast::Statement::ShowVariable { variable } if is_search_path_idents(variable) => {
            Some(Request::Show)
        }
        _ => None,
    })
}

fn is_search_path(name: &ObjectName) -> bool {
    let parts = parts(name);
    parts.len() == 1 && parts[0].eq_ignore_ascii_case("search_path")
}

fn is_search_path_idents(idents: &[ast::Ident]) -> bool {
    matches!(idents, [one] if one.value.eq_ignore_ascii_case("search_path"))
}

/// The one `catalog.schema` of a `SET search_path`: a string, or a (dotted) name.
fn search_path(values: &[Expr]) -> Result<Request> {
    let usage = || {
        Error::Usage(
            "search_path takes one catalog.schema, such as SET search_path = 'pg.public' \
             (Quarry resolves unqualified names in one schema)"
                .into(),
        )
    };
    let [value] = values else {
        return Err(usage());
    };
    let text = match value {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            Value::Placeholder(_) | Value::Null => return Err(usage()),
            other => other.to_string(),
        },
        Expr::Identifier(ident) => ident.value.clone(),
        Expr::CompoundIdentifier(idents) => idents
            .iter()
            .map(|i| i.value.as_str())
            .collect::<Vec<_>>()
            .join("."),
        _ => return Err(usage()),
    };
    if text.eq_ignore_ascii_case("default") {
        return Ok(Request::Reset);
    }
    if text.contains(',') || text.trim().is_empty() {
        return Err(usage());
    }
    Ok(Request::Change(
        text.split('.')
            .map(|p| p.trim().trim_matches('"').to_owned())
            .collect(),
    ))
}

/// The default schema `name` (`catalog.schema`, `catalog` or `schema`) names, checked
/// against the catalogs that exist. A catalog alone takes its only schema, else `public`
/// or `main` (as DuckDB's `USE db` takes `main`); a lone schema of the current catalog
/// keeps the catalog.
pub fn resolve(
    name: &[String],
    catalogs: &dyn CatalogProviderList,
    current: &DefaultSchema,
) -> Result<DefaultSchema> {
    let catalog_names = catalogs.catalog_names();
    let no_catalog = |catalog: &str| {
        let mut message = format!("no catalog named '{catalog}'");
        if let Some(near) = closest(catalog, catalog_names.iter()) {
            message.push_str(&format!("; did you mean '{near}'?"));
        }
        message.push_str(" (.connections lists the connections; each is a catalog)");
        Error::NotFound(message)
    };
    let (catalog, schema) = match name {
        [catalog, schema] => (catalog.clone(), Some(schema.clone())),
        [one] if catalogs.catalog(one).is_some() => (one.clone(), None),
        [one] => {
            let in_current = catalogs
                .catalog(&current.catalog)
                .is_some_and(|c| c.schema(one).is_some());
            if !in_current {
                return Err(no_catalog(one));
            }
            (current.catalog.clone(), Some(one.clone()))
        }
        _ => {
            return Err(Error::Usage(format!(
                "'{}' is not a catalog.schema name; try USE catalog.schema",
                name.join(".")
            )));
        }
    };
    let provider = catalogs
        .catalog(&catalog)
        .ok_or_else(|| no_catalog(&catalog))?;
    let schemas = provider.schema_names();
    let schema = match schema {
        Some(schema) if schemas.contains(&schema) => schema,
        Some(schema) => {
            let mut message = format!("catalog '{catalog}' has no schema named '{schema}'");
            if let Some(near) = closest(&schema, schemas.iter()) {
                message.push_str(&format!("; did you mean '{catalog}.{near}'?"));
            } else {
                message.push_str(&format!(" (its schemas: {})", schemas.join(", ")));
            }
            return Err(Error::NotFound(message));
        }
        None => match schemas.as_slice() {
            [only] => only.clone(),
            _ if schemas.iter().any(|s| s == "public") => "public".into(),
            _ if schemas.iter().any(|s| s == "main") => "main".into(),
            [] => {
                return Err(Error::NotFound(format!(
                    "catalog '{catalog}' has no schemas yet; run discover_connection('{catalog}')"
                )));
            }
            _ => {
                return Err(Error::Usage(format!(
                    "catalog '{catalog}' has several schemas ({}); name one: USE {catalog}.<schema>",
                    schemas.join(", ")
                )));
            }
        },
    };
    Ok(DefaultSchema { catalog, schema })
}
