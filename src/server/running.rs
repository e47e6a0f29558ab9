//! What the Flight SQL and HTTP servers share: a bound listener, and a server running on its
//! own task that can be stopped and waited for.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::error::{Error, Result};

/// Resolves when the server is asked to stop.
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Binds `addr` for `what` ("Flight SQL", "HTTP") and returns the listener and the address
/// it really has (the port chosen when 0 was asked for).
pub async fn bind(addr: SocketAddr, what: &str) -> Result<(TcpListener, SocketAddr)> {
    let shown = || PathBuf::from(addr.to_string());
    let listener = TcpListener::bind(addr).await.map_err(Error::io(
        format!("cannot listen for {what} clients"),
        shown(),
    ))?;
    let bound = listener
        .local_addr()
        .map_err(Error::io("cannot read the listening address", shown()))?;
    Ok((listener, bound))
}

/// A running server; dropping it leaves it running until [`RunningServer::shutdown`] or
/// the end of the process.
pub struct RunningServer {
    what: &'static str,
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::result::Result<(), String>>,
}

impl RunningServer {
    /// Spawns the server `serve` builds; it runs until the [`Shutdown`] it is given resolves.
    pub fn spawn<F, E>(
        what: &'static str,
        addr: SocketAddr,
        serve: impl FnOnce(Shutdown) -> F,
    ) -> Self
    where
        F: Future<Output = std::result::Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let running = serve(Box::pin(async move {
            let _ = stopped.await;
        }));
        let task = tokio::spawn(async move { running.await.map_err(|e| e.to_string()) });
        RunningServer {
            what,
            addr,
            stop: Some(stop),
            task,
        }
    }

    /// The address it listens on (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting calls, lets running ones end, and waits.
    pub async fn shutdown(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.wait().await
    }

    /// Waits until the server stops.
    pub async fn wait(self) -> Result<()> {
        let what = self.what;
        match self.task.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::Usage(format!("the {what} server failed: {e}"))),
            Err(e) => Err(Error::Usage(format!("the {what} server stopped: {e}"))),
        }
    }
}
