//! The framed link (protocol 2.4): a `Neighbor.Link`'s frames written straight onto the TCP or
//! TLS stream, without HTTP/2 — no connection task, stream task, flow-control windows or gRPC
//! framing per link (a profile put `h2` at about a fifth of a large lab's busy samples, socket
//! I/O included; doing without it measured about 7 % less CPU at 1,000 routers, within the
//! spread between labs: docs/benchmarks.md).
//!
//! ```text
//!  dialer                                         server (the protocol port)
//!  MAGIC ───────────────────────────────────────▶ first 8 bytes: MAGIC → framed link,
//!                                                 anything else (HTTP/2's preface) → tonic
//!        ◀─────────────────────────────────────── MAGIC
//!  record(first frame: hello) ──────────────────▶ checked as Neighbor.Link's first frame
//!  records ◀──────────────────────────────────▶ records, until either side closes
//! ```
//!
//! A record is a 4-byte big-endian word and what it announces: bit 31 clear, a protobuf
//! `Frame` of that many bytes; bit 31 set, the sender closes the link and the rest of the word is
//! the length of its UTF-8 reason. A record over [`MAX_MESSAGE_BYTES`] closes the link. A dialer
//! whose server does not answer `MAGIC` (a 2.3 router: HTTP/2 answers with its own preface) opens
//! the gRPC `Neighbor.Link` instead, so routers of both versions keep their links.
//!
//! The link's task is the protocol component's (`crate::protocol::run_framed`); the
//! demultiplexer on the protocol port is the server's (`crate::server::demux`).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use prost::Message;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;
use wuos_proto::MAX_MESSAGE_BYTES;
use wuos_proto::pb;

/// What both ends of a framed link send first. The leading zero byte keeps it apart from
/// HTTP/2's preface (`PRI * HTTP/2.0…`).
pub const MAGIC: [u8; 8] = *b"\0WUOSLK1";

const CLOSE_BIT: u32 = 1 << 31;

/// Frames queued together are written together up to this many bytes.
const WRITE_BATCH: usize = 64 * 1024;

/// A byte stream to or from a neighbor: TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// One record read off a link.
#[derive(Debug, PartialEq)]
pub enum Record {
    /// A frame and its encoded length.
    Frame(Box<pb::Frame>, usize),
    /// The peer closes the link, saying why.
    Close(String),
}

/// Why a link's records stopped.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("a record of {0} bytes, the limit is {MAX_MESSAGE_BYTES}")]
    TooLarge(usize),
    #[error("an undecodable frame: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("stream error: {0}")]
    Io(#[from] io::Error),
}

impl ReadError {
    /// The refusal counter's label, when it is one.
    pub fn label(&self) -> Option<&'static str> {
        match self {
            ReadError::TooLarge(_) => Some("too_large"),
            ReadError::Decode(_) => Some("undecodable"),
            ReadError::Io(_) => None,
        }
    }
}

/// Appends `frame` as a record.
pub fn put_frame(buf: &mut Vec<u8>, frame: &pb::Frame) {
    let len = frame.encoded_len();
    buf.extend_from_slice(&(len as u32).to_be_bytes());
    frame.encode(buf).expect("a Vec grows");
}

/// Appends a close record saying `reason` (cut to the record limit).
pub fn put_close(buf: &mut Vec<u8>, reason: &str) {
    let mut end = reason.len().min(MAX_MESSAGE_BYTES);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    buf.extend_from_slice(&(end as u32 | CLOSE_BIT).to_be_bytes());
    buf.extend_from_slice(&reason.as_bytes()[..end]);
}

