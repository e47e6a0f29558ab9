//! SSH tunnels to database servers behind a bastion host. A connection with an `ssh`
//! config gets one SSH session, shared by its whole pool: a listener on a loopback port
//! that the pool connects to, whose every accepted socket is forwarded as a `direct-tcpip`
//! channel to the database. The session is reopened when it drops. The server's host key
//! must be the one `known_hosts` records: an unknown or changed key is refused, never
//! learned.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex as StdMutex, Weak};
use std::time::Duration;

use russh::client;
use russh::keys::{PrivateKeyWithHashAlg, PublicKeyOrCertificate};
use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

use super::credential::Credential;
use crate::error::{Error, FailureClass, Result};

const KEYS: &[&str] = &[
    "enabled",
    "host",
    "port",
    "user",
    "auth",
    "key_path",
    "key_passphrase",
    "password",
    "known_hosts",
];

/// How the tunnel logs in to the SSH server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SshAuth {
    /// A private key file (`key_path`), with its passphrase if it has one.
    Key,
    /// A password.
    Password,
    /// The keys of the SSH agent at `SSH_AUTH_SOCK`.
    Agent,
}

/// The `ssh` object of a server connection's config.
#[derive(Clone, Debug)]
pub struct SshConfig {
    /// The SSH server's host name or address.
    pub host: String,
    /// Its port (default 22).
    pub port: u16,
    /// The user to log in as.
    pub user: String,
    /// How to log in.
    pub auth: SshAuth,
    /// The private key file, for key auth.
    pub key_path: Option<PathBuf>,
    /// The key's passphrase, or where to read it.
    pub key_passphrase: Option<Credential>,
    /// The password, or where to read it, for password auth.
    pub password: Option<Credential>,
    /// The file of known host keys (default `~/.ssh/known_hosts`).
    pub known_hosts: PathBuf,
}

impl SshConfig {
    /// Validates an `ssh` object; `None` when it says `"enabled": false`.
    pub fn parse(value: &Value) -> std::result::Result<Option<Self>, String> {
        let Some(map) = value.as_object() else {
            return Err(
                "'ssh' must be an object such as {\"host\": \"bastion\", \"user\": \"me\", \
                 \"auth\": \"key\", \"key_path\": \"/home/me/.ssh/id_ed25519\"}"
                    .into(),
            );
        };
        super::config::check_keys(map, KEYS).map_err(|(_, m)| format!("in 'ssh': {m}"))?;
        if map.get("enabled") == Some(&Value::Bool(false)) {
            return Ok(None);
        }
        let text = |key: &str| -> std::result::Result<Option<String>, String> {
            match map.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.clone())),
                Some(other) => Err(format!(
                    "'ssh.{key}' must be a non-empty string, got {other}"
                )),
            }
        };
        let required = |key: &str, what: &str| {
            text(key)?
                .ok_or_else(|| format!("'ssh.{key}' is required when the SSH tunnel is on: {what}"))
        };
        let host = required("host", "the SSH server's host name or address")?;
        let user = required("user", "the user to log in to the SSH server as")?;
        let port = match map.get("port") {
            None | Some(Value::Null) => 22,
            Some(v) => v
                .as_u64()
                .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                .filter(|p| (1..=65535).contains(p))
                .ok_or_else(|| format!("'ssh.port' must be between 1 and 65535, got {v}"))?
                as u16,
        };
        let auth = match text("auth")?.as_deref() {
            None if map.contains_key("key_path") => SshAuth::Key,
            None if map.contains_key("password") => SshAuth::Password,
            None => SshAuth::Agent,
            Some("key") => SshAuth::Key,
            Some("password") => SshAuth::Password,
            Some("agent") => SshAuth::Agent,
            Some(other) => {
                return Err(format!(
                    "'ssh.auth' must be key, password or agent, got '{other}'"
                ));
            }
        };
        let credential = |key: &str| match map.get(key) {
            None => Ok(None),
            Some(value) => Credential::parse(&format!("ssh.{key}"), value),
        };
        let key_path = text("key_path")?.map(PathBuf::from);
        if auth == SshAuth::Key && key_path.is_none() {
            return Err(
                "'ssh.key_path' is required for key auth: the path of the private key file".into(),
            );
        }
        let password = credential("password")?;
        if auth == SshAuth::Password && password.is_none() {
            return Err("'ssh.password' is required for password auth".into());
        }
        let known_hosts = match text("known_hosts")? {
            Some(path) => PathBuf::from(path),
            None => std::env::home_dir()
                .map(|home| home.join(".ssh").join("known_hosts"))
                .ok_or("'ssh.known_hosts' is required: this process has no home directory")?,
        };
        Ok(Some(SshConfig {
            host,
            port,
            user,
            auth,
            key_path,
            key_passphrase: credential("key_passphrase")?,
            password,
            known_hosts,
        }))
    }
}

