//! What a database server source does before it opens a session: opens its SSH tunnel,
//! and reads a password given by reference again, so that a rotated password is used from
//! the next session on without reopening the connection.

use std::sync::{Arc, Mutex};

use secrecy::{ExposeSecret, SecretString};
use sqlx::mysql::MySqlConnectOptions;
use sqlx::postgres::PgConnectOptions;

use super::ServerConfig;
use super::credential::Credential;
use super::ssh::Tunnel;
use crate::error::Result;

/// Connect options whose password can be replaced.
pub trait WithPassword: Clone {
    /// These options with `password`.
    fn with_password(self, password: &str) -> Self;
}

impl WithPassword for PgConnectOptions {
    fn with_password(self, password: &str) -> Self {
        self.password(password)
    }
}

impl WithPassword for MySqlConnectOptions {
    fn with_password(self, password: &str) -> Self {
        self.password(password)
    }
}

/// A server source's password and tunnel.
#[derive(Debug)]
pub struct Login {
    connection: String,
    password: Option<Credential>,
    tunnel: Option<Arc<Tunnel>>,
    /// The password the pool's options hold, when read by reference.
    current: Mutex<Option<SecretString>>,
}

impl Login {
    /// The login of `config`, with the host and port the pool connects to: the tunnel's
    /// loopback address when the server is reached through SSH.
    pub fn new(connection: &str, config: &ServerConfig) -> Result<(Self, String, u16)> {
        let tunnel = match &config.ssh {
            Some(ssh) => Some(Tunnel::open(
                connection,
                ssh,
                (config.host.clone(), config.port),
            )?),
            None => None,
        };
        let (host, port) = match &tunnel {
            Some(tunnel) => (
                tunnel.local_addr().ip().to_string(),
                tunnel.local_addr().port(),
            ),
            None => (config.host.clone(), config.port),
        };
        let login = Login {
            connection: connection.to_owned(),
            password: config.password.clone(),
            tunnel,
            current: Mutex::new(None),
        };
        Ok((login, host, port))
    }

    /// The SSH tunnel, if the server is reached through one.
    pub fn tunnel(&self) -> Option<Arc<Tunnel>> {
        self.tunnel.clone()
    }

    /// A password given by value, for the options the pool starts with.
    pub fn given_password(&self) -> Option<&SecretString> {
        match &self.password {
            Some(Credential::Value(value)) => Some(value),
            _ => None,
        }
    }

    /// Makes the next session of `pool` possible: the tunnel is open and the options hold
    /// the password read now. Returns the options to connect with outside the pool.
    pub async fn prepare<DB>(
        &self,
        pool: &sqlx::Pool<DB>,
    ) -> Result<Arc<<DB::Connection as sqlx::Connection>::Options>>
    where
        DB: sqlx::Database,
        <DB::Connection as sqlx::Connection>::Options: WithPassword,
    {
        if let Some(tunnel) = &self.tunnel {
            tunnel.ready().await?;
        }
        if let Some(credential) = self
            .password
            .as_ref()
            .filter(|c| !matches!(c, Credential::Value(_)))
        {
            let password = credential.resolve(&self.connection, "password")?;
            let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
            let changed = current
                .as_ref()
                .is_none_or(|old| old.expose_secret() != password.expose_secret());
            if changed {
                let options = (*pool.connect_options()).clone();
                pool.set_connect_options(options.with_password(password.expose_secret()));
                *current = Some(password);
            }
        }
        Ok(pool.connect_options())
    }
}