/// The next record, or `None` when the stream ended cleanly between records. `buf` is reused.
pub async fn read_record<R: AsyncRead + Unpin>(r: &mut R, buf: &mut Vec<u8>) -> Result<Option<Record>, ReadError> {
    let mut word = [0u8; 4];
    // A clean end is one at a record boundary.
    let n = r.read(&mut word).await?;
    if n == 0 {
        return Ok(None);
    }
    r.read_exact(&mut word[n..]).await?;
    let word = u32::from_be_bytes(word);
    let len = (word & !CLOSE_BIT) as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(ReadError::TooLarge(len));
    }
    buf.resize(len, 0);
    r.read_exact(buf).await?;
    if word & CLOSE_BIT != 0 {
        return Ok(Some(Record::Close(String::from_utf8_lossy(buf).into_owned())));
    }
    Ok(Some(Record::Frame(Box::new(pb::Frame::decode(&buf[..])?), len)))
}

/// Writes a close record and ends the stream (best effort: the peer may be gone).
pub async fn refuse(mut io: impl AsyncWrite + Unpin, reason: &str) {
    let mut buf = Vec::new();
    put_close(&mut buf, reason);
    let _ = io.write_all(&buf).await;
    let _ = io.shutdown().await;
}

/// Writes the queued frames, those queued together in one write; ends the stream when the queue
/// is dropped (the protocol task closed the link).
pub async fn write_loop(mut w: impl AsyncWrite + Unpin, mut rx: mpsc::Receiver<pb::Frame>) -> String {
    let mut buf = Vec::with_capacity(8 * 1024);
    while let Some(frame) = rx.recv().await {
        buf.clear();
        put_frame(&mut buf, &frame);
        while buf.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(f) => put_frame(&mut buf, &f),
                Err(_) => break,
            }
        }
        let wrote = async {
            w.write_all(&buf).await?;
            w.flush().await
        };
        if let Err(e) = wrote.await {
            return format!("stream error: {e}");
        }
    }
    let _ = w.shutdown().await;
    "closed by this router".into()
}

/// What a dialer learned from the server's first bytes.
#[derive(Debug)]
pub enum Opening<S> {
    /// The server speaks framed links: `S` is ready for records.
    Framed(S),
    /// The server answered something else (HTTP/2: a 2.3 router) or closed the connection.
    NotFramed,
}