/// A tunnel to one database server: a loopback listener forwarding through one SSH
/// session. Dropping it stops the listener; channels already open finish on their own.
pub struct Tunnel {
    connection: String,
    config: SshConfig,
    /// The database's host and port, as the SSH server sees them.
    target: (String, u16),
    local: SocketAddr,
    session: Mutex<Option<Arc<client::Handle<HostKeyCheck>>>>,
    accept: StdMutex<Option<tokio::task::JoinHandle<()>>>,
    /// Why the last forwarded connection could not be opened, until a client error asks.
    failure: StdMutex<Option<(FailureClass, String)>>,
}

impl std::fmt::Debug for Tunnel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tunnel")
            .field(
                "ssh",
                &format_args!(
                    "{}@{}:{}",
                    self.config.user, self.config.host, self.config.port
                ),
            )
            .field("local", &self.local)
            .finish_non_exhaustive()
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        if let Some(task) = self.accept.lock().unwrap_or_else(|e| e.into_inner()).take() {
            task.abort();
        }
    }
}

impl Tunnel {
    /// Listens on a loopback port for connections to `target` (host, port) through the
    /// SSH server of `config`. Nothing connects until the first use.
    pub fn open(connection: &str, config: &SshConfig, target: (String, u16)) -> Result<Arc<Self>> {
        let fail = |e: std::io::Error| Error::Source {
            connection: connection.to_owned(),
            class: FailureClass::Other,
            message: format!("cannot listen on a loopback port for the SSH tunnel: {e}"),
        };
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        let local = listener.local_addr().map_err(fail)?;
        let listener = TcpListener::from_std(listener).map_err(fail)?;
        let tunnel = Arc::new(Tunnel {
            connection: connection.to_owned(),
            config: config.clone(),
            target,
            local,
            session: Mutex::new(None),
            accept: StdMutex::new(None),
            failure: StdMutex::new(None),
        });
        let task = tokio::spawn(accept_loop(listener, Arc::downgrade(&tunnel)));
        *tunnel.accept.lock().unwrap_or_else(|e| e.into_inner()) = Some(task);
        Ok(tunnel)
    }

    /// Where the pool connects: the tunnel's loopback address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The SSH session, opened (or reopened, if it dropped) now; its failure says what the
    /// SSH server refused.
    pub async fn ready(&self) -> Result<Arc<client::Handle<HostKeyCheck>>> {
        let mut slot = self.session.lock().await;
        if let Some(session) = slot.as_ref().filter(|s| !s.is_closed()) {
            return Ok(Arc::clone(session));
        }
        let session = Arc::new(self.connect().await?);
        *slot = Some(Arc::clone(&session));
        Ok(session)
    }

    /// Why the last forwarded connection failed, if it did since the last call: the
    /// database client only sees its socket closed.
    pub fn take_failure(&self) -> Option<(FailureClass, String)> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Forgets `session` if it is still the current one, so that the next use reopens.
    async fn discard(&self, session: &Arc<client::Handle<HostKeyCheck>>) {
        let mut slot = self.session.lock().await;
        if slot
            .as_ref()
            .is_some_and(|current| Arc::ptr_eq(current, session))
        {
            *slot = None;
        }
    }

    fn error(&self, class: FailureClass, message: String) -> Error {
        Error::Source {
            connection: self.connection.clone(),
            class,
            message,
        }
    }

