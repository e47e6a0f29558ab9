//! Who may call the servers (Flight SQL and HTTP alike): users with argon2 password hashes,
//! the login that turns HTTP basic credentials into an expiring bearer token, and the check
//! every other call goes through. Both servers share one [`Authenticator`], so a token from
//! either works on both.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use secrecy::{ExposeSecret, SecretString};

use crate::audit::{Actor, Role};
use crate::engine::Engine;
use crate::error::{Error, Result};

/// The user `QUARRY_SERVER_PASSWORD` logs in.
pub const DEFAULT_USER: &str = "quarry";

/// Users and their password hashes (PHC strings).
pub struct Users {
    hashes: HashMap<String, String>,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.hashes.keys().collect();
        names.sort();
        f.debug_struct("Users").field("names", &names).finish()
    }
}

impl Users {
    /// The single user `quarry` with `password`.
    pub fn with_password(password: &SecretString) -> Result<Self> {
        if password.expose_secret().is_empty() {
            return Err(Error::Usage(
                "QUARRY_SERVER_PASSWORD is empty; set it to the password clients log in with"
                    .into(),
            ));
        }
        let hash = hash_password(password)?;
        Ok(Users {
            hashes: HashMap::from([(DEFAULT_USER.to_owned(), hash)]),
        })
    }

    /// Users from a file of `name:hash` lines (`quarry hash-password` prints a hash);
    /// blank lines and `#` comments are skipped.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).map_err(Error::io("cannot read the users file", path))?;
        let mut hashes = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |what: &str| {
                Error::Usage(format!(
                    "{} line {}: {what}; each line is name:hash, the hash from `quarry hash-password`",
                    path.display(),
                    number + 1
                ))
            };
            let (name, hash) = line.split_once(':').ok_or_else(|| bad("no ':'"))?;
            if name.is_empty() {
                return Err(bad("the user name is empty"));
            }
            PasswordHash::new(hash).map_err(|_| bad("the hash is not an argon2 PHC string"))?;
            if hashes.insert(name.to_owned(), hash.to_owned()).is_some() {
                return Err(bad(&format!("user '{name}' appears twice")));
            }
        }
        if hashes.is_empty() {
            return Err(Error::Usage(format!(
                "{} lists no users; add name:hash lines (`quarry hash-password` prints a hash)",
                path.display()
            )));
        }
        Ok(Users { hashes })
    }

    /// Whether `password` is `user`'s.
    pub fn verify(&self, user: &str, password: &str) -> bool {
        // Unknown users cost a hash too, so timing does not tell which names exist.
        let hash = self
            .hashes
            .get(user)
            .map(String::as_str)
            .unwrap_or(DUMMY_HASH);
        let Ok(parsed) = PasswordHash::new(hash) else {
            return false;
        };
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
            && self.hashes.contains_key(user)
    }
}

/// Whether `password` matches the PHC string `hash`.
fn verify_hash(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// The hash of a password nobody has, checked against for unknown user names.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$Hn7tFgJ2Xo9mZ1zjIu9j1ZqN3KxWc0v3dG8yQm9kWk0";

/// An argon2id PHC string for `password` with a random salt.
pub fn hash_password(password: &SecretString) -> Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| Error::Usage(format!("cannot hash the password: {e}")))
}

/// Bearer tokens handed out by the handshake, each with its user and expiry.
pub struct Tokens {
    ttl: Duration,
    issued: Mutex<HashMap<String, (String, Instant)>>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    /// Tokens valid for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Tokens {
            ttl,
            issued: Mutex::new(HashMap::new()),
        }
    }

    /// A new token for `user`.
    pub fn issue(&self, user: &str) -> String {
        let token = nanoid::nanoid!(43);
        let now = Instant::now();
        let mut issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued.retain(|_, (_, expires)| *expires > now);
        issued.insert(token.clone(), (user.to_owned(), now + self.ttl));
        token
    }

    /// The user of a valid, unexpired token.
    fn user(&self, token: &str) -> Option<String> {
        self.holder(token).map(|(user, _)| user)
    }

    /// The user of a valid, unexpired token, and when it expires.
    fn holder(&self, token: &str) -> Option<(String, Instant)> {
        let issued = self.issued.lock().unwrap_or_else(|e| e.into_inner());
        issued
            .get(token)
            .filter(|(_, expires)| *expires > Instant::now())
            .cloned()
    }
}

