//! `quarry serve`: an Arrow Flight SQL server on the engine, so BI tools and ADBC, JDBC
//! and pyarrow clients can query every connection.

pub mod guard;
pub mod keys;
pub mod metadata;
pub mod service;
pub mod status;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use tonic::transport::{Identity, Server, ServerTlsConfig};

use self::guard::Guarded;
use self::service::QuarryFlightSql;
use crate::error::{Error, Result};
use crate::server::auth::Authenticator;
use crate::server::client_sessions::ClientSessions;
use crate::server::{self, RunningServer};

/// Where results stream at most this many bytes per message (gRPC's default limit is 4 MiB;
/// the encoder splits larger batches).
const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// A certificate and key for TLS, both PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The certificate chain.
    pub cert: PathBuf,
    /// Its private key.
    pub key: PathBuf,
}

/// How the server runs.
#[derive(Debug)]
pub struct ServeOptions {
    /// Address to listen on.
    pub addr: SocketAddr,
    /// TLS, or plain TCP when `None`.
    pub tls: Option<TlsFiles>,
    /// Who may log in, and the tokens they hold (shared with the HTTP API).
    pub auth: Arc<Authenticator>,
    /// The clients' sessions (shared with the HTTP API, so a token has one session).
    pub sessions: Arc<ClientSessions>,
}

/// Whether clients outside this machine can reach `addr`.
pub fn is_exposed(addr: &SocketAddr) -> bool {
    !addr.ip().is_loopback()
}

/// Binds `options.addr` and serves the engine of `options.sessions` on it until shut down.
pub async fn start(options: ServeOptions) -> Result<RunningServer> {
    let mut server = Server::builder();
    if let Some(tls) = &options.tls {
        let read = |path: &PathBuf, what: &str| {
            std::fs::read(path).map_err(Error::io(format!("cannot read the TLS {what}"), path))
        };
        let identity = Identity::from_pem(read(&tls.cert, "certificate")?, read(&tls.key, "key")?);
        server = server
            .tls_config(ServerTlsConfig::new().identity(identity))
            .map_err(|e| {
                Error::Usage(format!(
                    "the TLS certificate or key cannot be used: {e}; give PEM files with \
                     --tls-cert and --tls-key"
                ))
            })?;
    }
    let (listener, addr) = server::bind(options.addr, "Flight SQL").await?;
    let service = FlightServiceServer::new(Guarded::new(
        QuarryFlightSql::new(options.sessions),
        options.auth,
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    Ok(RunningServer::spawn("Flight SQL", addr, |shutdown| {
        server
            .add_service(service)
            .serve_with_incoming_shutdown(incoming, shutdown)
    }))
}
