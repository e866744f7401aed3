//! tonic glue: [`incoming`] (a stream of verified connections for
//! `Server::builder().serve_with_incoming(…)`) and [`GrpcConnector`] (for
//! `Endpoint::connect_with_connector(…)`).
//!
//! ```text
//!            accept task (one)                      handshake tasks (≤ max_handshakes)
//! listener ──accept──▶ spawn per TCP connection ──▶ accept(ctx, tcp, timeout)
//!                                                     │ Ok  ─▶ channel ─▶ Incoming ─▶ tonic
//!                                                     └ Err ─▶ on_refused(&Refused, peer addr)
//! ```
//!
//! Handshakes run concurrently, so a slow or bad client delays no one; at most `max_handshakes`
//! run at once (the accept task waits for one to finish beyond that). Dropping the [`Incoming`]
//! stops the accept task and the handshakes in flight.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tonic::codegen::http::Uri;
use tonic::transport::server::Connected;
use wuos_model::RouterId;

use crate::context::TlsContext;
use crate::identity::Identity;
use crate::refusal::Refused;
use crate::stream::{ClientTlsStream, ConnectError, ServerTlsStream, accept, connect};

/// Who is on the other end of an accepted connection; tonic puts it in every request's
/// extensions: `request.extensions().get::<PeerInfo>()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    /// The peer's address.
    pub addr: SocketAddr,
    /// The peer's verified identity.
    pub identity: Identity,
}

/// An accepted, verified TLS connection.
#[derive(Debug)]
pub struct TlsConnection {
    stream: ServerTlsStream,
    peer: PeerInfo,
}

impl TlsConnection {
    /// Who is on the other end.
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The TLS stream.
    pub fn into_inner(self) -> ServerTlsStream {
        self.stream
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Options of [`incoming`].
#[derive(Clone, Copy, Debug)]
pub struct IncomingOptions {
    /// How long a client has to complete its handshake.
    pub handshake_timeout: Duration,
    /// How many handshakes may run at once.
    pub max_handshakes: usize,
}

impl Default for IncomingOptions {
    fn default() -> Self {
        IncomingOptions {
            handshake_timeout: Duration::from_secs(5),
            max_handshakes: 256,
        }
    }
}

/// A stream of verified connections (see the module docs). Never yields an error: refused
/// handshakes go to the callback, and failed `accept`s are retried after a short pause.
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<TlsConnection>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Incoming {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl tokio_stream::Stream for Incoming {
    type Item = Result<TlsConnection, io::Error>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.get_mut().rx.poll_recv(cx).map(|c| c.map(Ok))
    }
}

/// Accepts TCP connections on `listener` and runs their handshakes concurrently; yields the
/// verified ones, and calls `on_refused` with each refusal and the peer's address (to count it).
/// Must be called within a tokio runtime.
pub fn incoming<F>(listener: TcpListener, ctx: TlsContext, opts: IncomingOptions, on_refused: F) -> Incoming
where
    F: Fn(&Refused, SocketAddr) + Send + Sync + 'static,
{
    let (tx, rx) = mpsc::channel(opts.max_handshakes.max(1));
    let on_refused = std::sync::Arc::new(on_refused);
    let task = tokio::spawn(async move {
        let mut handshakes = JoinSet::new();
        loop {
            while handshakes.len() >= opts.max_handshakes.max(1) {
                handshakes.join_next().await;
            }
            let (tcp, addr) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(_) => {
                        // Out of file descriptors and the like: pause, then go on.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                Some(_) = handshakes.join_next(), if !handshakes.is_empty() => continue,
                () = tx.closed() => return,
            };
            let _ = tcp.set_nodelay(true);
            let (ctx, tx, on_refused) = (ctx.clone(), tx.clone(), on_refused.clone());
            handshakes.spawn(async move {
                match accept(&ctx, tcp, opts.handshake_timeout).await {
                    Ok((stream, identity)) => {
                        let peer = PeerInfo { addr, identity };
                        let _ = tx.send(TlsConnection { stream, peer }).await;
                    }
                    Err(r) => on_refused(&r, addr),
                }
            });
        }
    });
    Incoming { rx, task }
}

/// A tonic connector (a `tower::Service<Uri>`): connects to the URI's host and port and runs the
/// client handshake, which accepts only a server whose certificate names `expected`.
#[derive(Clone, Debug)]
pub struct GrpcConnector {
    ctx: TlsContext,
    expected: RouterId,
    timeout: Duration,
}

impl GrpcConnector {
    /// A connector to `expected`, each connection (TCP and TLS) bounded by `timeout`.
    pub fn new(ctx: TlsContext, expected: RouterId, timeout: Duration) -> GrpcConnector {
        GrpcConnector { ctx, expected, timeout }
    }
}

impl tower::Service<Uri> for GrpcConnector {
    type Response = TokioIo<ClientTlsStream>;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, ConnectError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let tcp_error = |source| ConnectError::Tcp {
                addr: uri.to_string(),
                source,
            };
            let host = uri
                .host()
                .ok_or_else(|| tcp_error(io::Error::new(io::ErrorKind::InvalidInput, "the URI has no host")))?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            let port = uri
                .port_u16()
                .ok_or_else(|| tcp_error(io::Error::new(io::ErrorKind::InvalidInput, "the URI has no port")))?;
            let addr = tokio::net::lookup_host((host, port))
                .await
                .map_err(tcp_error)?
                .next()
                .ok_or_else(|| tcp_error(io::Error::new(io::ErrorKind::NotFound, "the host has no address")))?;
            let (stream, _) = connect(&this.ctx, addr, &this.expected, this.timeout).await?;
            Ok(TokioIo::new(stream))
        })
    }
}