/// Who makes a call, and with which token: what a server keys its sessions by.
#[derive(Clone, PartialEq, Eq)]
pub struct Caller {
    /// The user.
    pub user: String,
    /// The bearer token and when it expires; `None` for basic credentials on the call.
    pub token: Option<(String, Instant)>,
    /// What the user may do.
    pub role: Role,
}

impl Caller {
    /// The actor the call runs as.
    pub fn actor(&self) -> Actor {
        Actor::user(&self.user, self.role)
    }
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("user", &self.user)
            .field("role", &self.role)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// Credentials a call carries in its `authorization` header.
enum Credentials {
    Basic { user: String, password: String },
    Bearer(String),
}

fn unauthenticated(message: impl Into<String>) -> Error {
    Error::Unauthenticated(message.into())
}

fn credentials(header: Option<&[u8]>) -> Result<Credentials> {
    let header = header.ok_or_else(|| {
        unauthenticated(
            "no credentials: send 'Authorization: Basic <base64 of user:password>' or \
             'Authorization: Bearer <token>' (a token comes from logging in)",
        )
    })?;
    let header = std::str::from_utf8(header)
        .map_err(|_| unauthenticated("the authorization header is not text"))?;
    let (scheme, value) = header.split_once(' ').unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("bearer") {
        return Ok(Credentials::Bearer(value.trim().to_owned()));
    }
    if scheme.eq_ignore_ascii_case("basic") {
        // Clients differ on padding (Go's Flight client sends none).
        const BASE64: GeneralPurpose = GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
        );
        let decoded = BASE64
            .decode(value.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| unauthenticated("basic credentials are not base64 of user:password"))?;
        let (user, password) = decoded
            .split_once(':')
            .ok_or_else(|| unauthenticated("basic credentials are not user:password"))?;
        return Ok(Credentials::Basic {
            user: user.to_owned(),
            password: password.to_owned(),
        });
    }
    Err(unauthenticated(format!(
        "unsupported authorization scheme '{scheme}'; use Basic or Bearer"
    )))
}

/// Users and tokens together: what the servers check calls against. The users given at
/// start (the users file, or `QUARRY_SERVER_PASSWORD`'s user) are admins; with an engine,
/// the users admins add through the API (kept in its store, each with a role) log in too.
pub struct Authenticator {
    users: std::sync::Arc<Users>,
    tokens: Tokens,
    engine: Option<Engine>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("users", &self.users)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Checks calls against `users`; tokens live for `ttl`.
    pub fn new(users: Users, ttl: Duration) -> Self {
        Authenticator {
            users: std::sync::Arc::new(users),
            tokens: Tokens::new(ttl),
            engine: None,
        }
    }

    /// Also lets in the users admins manage through the API, kept in `engine`'s store.
    pub fn with_managed_users(mut self, engine: Engine) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Whether `name` is one of the users given at start (who cannot be managed).
    pub fn is_given_user(&self, name: &str) -> bool {
        self.users.hashes.contains_key(name)
    }

    /// The names of the users given at start.
    pub fn given_users(&self) -> Vec<String> {
        self.users.hashes.keys().cloned().collect()
    }

    /// The user `name` added through the API, if there is one (one store read).
    async fn managed(&self, name: &str) -> Result<Option<crate::store::UserRecord>> {
        match &self.engine {
            Some(engine) if !self.is_given_user(name) => engine.store().user(name).await,
            _ => Ok(None),
        }
    }

    /// The role of a token's `user`: admin for the users given at start, the stored one
    /// otherwise, read on each call so that a change or removal takes effect at once.
    async fn role_of(&self, user: &str) -> Result<Role> {
        if self.is_given_user(user) {
            return Ok(Role::Admin);
        }
        match self.managed(user).await? {
            Some(found) => Ok(found.role),
            None => Err(unauthenticated(format!(
                "user '{user}' no longer exists; log in as another user"
            ))),
        }
    }

