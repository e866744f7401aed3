//! # Layout
//!
//! - [`ca`](mod@ca): the CA and its directory: [`Pki::init`], [`Pki::open`], [`Pki::issue`] and
//!   [`Pki::issue_many`] (issue, rotate), [`Pki::revoke`] ([`RevokeTarget`]), [`Pki::list`];
//!   [`PkiError`].
//! - [`index`]: `index.json`, every certificate issued ([`IndexEntry`]) and the CRL's number.
//! - [`identity`]: what a certificate says ([`Identity`]: router id, [`Role`](wuos_model::Role),
//!   [`Capability`]s, serial, expiry), how it is encoded in it and read back.
//! - [`refusal`]: why a peer was refused ([`Refusal`], with a stable label each; [`Refused`]
//!   with its detail), mapped from rustls' errors and alerts.
//! - [`context`]: [`TlsContext`] over [`TlsFiles`]: the rustls server and client configs, and
//!   [`TlsContext::reload`] (rotation without dropping sessions); [`TlsError`].
//! - `verify`: the rustls hooks behind the configs (verifiers of the peer's certificate with
//!   webpki and the CRL, resolvers of the own certificate) over the reloadable material.
//! - [`stream`]: tokio adapters [`accept`], [`handshake`], [`connect`], each with a timeout.
//! - [`grpc`]: tonic glue, [`incoming`] (verified connections for `serve_with_incoming`, whose
//!   [`PeerInfo`] handlers read from the request's extensions) and [`GrpcConnector`] (for
//!   `Endpoint::connect_with_connector`).
//! - `disk`: atomic file replacement and the directory lock.
//!
//! # The PKI
//!
//! One private CA per deployment (ECDSA P-256, self-signed, path length 0) and one certificate
//! per router (ECDSA P-256, a new key each time, 16-byte random serial, EKU serverAuth and
//! clientAuth: a router is both a gRPC server and a client). The router's identity is in the
//! certificate's subjectAltName as URIs, and its id is also the subject's CN:
//!
//! ```text
//! CN=r1, O=wuos
//! SAN URI urn:wuos:router:r1, urn:wuos:role:fog, urn:wuos:may:orchestrator, urn:wuos:may:controller
//! ```
//!
//! On disk (every path under a directory given by the caller; `wuos pki` defaults it to
//! `/var/lib/wuos/pki`): `ca.pem`, `ca.key` (0600), `routers/<id>.pem` + `<id>.key` (0600),
//! `crl.pem` (always there after init, signed by the CA, its number growing with each revocation)
//! and `index.json`. Every file is replaced atomically (temporary file, fsync, rename), so a
//! daemon that reloads never reads half a file.
//!
//! **Rotation.** Issuing again for a router writes a new key and certificate with a new serial
//! over its files. The old certificate stays valid until revoked, so routers that still run with
//! it are not locked out; the daemon calls [`TlsContext::reload`] (or polls
//! [`TlsContext::reload_if_changed`]) and new handshakes present the new certificate while
//! established sessions go on. Then [`RevokeTarget::Superseded`] revokes all but the newest.
//!
//! **Revocation.** [`RevokeTarget::Serial`] revokes one certificate; [`RevokeTarget::Router`]
//! every certificate of the router, including its newest (the router is no longer trusted at
//! all); [`RevokeTarget::Superseded`] all but the newest. The CRL lists every revoked
//! certificate and is signed again (with the next number) at each revocation; peers see it after
//! their next reload. Its nextUpdate (a year on) is not enforced, so an old CRL never locks the
//! network out.
//!
//! # Verification
//!
//! rustls' own `WebPkiServerVerifier` matches a DNS name or IP address, but a router id such as
//! `r_1` or a 64-character id is no valid DNS label, so neither side uses names. Both sides verify
//! the peer's certificate with webpki against the CA certificates (path, validity, EKU) and the
//! CRL (a certificate whose status the CRL cannot tell is refused), then read its identity (no
//! identity: `not_a_router_cert`). A client also requires the router id it expected
//! (`identity_mismatch`); a server learns the client's claimed id only from the protocol's first
//! message, so the daemon checks it with [`Identity::check_claim`]. TLS 1.3 only; no session
//! resumption, so every connection is checked against the CRL in force.
//!
//! # Speed
//!
//! Issuing 1,000 certificates with [`Pki::issue_many`] (one lock, one index write, all files
//! flushed by one `syncfs`) takes 0.27 s and 0.37 s (medians of 3 runs in two sessions; single
//! runs 0.21–0.49 s, the spread being the disk flush) on the 2-core development VM, ext4 on a
//! virtio disk; 98 ms of that is key generation, signing and writing (the same run on tmpfs).
//! 1,000 separate [`Pki::issue`] calls take about 19–20 s (each rewrites the index and flushes
//! the disk twice), so a lab issues its certificates in one batch. Reproduce with
//! `cargo bench -p wuos-pki --bench issue -- --dir DIR_ON_THE_TARGET_DISK`.
//!
//! The whole story for users is `docs/pki.md`.

pub mod ca;
pub mod context;
mod disk;
pub mod grpc;
pub mod identity;
pub mod index;
pub mod refusal;
pub mod stream;
mod verify;

pub use ca::{InitOptions, IssueRequest, Pki, PkiError, RevokeTarget, Validity};
pub use context::{TlsContext, TlsError, TlsFiles};
pub use grpc::{GrpcConnector, Incoming, IncomingOptions, PeerInfo, TlsConnection, incoming};
pub use identity::{Capability, CapabilityError, Identity, IdentityError};
pub use index::IndexEntry;
pub use refusal::{Refusal, Refused};
pub use stream::{ClientTlsStream, ConnectError, ServerTlsStream, accept, connect, handshake};
pub use time;
