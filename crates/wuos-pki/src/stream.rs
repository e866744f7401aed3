//! Tokio adapters: [`accept`] (server side of a TCP stream), [`handshake`] (client side of a TCP
//! stream) and [`connect`] (TCP connect, then [`handshake`]), each bounded by a timeout and
//! returning the peer's verified [`Identity`] or why it was refused.

use std::net::SocketAddr;
use std::time::Duration;

use rustls_pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, TlsConnector, client, server};
use wuos_model::RouterId;

use crate::context::TlsContext;
use crate::identity::Identity;
use crate::refusal::{Refusal, Refused};

/// The server side of an established TLS connection.
pub type ServerTlsStream = server::TlsStream<TcpStream>;
/// The client side of an established TLS connection.
pub type ClientTlsStream = client::TlsStream<TcpStream>;

/// Why [`connect`] failed: no TCP connection, or a refused handshake.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connection could not be made (nothing listens, unreachable, timed out).
    #[error("cannot connect to {addr}")]
    Tcp {
        /// The address.
        addr: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The TLS handshake failed or the peer was refused.
    #[error(transparent)]
    Refused(#[from] Refused),
}

impl ConnectError {
    /// The refusal, if the TCP connection was made and the handshake failed.
    pub fn refusal(&self) -> Option<Refusal> {
        match self {
            ConnectError::Tcp { .. } => None,
            ConnectError::Refused(r) => Some(r.reason),
        }
    }
}

fn identity_of(certs: Option<&[rustls_pki_types::CertificateDer<'static>]>) -> Result<Identity, Refused> {
    let der = certs
        .and_then(|c| c.first())
        .ok_or_else(|| Refused::new(Refusal::NoCertificate, "the peer presented no certificate"))?;
    // The verifier has already read it; this only fails if it is not the same certificate.
    Identity::from_der(der).map_err(|e| Refused::new(Refusal::NotARouterCert, e.to_string()))
}

fn timed_out(timeout: Duration) -> Refused {
    Refused::new(Refusal::Handshake, format!("no TLS handshake within {timeout:?}"))
}

/// Runs the server side of a handshake on `tcp`: the client must present a certificate of the CA,
/// not revoked, in its validity, with a wuos identity. Which router it is, the caller checks
/// against the id the client claims ([`Identity::check_claim`]).
pub async fn accept(
    ctx: &TlsContext,
    tcp: TcpStream,
    timeout: Duration,
) -> Result<(ServerTlsStream, Identity), Refused> {
    let acceptor = TlsAcceptor::from(ctx.server_config());
    let stream = tokio::time::timeout(timeout, acceptor.accept(tcp))
        .await
        .map_err(|_| timed_out(timeout))?
        .map_err(|e| Refused::from_io(&e))?;
    let id = identity_of(stream.get_ref().1.peer_certificates())?;
    Ok((stream, id))
}

/// Runs the client side of a handshake on `tcp`: the server must present a certificate of the CA,
/// not revoked, in its validity, that names `expected`.
///
/// In TLS 1.3 the client is done before the server has judged the client's certificate: if the
/// server refuses it, this returns `Ok` and the first read fails ([`Refused::from_io`] tells why).
pub async fn handshake(
    ctx: &TlsContext,
    tcp: TcpStream,
    expected: &RouterId,
    timeout: Duration,
) -> Result<(ClientTlsStream, Identity), Refused> {
    let peer = tcp
        .peer_addr()
        .map_err(|e| Refused::new(Refusal::Handshake, format!("the socket has no peer: {e}")))?;
    // The name is not checked (the verifier checks the router id) and, an address, sends no SNI.
    let name = ServerName::IpAddress(peer.ip().into());
    let connector = TlsConnector::from(ctx.client_config(expected));
    let stream = tokio::time::timeout(timeout, connector.connect(name, tcp))
        .await
        .map_err(|_| timed_out(timeout))?
        .map_err(|e| Refused::from_io(&e))?;
    let id = identity_of(stream.get_ref().1.peer_certificates())?;
    Ok((stream, id))
}

/// Connects to `addr` and runs [`handshake`], all within `timeout`.
pub async fn connect(
    ctx: &TlsContext,
    addr: SocketAddr,
    expected: &RouterId,
    timeout: Duration,
) -> Result<(ClientTlsStream, Identity), ConnectError> {
    let started = tokio::time::Instant::now();
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, format!("no answer within {timeout:?}")))
        .and_then(|r| r)
        .map_err(|source| ConnectError::Tcp {
            addr: addr.to_string(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let left = timeout.saturating_sub(started.elapsed());
    Ok(handshake(ctx, tcp, expected, left).await?)
}