    async fn connect(&self) -> Result<client::Handle<HostKeyCheck>> {
        let config = &self.config;
        let address = format!("{}:{}", config.host, config.port);
        let verdict = Arc::new(StdMutex::new(None));
        let check = HostKeyCheck {
            host: config.host.clone(),
            port: config.port,
            known_hosts: config.known_hosts.clone(),
            verdict: Arc::clone(&verdict),
        };
        let ssh_config = Arc::new(client::Config {
            nodelay: true,
            // Notices a dead bastion while idle; the next use reopens the session.
            keepalive_interval: Some(Duration::from_secs(15)),
            keepalive_max: 3,
            ..Default::default()
        });
        let connecting = client::connect(ssh_config, (config.host.as_str(), config.port), check);
        let mut session = match tokio::time::timeout(Duration::from_secs(15), connecting).await {
            Err(_) => {
                return Err(self.error(
                    FailureClass::Timeout,
                    format!("timed out connecting to the SSH server at {address}"),
                ));
            }
            Ok(Ok(session)) => session,
            Ok(Err(e)) => {
                if let Some(verdict) = verdict.lock().unwrap_or_else(|e| e.into_inner()).take() {
                    return Err(self.error(FailureClass::HostKey, verdict));
                }
                return Err(self.classify_io(&address, e));
            }
        };
        let user = config.user.clone();
        let auth_failed = |how: &str| {
            self.error(
                FailureClass::Authentication,
                format!(
                    "the SSH server at {address} refused user '{user}' with {how}; check \
                     'ssh.user' and the {how}"
                ),
            )
        };
        let other = |e: russh::Error| self.classify_io(&address, e);
        let accepted = match config.auth {
            SshAuth::Password => {
                let password = self.secret(config.password.as_ref(), "ssh.password")?;
                session
                    .authenticate_password(user.clone(), password.expose_secret())
                    .await
                    .map_err(other)?
                    .success()
                    .then_some(())
                    .ok_or_else(|| auth_failed("password"))
            }
            SshAuth::Key => {
                let key = self.private_key()?;
                let hash = session
                    .best_supported_rsa_hash()
                    .await
                    .map_err(other)?
                    .flatten();
                session
                    .authenticate_publickey(
                        user.clone(),
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await
                    .map_err(other)?
                    .success()
                    .then_some(())
                    .ok_or_else(|| auth_failed("key in 'ssh.key_path'"))
            }
            SshAuth::Agent => self.agent_auth(&mut session, &user, &address).await,
        };
        accepted?;
        Ok(session)
    }

    async fn agent_auth(
        &self,
        session: &mut client::Handle<HostKeyCheck>,
        user: &str,
        address: &str,
    ) -> Result<()> {
        let no_agent = |e: russh::keys::Error| {
            self.error(
                FailureClass::Authentication,
                format!(
                    "'ssh.auth' is agent, but no SSH agent answers at SSH_AUTH_SOCK ({e}); start \
                     one and add a key with ssh-add, or use key auth"
                ),
            )
        };
        let mut agent = russh::keys::agent::client::AgentClient::connect_env()
            .await
            .map_err(no_agent)?;
        let identities = agent.request_identities().await.map_err(no_agent)?;
        for identity in identities {
            let key = identity.public_key().into_owned();
            let hash = session
                .best_supported_rsa_hash()
                .await
                .map_err(|e| self.classify_io(address, e))?
                .flatten();
            if let Ok(result) = session
                .authenticate_publickey_with(user, key, hash, &mut agent)
                .await
                && result.success()
            {
                return Ok(());
            }
        }
        Err(self.error(
            FailureClass::Authentication,
            format!(
                "the SSH server at {address} refused user '{user}' with every key of the SSH \
                 agent; check 'ssh.user' and the agent's keys (ssh-add -l)"
            ),
        ))
    }

    fn secret(&self, credential: Option<&Credential>, key: &str) -> Result<SecretString> {
        match credential {
            Some(credential) => credential.resolve(&self.connection, key),
            None => Ok(SecretString::from(String::new())),
        }
    }

    fn private_key(&self) -> Result<russh::keys::PrivateKey> {
        let path = self.config.key_path.as_deref().unwrap_or(Path::new(""));
        let shown = path.display();
        let bad = |message: String| self.error(FailureClass::Authentication, message);
        let meta = std::fs::metadata(path).map_err(|e| {
            bad(format!(
                "cannot read the SSH key file {shown} ({e}); check 'ssh.key_path'"
            ))
        })?;
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(bad(format!(
                "the SSH key file {shown} is readable by other users; run: chmod 600 {shown}"
            )));
        }
        let passphrase = match &self.config.key_passphrase {
            Some(credential) => Some(credential.resolve(&self.connection, "ssh.key_passphrase")?),
            None => None,
        };
        russh::keys::load_secret_key(path, passphrase.as_ref().map(|p| p.expose_secret())).map_err(
            |e| {
                bad(format!(
                    "cannot load the SSH key {shown}: {e}; check the file, and \
                     'ssh.key_passphrase' if the key has one"
                ))
            },
        )
    }

