//! Statements between their planning (GetFlightInfo) and their results (DoGet), and the
//! prepared statements clients keep open: each by a random handle, each cancellable.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use datafusion::scalar::ScalarValue;
use tokio_util::sync::CancellationToken;

use crate::session::Runnable;

/// A planned statement never fetched is dropped after this long.
const UNCLAIMED_FOR: Duration = Duration::from_secs(3600);

/// A planned statement waiting for, or streaming to, its DoGet.
#[derive(Clone)]
pub struct Planned {
    /// The plan, run when the results are asked for.
    pub runnable: Runnable,
    /// Cancelled by CancelFlightInfo.
    pub cancel: CancellationToken,
    created: Instant,
}

/// A prepared statement: its SQL and the parameter values bound last.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The statement's text.
    pub sql: String,
    /// Values for `$1`, `$2`, ... (empty until bound).
    pub parameters: Vec<ScalarValue>,
}

/// Every planned and prepared statement of one client session.
#[derive(Default)]
pub struct Queries {
    planned: Mutex<HashMap<String, Planned>>,
    prepared: Mutex<HashMap<String, Prepared>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn handle() -> String {
    nanoid::nanoid!(24)
}

impl Queries {
    /// Keeps `runnable` until its results are fetched; returns its handle and the entry.
    pub fn plan(&self, runnable: Runnable) -> (String, Planned) {
        let id = handle();
        let now = Instant::now();
        let entry = Planned {
            runnable,
            cancel: CancellationToken::new(),
            created: now,
        };
        let mut planned = lock(&self.planned);
        planned.retain(|_, p| now.duration_since(p.created) < UNCLAIMED_FOR);
        planned.insert(id.clone(), entry.clone());
        (id, entry)
    }

    /// The planned statement `id`.
    pub fn planned(&self, id: &str) -> Option<Planned> {
        lock(&self.planned).get(id).cloned()
    }

    /// Forgets the planned statement `id` (its results were streamed or abandoned).
    pub fn finish(&self, id: &str) {
        lock(&self.planned).remove(id);
    }

    /// Cancels the planned statement `id`; false if there is none.
    pub fn cancel(&self, id: &str) -> bool {
        match lock(&self.planned).get(id) {
            Some(planned) => {
                planned.cancel.cancel();
                true
            }
            None => false,
        }
    }

    /// Keeps a prepared statement; returns its handle.
    pub fn prepare(&self, sql: String) -> String {
        let id = handle();
        lock(&self.prepared).insert(
            id.clone(),
            Prepared {
                sql,
                parameters: Vec::new(),
            },
        );
        id
    }

    /// The prepared statement `id`.
    pub fn prepared(&self, id: &str) -> Option<Prepared> {
        lock(&self.prepared).get(id).cloned()
    }

    /// Binds parameter values to the prepared statement `id`; false if there is none.
    pub fn bind(&self, id: &str, parameters: Vec<ScalarValue>) -> bool {
        match lock(&self.prepared).get_mut(id) {
            Some(prepared) => {
                prepared.parameters = parameters;
                true
            }
            None => false,
        }
    }

    /// Closes the prepared statement `id`; false if there was none.
    pub fn close(&self, id: &str) -> bool {
        lock(&self.prepared).remove(id).is_some()
    }
}
