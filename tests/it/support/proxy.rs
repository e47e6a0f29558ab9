//! A TCP proxy on a loopback port that the test controls: it can hold the connections it
//! accepts (nothing passes until released) and it reports each connection it accepts, so
//! that a test can act at the moment a process first talks to a server. It can also be cut
//! (every connection through it drops, new ones are closed at once) and restored, as a
//! network outage would.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A proxy to one server.
pub struct Proxy {
    port: u16,
    open: watch::Sender<bool>,
    up: watch::Sender<bool>,
    accepted: watch::Receiver<usize>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `target`, holding what it accepts until [`Proxy::release`].
    pub async fn held(target: SocketAddr) -> Proxy {
        Self::start(target, false).await
    }

    /// Starts a proxy to `target` that lets connections through.
    pub async fn passing(target: SocketAddr) -> Proxy {
        Self::start(target, true).await
    }

    async fn start(target: SocketAddr, released: bool) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (open, open_rx) = watch::channel(released);
        let (up, up_rx) = watch::channel(true);
        let (count, accepted) = watch::channel(0usize);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.send_modify(|n| *n += 1);
                if !*up_rx.borrow() {
                    drop(client);
                    continue;
                }
                let mut open = open_rx.clone();
                let mut up = up_rx.clone();
                tokio::spawn(async move {
                    if open.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    if let Ok(server) = TcpStream::connect(target).await {
                        let (mut client, mut server) = (client, server);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = up.wait_for(|up| !*up) => {}
                        }
                    }
                });
            }
        });
        Proxy {
            port,
            open,
            up,
            accepted,
            task,
        }
    }

    /// Drops every connection through it; until [`Proxy::restore`], it closes new ones.
    pub fn cut(&self) {
        self.up.send_replace(false);
    }

    /// Lets connections through again after [`Proxy::cut`].
    pub fn restore(&self) {
        self.up.send_replace(true);
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Lets held and later connections through.
    pub fn release(&self) {
        self.open.send_replace(true);
    }

    /// Waits until it has accepted a first connection.
    pub async fn first_connection(&self) {
        let mut accepted = self.accepted.clone();
        accepted.wait_for(|n| *n > 0).await.unwrap();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
