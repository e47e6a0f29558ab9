//! The sessions of server clients. Each bearer token gets a SQL session of its own (its
//! settings, default catalog, temporary tables and views, planned and prepared
//! statements), shared by Flight SQL and HTTP calls made with that token. Calls that send
//! basic credentials every time share one session per user. A session ends when its token
//! expires, and one user holds at most a fixed number of them.

pub mod queries;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::server::auth::Caller;
use crate::session::Session;

use self::queries::Queries;

/// How many sessions one user may hold unless the server is told otherwise.
pub const DEFAULT_SESSIONS_PER_USER: usize = 64;

/// One client's session.
pub struct ClientSession {
    /// Where its SQL runs.
    pub sql: Session,
    /// Its Flight SQL statements between planning and results, and its prepared ones.
    pub queries: Queries,
}

/// What a session is found by; it holds a token, so it has no `Debug`.
#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    Token(String),
    Basic(String),
}

struct Open {
    user: String,
    expires: Option<Instant>,
    session: Arc<ClientSession>,
}

/// Every open client session of a server.
pub struct ClientSessions {
    engine: Engine,
    per_user: usize,
    token_ttl: Duration,
    open: Mutex<HashMap<Key, Open>>,
}

impl std::fmt::Debug for ClientSessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSessions")
            .field("per_user", &self.per_user)
            .field("open", &self.len())
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for ClientSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSession")
            .field("sql", &self.sql)
            .finish_non_exhaustive()
    }
}

impl ClientSessions {
    /// Sessions on `engine`, at most `per_user` for one user; tokens live `token_ttl`.
    pub fn new(engine: Engine, per_user: usize, token_ttl: Duration) -> Self {
        ClientSessions {
            engine,
            per_user,
            token_ttl,
            open: Mutex::new(HashMap::new()),
        }
    }

    /// The session of `caller`, opened on its first call.
    pub fn get(&self, caller: &Caller) -> Result<Arc<ClientSession>> {
        let (key, expires) = match &caller.token {
            Some((token, expires)) => (Key::Token(token.clone()), Some(*expires)),
            None => (Key::Basic(caller.user.clone()), None),
        };
        let now = Instant::now();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.retain(|_, o| o.expires.is_none_or(|at| at > now));
        if let Some(found) = open.get(&key) {
            return Ok(Arc::clone(&found.session));
        }
        if open.values().filter(|o| o.user == caller.user).count() >= self.per_user {
            return Err(Error::TooManySessions {
                user: caller.user.clone(),
                limit: self.per_user,
                ttl_secs: self.token_ttl.as_secs(),
            });
        }
        let session = Arc::new(ClientSession {
            sql: self.engine.new_session(),
            queries: Queries::default(),
        });
        open.insert(
            key,
            Open {
                user: caller.user.clone(),
                expires,
                session: Arc::clone(&session),
            },
        );
        Ok(session)
    }

    /// The engine the sessions run on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How many sessions are open (expired ones are not counted).
    pub fn len(&self) -> usize {
        let now = Instant::now();
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        open.values()
            .filter(|o| o.expires.is_none_or(|at| at > now))
            .count()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