    /// How long a token stays valid.
    pub fn token_ttl(&self) -> Duration {
        self.tokens.ttl
    }

    /// Logging in: basic credentials (or a still-valid token) in the `authorization`
    /// header value, a fresh bearer token out.
    pub async fn login(&self, header: Option<&[u8]>) -> Result<String> {
        match credentials(header)? {
            Credentials::Basic { user, password } => {
                self.check_password(&user, password).await?;
                Ok(self.tokens.issue(&user))
            }
            Credentials::Bearer(token) => self
                .tokens
                .user(&token)
                .map(|user| self.tokens.issue(&user))
                .ok_or_else(expired),
        }
    }

    /// The user a call is made by: a valid bearer token, or basic credentials on the call.
    pub async fn user(&self, header: Option<&[u8]>) -> Result<String> {
        Ok(self.caller(header).await?.user)
    }

    /// Who a call is made by, with the token it carries.
    pub async fn caller(&self, header: Option<&[u8]>) -> Result<Caller> {
        match credentials(header)? {
            Credentials::Bearer(token) => {
                let (user, expires) = self.tokens.holder(&token).ok_or_else(expired)?;
                let role = self.role_of(&user).await?;
                Ok(Caller {
                    user,
                    token: Some((token, expires)),
                    role,
                })
            }
            Credentials::Basic { user, password } => {
                let role = self.check_password(&user, password).await?;
                Ok(Caller {
                    user,
                    token: None,
                    role,
                })
            }
        }
    }

    /// Checks `user`'s password and returns their role.
    async fn check_password(&self, user: &str, password: String) -> Result<Role> {
        let managed = self.managed(user).await?;
        let role = managed.as_ref().map_or(Role::Admin, |u| u.role);
        let stored = managed.map(|u| u.password_hash);
        // Hashing is CPU-heavy by design; keep it off the I/O threads.
        let users = std::sync::Arc::clone(&self.users);
        let name = user.to_owned();
        let ok = tokio::task::spawn_blocking(move || match stored {
            Some(hash) => verify_hash(&hash, &password),
            None => users.verify(&name, &password),
        })
        .await
        .unwrap_or(false);
        if ok {
            Ok(role)
        } else {
            Err(unauthenticated(format!(
                "wrong user name or password for '{user}'"
            )))
        }
    }
}

fn expired() -> Error {
    unauthenticated("the token is unknown or expired; log in again with user and password")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_verifies_and_a_wrong_one_does_not() {
        let users = Users::with_password(&SecretString::from("s3cret")).unwrap();
        assert!(users.verify("quarry", "s3cret"));
        assert!(!users.verify("quarry", "S3cret"));
        assert!(!users.verify("other", "s3cret"));
        assert!(!format!("{users:?}").contains("argon2"));
    }

    #[test]
    fn an_empty_password_is_refused() {
        assert!(Users::with_password(&SecretString::from("")).is_err());
    }

    #[test]
    fn users_files_are_checked_line_by_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        let hash = hash_password(&SecretString::from("pw")).unwrap();
        std::fs::write(&path, format!("# team\nann:{hash}\n\nbob:{hash}\n")).unwrap();
        let users = Users::from_file(&path).unwrap();
        assert!(users.verify("ann", "pw") && users.verify("bob", "pw"));
        std::fs::write(&path, "ann:plaintext\n").unwrap();
        let error = Users::from_file(&path).unwrap_err().to_string();
        assert!(
            error.contains("line 1") && error.contains("hash-password"),
            "{error}"
        );
    }

    #[test]
    fn tokens_expire() {
        let tokens = Tokens::new(Duration::from_millis(0));
        let token = tokens.issue("quarry");
        assert_eq!(tokens.user(&token), None);
        let tokens = Tokens::new(Duration::from_secs(60));
        let token = tokens.issue("quarry");
        assert_eq!(tokens.user(&token).as_deref(), Some("quarry"));
        assert_eq!(tokens.user("forged"), None);
    }
}
