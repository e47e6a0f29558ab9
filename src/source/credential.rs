//! A secret field's value, or a reference to where it is kept: an environment variable, a
//! file, or the operating system's keyring. A reference is stored as given (it is not a
//! secret) and resolved each time a source opens a session, so a rotated password takes
//! effect without touching the connection.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use secrecy::SecretString;
use serde_json::Value;

use crate::error::{Error, FailureClass, Result};

/// A secret field: the value itself, or where to read it.
#[derive(Clone)]
pub enum Credential {
    /// The value, given directly (stored sealed).
    Value(SecretString),
    /// `{"env": "NAME"}`: the environment variable `NAME`.
    Env(String),
    /// `{"file": "/run/secrets/pg"}`: the file's contents, without a trailing newline. The
    /// file must not be readable by other users.
    File(PathBuf),
    /// `{"keyring": {"service": "...", "user": "..."}}`: an entry of the OS keyring.
    Keyring {
        /// The entry's service.
        service: String,
        /// The entry's user.
        user: String,
    },
}

/// How a reference is written, for messages.
pub const REFERENCE_FORMS: &str =
    r#"{"env": "NAME"}, {"file": "/path"} or {"keyring": {"service": "...", "user": "..."}}"#;

impl Credential {
    /// Whether `value` is written as a reference (an object) rather than a value.
    pub fn is_reference(value: &Value) -> bool {
        value.is_object()
    }

    /// Reads the field `key`'s JSON value (`None` for null); a message says what is wrong.
    /// Never echoes a value that may be the secret itself.
    pub fn parse(key: &str, value: &Value) -> std::result::Result<Option<Self>, String> {
        let bad = || format!("'{key}' must be a string or a reference: {REFERENCE_FORMS}");
        match value {
            Value::Null => Ok(None),
            Value::String(text) => Ok(Some(Credential::Value(SecretString::from(text.clone())))),
            Value::Object(map) => {
                if map.len() != 1 {
                    return Err(bad());
                }
                let (kind, target) = map.iter().next().expect("one entry");
                let text = |what: &str| match target {
                    Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
                    _ => Err(format!("'{key}': {{\"{kind}\": ...}} must give {what}")),
                };
                match kind.as_str() {
                    "env" => Ok(Some(Credential::Env(text("the variable's name")?))),
                    "file" => {
                        let path = PathBuf::from(text("the file's absolute path")?);
                        if !path.is_absolute() {
                            return Err(format!(
                                "'{key}': the file '{}' must be an absolute path",
                                path.display()
                            ));
                        }
                        Ok(Some(Credential::File(path)))
                    }
                    "keyring" => {
                        let part = |name: &str| {
                            target
                                .get(name)
                                .and_then(Value::as_str)
                                .filter(|s| !s.trim().is_empty())
                                .map(str::to_owned)
                                .ok_or_else(|| {
                                    format!(
                                        "'{key}': {{\"keyring\": ...}} must give \"service\" and \
                                         \"user\", as in {{\"keyring\": {{\"service\": \"quarry\", \
                                         \"user\": \"sales\"}}}}"
                                    )
                                })
                        };
                        let unknown = target
                            .as_object()
                            .into_iter()
                            .flat_map(|m| m.keys())
                            .find(|k| *k != "service" && *k != "user");
                        if let Some(unknown) = unknown {
                            return Err(format!(
                                "'{key}': unknown keyring key '{unknown}'; give \"service\" and \
                                 \"user\""
                            ));
                        }
                        Ok(Some(Credential::Keyring {
                            service: part("service")?,
                            user: part("user")?,
                        }))
                    }
                    other => Err(format!(
                        "'{key}': unknown credential source '{other}'; use {REFERENCE_FORMS}"
                    )),
                }
            }
            _ => Err(bad()),
        }
    }

