//! Loopback listeners: accept TCP, set `TCP_NODELAY` (TOOLING.md: otherwise
//! kept-alive loopback connections stall ~40 ms per request), optionally
//! terminate TLS, and serve an axum router with hyper-util's auto builder
//! (HTTP/1.1 and HTTP/2; with TLS, HTTP/2 is chosen by ALPN).
//!
//! A listener can be stopped (the port then refuses connections and every
//! open connection is dropped) and started again on the same address.
//! Each connection's peer address is available to handlers as
//! `ConnectInfo<SocketAddr>`.

use std::net::SocketAddr;
use std::sync::Mutex;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;

use crate::state::lock;

/// Pause after a failed `accept` (e.g. EMFILE) so the loop does not spin.
const ACCEPT_ERROR_PAUSE: std::time::Duration = std::time::Duration::from_millis(20);

/// One listening server.
pub struct Server {
    addr: SocketAddr,
    router: Router,
    tls: Option<TlsAcceptor>,
    task: Mutex<Option<JoinHandle<()>>>,
    /// While stopped: a socket bound to `addr` but not listening. Connections
    /// are still refused (no listener), but no other server, e.g. a parallel
    /// test's emulator asking for port 0, can take the port meanwhile.
    reserved: Mutex<Option<tokio::net::TcpSocket>>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.addr)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Server {
    /// Binds `addr` (port 0 = any free port) and starts serving.
    pub async fn bind(
        addr: SocketAddr,
        router: Router,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(accept_loop(listener, router.clone(), tls.clone()));
        Ok(Self {
            addr,
            router,
            tls,
            task: Mutex::new(Some(task)),
            reserved: Mutex::new(None),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn is_running(&self) -> bool {
        lock(&self.task).is_some()
    }

    /// Stops listening and drops every open connection: new connections are
    /// refused (ECONNREFUSED) until [`Server::start`].
    pub async fn stop(&self) {
        let task = lock(&self.task).take();
        if let Some(task) = task {
            task.abort();
            // Wait for the abort so the listening socket is closed on return.
            let _ = task.await;
        }
        *lock(&self.reserved) = reserve(self.addr).ok();
    }

    /// Listens again on the same address (no-op if running).
    pub async fn start(&self) -> std::io::Result<()> {
        if self.is_running() {
            return Ok(());
        }
        lock(&self.reserved).take();
        let listener = TcpListener::bind(self.addr).await?;
        let task = tokio::spawn(accept_loop(listener, self.router.clone(), self.tls.clone()));
        let mut slot = lock(&self.task);
        if let Some(old) = slot.replace(task) {
            old.abort();
        }
        Ok(())
    }
}

/// Bind `addr` without listening and without SO_REUSEADDR, so the port
/// stays ours (and refuses connections) until dropped.
fn reserve(addr: SocketAddr) -> std::io::Result<tokio::net::TcpSocket> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(false)?;
    socket.bind(addr)?;
    Ok(socket)
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(task) = lock(&self.task).take() {
            task.abort();
        }
    }
}

/// Accepts until aborted; connections live in a `JoinSet`, so aborting this
/// task drops them all.
async fn accept_loop(listener: TcpListener, router: Router, tls: Option<TlsAcceptor>) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::warn!(error = %e, "cannot set TCP_NODELAY");
                    }
                    conns.spawn(serve_connection(stream, peer, router.clone(), tls.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    tls: Option<TlsAcceptor>,
) {
    let service = TowerToHyperService::new(router.layer(axum::Extension(ConnectInfo(peer))));
    let builder = auto::Builder::new(TokioExecutor::new());
    let result = match tls {
        None => {
            builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .await
        }
        Some(acceptor) => match acceptor.accept(stream).await {
            Ok(tls_stream) => {
                builder
                    .serve_connection_with_upgrades(TokioIo::new(tls_stream), service)
                    .await
            }
            Err(e) => {
                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                return;
            }
        },
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}