    fn classify_io(&self, address: &str, e: russh::Error) -> Error {
        let (class, text) = match &e {
            russh::Error::IO(io) => match io.kind() {
                std::io::ErrorKind::ConnectionRefused => (
                    FailureClass::Refused,
                    format!(
                        "the SSH server at {address} refused the connection; check 'ssh.host' and 'ssh.port'"
                    ),
                ),
                _ => (
                    FailureClass::Reset,
                    format!("the SSH connection to {address} failed: {io}"),
                ),
            },
            other => (
                FailureClass::Reset,
                format!("the SSH connection to {address} failed: {other}"),
            ),
        };
        self.error(class, text)
    }
}

async fn accept_loop(listener: TcpListener, tunnel: Weak<Tunnel>) {
    loop {
        let Ok((socket, peer)) = listener.accept().await else {
            continue;
        };
        let Some(tunnel) = tunnel.upgrade() else {
            return;
        };
        tokio::spawn(async move {
            if let Err(e) = forward(&tunnel, socket, peer).await {
                tracing::warn!(connection = %tunnel.connection, "SSH tunnel: {e}");
                if let Error::Source { class, message, .. } = e {
                    *tunnel.failure.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((class, message));
                }
            }
        });
    }
}

/// Forwards one accepted socket through the session, opening it if needed. A failure
/// closes the socket: the pool's connect then fails, and `Tunnel::ready` says why.
async fn forward(tunnel: &Tunnel, mut socket: TcpStream, peer: SocketAddr) -> Result<()> {
    let (host, port) = &tunnel.target;
    let open = |session: Arc<client::Handle<HostKeyCheck>>| async move {
        session
            .channel_open_direct_tcpip(
                host.clone(),
                u32::from(*port),
                peer.ip().to_string(),
                u32::from(peer.port()),
            )
            .await
    };
    let session = tunnel.ready().await?;
    let channel = match open(Arc::clone(&session)).await {
        Ok(channel) => Ok(channel),
        // The session may have died without its handle noticing yet (the SSH server
        // restarted): open a new one and try once more.
        Err(_) => {
            tunnel.discard(&session).await;
            open(tunnel.ready().await?).await
        }
    };
    let channel = channel.map_err(|e| {
        tunnel.error(
            FailureClass::Refused,
            format!(
                "the SSH server could not reach {host}:{port}: {e}; check 'host' and \
                     'port' as the SSH server sees them"
            ),
        )
    })?;
    let mut stream = channel.into_stream();
    let _ = tokio::io::copy_bidirectional(&mut socket, &mut stream).await;
    Ok(())
}

/// Checks the SSH server's host key against `known_hosts`, keeping why it refused one.
pub struct HostKeyCheck {
    host: String,
    port: u16,
    known_hosts: PathBuf,
    verdict: Arc<StdMutex<Option<String>>>,
}

impl client::Handler for HostKeyCheck {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        key: &PublicKeyOrCertificate,
    ) -> std::result::Result<bool, Self::Error> {
        let PublicKeyOrCertificate::PublicKey { key, .. } = key else {
            *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) =
                Some("the SSH server presented a certificate; Quarry checks plain host keys against known_hosts".into());
            return Ok(false);
        };
        let file = self.known_hosts.display();
        let (host, port) = (&self.host, self.port);
        let entry = if port == 22 {
            host.clone()
        } else {
            format!("[{host}]:{port}")
        };
        let verdict = match russh::keys::check_known_hosts_path(host, port, key, &self.known_hosts)
        {
            Ok(true) => return Ok(true),
            Ok(false) if !self.known_hosts.exists() => format!(
                "cannot check the SSH server's host key: the known_hosts file {file} does not \
                 exist. Add the server's key after checking its fingerprint \
                 (ssh-keyscan -p {port} {host} >> {file}), or set 'ssh.known_hosts'"
            ),
            Ok(false) => format!(
                "the SSH server {entry} is not in {file}, so its host key ({}) cannot be \
                 checked. Add it after checking its fingerprint (ssh-keyscan -p {port} {host} \
                 >> {file})",
                key.fingerprint(Default::default())
            ),
            Err(russh::keys::Error::KeyChanged { line }) => format!(
                "the SSH server {entry} presented host key {}, which differs from the one \
                 {file} records on line {line}. This may be an attack; if the server's key was \
                 really changed, replace that line",
                key.fingerprint(Default::default())
            ),
            Err(e) => format!("cannot read the known_hosts file {file}: {e}"),
        };
        *self.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
        Ok(false)
    }
}