    /// The secret, read now from where the reference points. `connection` and `key` name
    /// it in messages, with what to do when it cannot be read.
    pub fn resolve(&self, connection: &str, key: &str) -> Result<SecretString> {
        let fail = |message: String| Error::Source {
            connection: connection.to_owned(),
            class: FailureClass::Credential,
            message,
        };
        match self {
            Credential::Value(value) => Ok(value.clone()),
            Credential::Env(name) => match std::env::var(name) {
                Ok(value) if !value.is_empty() => Ok(SecretString::from(value)),
                Ok(_) => Err(fail(format!(
                    "'{key}' comes from the environment variable {name}, which is empty; set it \
                     to the secret"
                ))),
                Err(_) => Err(fail(format!(
                    "'{key}' comes from the environment variable {name}, which is not set; set \
                     it in the environment of this process"
                ))),
            },
            Credential::File(path) => {
                let shown = path.display();
                let meta = std::fs::metadata(path).map_err(|e| {
                    fail(format!(
                        "'{key}' comes from the file {shown}, which cannot be read ({e}); \
                         create it or fix the path"
                    ))
                })?;
                let mode = meta.permissions().mode();
                if mode & 0o077 != 0 {
                    return Err(fail(format!(
                        "'{key}' comes from the file {shown}, which has mode {:o} and so is \
                         readable by other users; run: chmod 600 {shown}",
                        mode & 0o777
                    )));
                }
                let text = std::fs::read_to_string(path).map_err(|e| {
                    fail(format!(
                        "'{key}' comes from the file {shown}, which cannot be read ({e})"
                    ))
                })?;
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                Ok(SecretString::from(text.to_owned()))
            }
            Credential::Keyring { service, user } => {
                let missing = |e: keyring::Error| {
                    fail(format!(
                        "'{key}' comes from the keyring entry service '{service}', user \
                         '{user}', which cannot be read: {e}. Store it first (for example \
                         with: quarry keyring set {service} {user})"
                    ))
                };
                let mut first_error = None;
                for entry in keyring_entries(service, user).map_err(missing)? {
                    match entry.get_password() {
                        Ok(password) => return Ok(SecretString::from(password)),
                        Err(e) => {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                Err(missing(first_error.unwrap_or(keyring::Error::NoEntry)))
            }
        }
    }
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Value(_) => f.write_str("Credential::Value([redacted])"),
            Credential::Env(name) => write!(f, "Credential::Env({name})"),
            Credential::File(path) => write!(f, "Credential::File({})", path.display()),
            Credential::Keyring { service, user } => {
                write!(f, "Credential::Keyring({service}, {user})")
            }
        }
    }
}

/// Stores `secret` in the OS keyring under `service` and `user` (what
/// `quarry keyring set` does).
pub fn store_in_keyring(service: &str, user: &str, secret: &SecretString) -> Result<()> {
    use secrecy::ExposeSecret;
    let fail = |e: keyring::Error| {
        Error::Usage(format!(
            "cannot store the keyring entry service '{service}', user '{user}': {e}"
        ))
    };
    let mut first_error = None;
    for entry in keyring_entries(service, user).map_err(fail)? {
        match entry.set_password(secret.expose_secret()) {
            Ok(()) => return Ok(()),
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(fail(first_error.unwrap_or(keyring::Error::NoEntry)))
}

/// The keyring entries to try for `service` and `user`, in order. On Linux, the kernel's
/// keyutils: the session keyring linked to the user's persistent keyring (which outlives
/// the login session), then the session keyring alone, for where the kernel does not let a
/// process link to its persistent keyring (in many containers).
fn keyring_entries(service: &str, user: &str) -> keyring::Result<Vec<keyring::Entry>> {
    #[cfg(target_os = "linux")]
    {
        use keyring::keyutils::KeyutilsCredential;
        let linked = KeyutilsCredential::new_with_target(None, service, user)?;
        let mut session_only = linked.clone();
        session_only.persistent = None;
        Ok(vec![
            keyring::Entry::new_with_credential(Box::new(linked)),
            keyring::Entry::new_with_credential(Box::new(session_only)),
        ])
    }
    #[cfg(not(target_os = "linux"))]
    {
        Ok(vec![keyring::Entry::new(service, user)?])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn references_parse_and_bad_ones_say_what_is_wrong() {
        assert!(matches!(
            Credential::parse("password", &json!({"env": "PG_PW"})),
            Ok(Some(Credential::Env(n))) if n == "PG_PW"
        ));
        assert!(matches!(
            Credential::parse(
                "password",
                &json!({"keyring": {"service": "q", "user": "u"}})
            ),
            Ok(Some(Credential::Keyring { .. }))
        ));
        let relative = Credential::parse("password", &json!({"file": "pw.txt"})).unwrap_err();
        assert!(relative.contains("absolute path"), "{relative}");
        let unknown = Credential::parse("password", &json!({"vault": "x"})).unwrap_err();
        assert!(
            unknown.contains("unknown credential source 'vault'"),
            "{unknown}"
        );
        let number = Credential::parse("password", &json!(12)).unwrap_err();
        assert!(number.contains("a string or a reference"), "{number}");
        let half =
            Credential::parse("password", &json!({"keyring": {"service": "q"}})).unwrap_err();
        assert!(half.contains("\"service\" and \"user\""), "{half}");
    }

    #[test]
    fn debug_of_a_value_is_redacted() {
        let value = Credential::Value(SecretString::from("hunter2".to_owned()));
        assert!(!format!("{value:?}").contains("hunter2"));
    }
}