/// The dialer's side of the opening: sends [`MAGIC`] and reads the server's.
pub async fn open<S: AsyncRead + AsyncWrite + Unpin>(mut io: S, timeout: Duration) -> Result<Opening<S>, String> {
    let mut head = [0u8; 8];
    let exchange = async {
        io.write_all(&MAGIC).await?;
        io.flush().await?;
        io.read_exact(&mut head).await
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(Ok(_)) if head == MAGIC => Ok(Opening::Framed(io)),
        Ok(Ok(_)) => Ok(Opening::NotFramed),
        Ok(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(Opening::NotFramed),
        Ok(Err(e)) => Err(format!("the link's opening failed: {e}")),
        Err(_) => Err(format!("no answer to the link's opening within {timeout:?}")),
    }
}

/// A stream whose first bytes were already read: they are read again first. What the
/// demultiplexer hands to the gRPC server.
#[derive(Debug)]
pub struct Prefixed<S> {
    head: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    pub fn new(head: Vec<u8>, inner: S) -> Prefixed<S> {
        Prefixed { head, at: 0, inner }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.at < this.head.len() {
            let n = (this.head.len() - this.at).min(buf.remaining());
            buf.put_slice(&this.head[this.at..this.at + n]);
            this.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

impl<S: tonic::transport::server::Connected> tonic::transport::server::Connected for Prefixed<S> {
    type ConnectInfo = S::ConnectInfo;

    fn connect_info(&self) -> S::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(sender: &str, sent_us: u64) -> pb::Frame {
        pb::Frame {
            header: Some(pb::Header {
                version: wuos_proto::PROTOCOL_VERSION,
                sender: sender.into(),
            }),
            sent_us,
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn records_survive_the_trip_and_bad_ones_end_the_stream() {
        let mut bytes = Vec::new();
        put_frame(&mut bytes, &frame("a", 1));
        put_frame(&mut bytes, &frame("a", 2));
        put_close(&mut bytes, "going away");
        let mut r = &bytes[..];
        let mut buf = Vec::new();
        let one = read_record(&mut r, &mut buf).await.unwrap().unwrap();
        assert_eq!(one, Record::Frame(Box::new(frame("a", 1)), frame("a", 1).encoded_len()));
        let two = read_record(&mut r, &mut buf).await.unwrap().unwrap();
        assert_eq!(two, Record::Frame(Box::new(frame("a", 2)), frame("a", 2).encoded_len()));
        assert_eq!(
            read_record(&mut r, &mut buf).await.unwrap(),
            Some(Record::Close("going away".into()))
        );
        assert_eq!(read_record(&mut r, &mut buf).await.unwrap(), None);

        // Over the limit: refused before its body is read.
        let big = ((MAX_MESSAGE_BYTES + 1) as u32).to_be_bytes();
        let e = read_record(&mut &big[..], &mut buf).await.unwrap_err();
        assert!(matches!(e, ReadError::TooLarge(n) if n == MAX_MESSAGE_BYTES + 1), "{e}");
        assert_eq!(e.label(), Some("too_large"));
        // Not protobuf.
        let mut junk = 3u32.to_be_bytes().to_vec();
        junk.extend([0xff, 0xff, 0xff]);
        let e = read_record(&mut &junk[..], &mut buf).await.unwrap_err();
        assert_eq!(e.label(), Some("undecodable"), "{e}");
        // Cut in the middle of a record: an error, not a clean end.
        let mut cut = Vec::new();
        put_frame(&mut cut, &frame("a", 3));
        cut.truncate(cut.len() - 1);
        assert!(matches!(
            read_record(&mut &cut[..], &mut buf).await,
            Err(ReadError::Io(_))
        ));
        assert!(matches!(
            read_record(&mut &cut[..2], &mut buf).await,
            Err(ReadError::Io(_))
        ));
    }

    #[test]
    fn a_close_reason_is_cut_at_a_character() {
        let mut buf = Vec::new();
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        put_close(&mut buf, &long);
        let word = u32::from_be_bytes(buf[..4].try_into().unwrap());
        let len = (word & !CLOSE_BIT) as usize;
        assert!(len <= MAX_MESSAGE_BYTES && len.is_multiple_of(2), "{len}");
        assert_eq!(buf.len(), 4 + len);
    }

    #[tokio::test]
    async fn the_opening_tells_framed_servers_from_others() {
        // A framed server answers the magic.
        let (client, mut server) = tokio::io::duplex(1024);
        let s = tokio::spawn(async move {
            let mut head = [0u8; 8];
            server.read_exact(&mut head).await.unwrap();
            assert_eq!(head, MAGIC);
            server.write_all(&MAGIC).await.unwrap();
            server
        });
        assert!(matches!(
            open(client, Duration::from_secs(5)).await,
            Ok(Opening::Framed(_))
        ));
        drop(s.await.unwrap());
        // HTTP/2 answers with its SETTINGS frame.
        let (client, mut server) = tokio::io::duplex(1024);
        tokio::spawn(async move {
            server
                .write_all(&[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100])
                .await
                .unwrap();
            let mut sink = Vec::new();
            let _ = server.read_to_end(&mut sink).await;
        });
        assert!(matches!(
            open(client, Duration::from_secs(5)).await,
            Ok(Opening::NotFramed)
        ));
        // One that closes.
        let (client, server) = tokio::io::duplex(1024);
        drop(server);
        assert!(matches!(
            open(client, Duration::from_secs(5)).await,
            Ok(Opening::NotFramed) | Err(_)
        ));
        // One that says nothing.
        let (client, _server) = tokio::io::duplex(1024);
        let e = open(client, Duration::from_millis(50)).await.unwrap_err();
        assert!(e.contains("no answer"), "{e}");
    }

    #[tokio::test]
    async fn a_prefixed_stream_reads_its_head_first() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"world").await.unwrap();
        drop(a);
        let mut p = Prefixed::new(b"hello ".to_vec(), b);
        let mut s = String::new();
        p.read_to_string(&mut s).await.unwrap();
        assert_eq!(s, "hello world");
    }
}
