//! [`TlsContext`]: a router's TLS material read from [`TlsFiles`], the rustls server and client
//! configs made from it, and reloading it (rotation) without touching established sessions.
//!
//! ```text
//!  TlsFiles ──read──▶ Material ──▶ Shared (RwLock<Arc<Material>>)
//!                                     ▲      ▲           ▲
//!             reload() swaps it ──────┘      │           │
//!   ServerConfig: ClientVerifier + OwnCert ──┘           │   (one, shared)
//!   ClientConfig: ServerVerifier(expected) + OwnCert ────┘   (one per expected router)
//! ```
//!
//! Established TLS streams hold their keys and never look at the material again, so a reload
//! only changes the handshakes that start after it. Session resumption is off on both sides:
//! every connection is a full handshake, so every connection is checked against the CRL in force
//! (a resumed session would skip the certificate check).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use rustls::client::Resumption;
use rustls::crypto::CryptoProvider;
use rustls::server::NoServerSessionStorage;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use webpki::{CertRevocationList, OwnedCertRevocationList};
use wuos_model::{Classify, ErrorClass, RouterId};

use crate::identity::{Identity, IdentityError};
use crate::verify::{ClientVerifier, Material, OwnCert, ServerVerifier, Shared};

/// The ALPN protocol both sides offer: gRPC is HTTP/2.
const ALPN_H2: &[u8] = b"h2";

/// The files a router's TLS context reads. Every path is given; [`TlsFiles::in_pki_dir`] names
/// the ones of a PKI directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) to trust (PEM; several during a CA change).
    pub ca: PathBuf,
    /// The router's certificate (PEM; the first is its own, any others its chain).
    pub cert: PathBuf,
    /// The router's private key (PEM, PKCS#8).
    pub key: PathBuf,
    /// The CRL(s) (PEM; at least one).
    pub crl: PathBuf,
}

impl TlsFiles {
    /// The files of `router` in a PKI directory laid out as [`crate::Pki`] does.
    pub fn in_pki_dir(dir: &Path, router: &RouterId) -> TlsFiles {
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("routers").join(format!("{router}.pem")),
            key: dir.join("routers").join(format!("{router}.key")),
            crl: dir.join("crl.pem"),
        }
    }

    fn all(&self) -> [&Path; 4] {
        [&self.ca, &self.cert, &self.key, &self.crl]
    }
}

/// Why TLS material could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file that cannot be read.
    #[error("cannot read {}", .path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file whose PEM does not parse, or holds none of what it should.
    #[error("{} holds no usable {what}: {reason}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// `"certificate"`, `"private key"`, `"CRL"`.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The router's certificate carries no wuos identity.
    #[error("{} is not a router certificate", .path.display())]
    Identity {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: IdentityError,
    },
    /// The key is not the certificate's (caught mid-rotation: the key was replaced, the
    /// certificate not yet). The material in force is kept.
    #[error("the key {} does not belong to the certificate {} ({reason})", .key.display(), .cert.display())]
    KeyMismatch {
        /// The key file.
        key: PathBuf,
        /// The certificate file.
        cert: PathBuf,
        /// rustls' reason.
        reason: String,
    },
    /// rustls refused to build a config.
    #[error("cannot build the TLS configuration: {0}")]
    Config(String),
}

impl Classify for TlsError {
    fn class(&self) -> ErrorClass {
        match self {
            TlsError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound => ErrorClass::NotFound,
            TlsError::Read { .. } | TlsError::Config(_) => ErrorClass::Internal,
            TlsError::Pem { .. } | TlsError::Identity { .. } | TlsError::KeyMismatch { .. } => ErrorClass::BadInput,
        }
    }
}

/// What identifies a version of a file: replaced atomically, a file gets a new inode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    ino: u64,
}

fn stamps(files: &TlsFiles) -> [Option<Stamp>; 4] {
    files.all().map(|p| {
        fs::metadata(p).ok().map(|m| Stamp {
            modified: m.modified().ok(),
            len: m.len(),
            ino: m.ino(),
        })
    })
}

/// A router's TLS material and the rustls configs that use it. Cheap to clone (one shared
/// state); configs handed out earlier follow [`TlsContext::reload`].
#[derive(Clone)]
pub struct TlsContext {
    inner: Arc<Inner>,
}

struct Inner {
    files: TlsFiles,
    provider: Arc<CryptoProvider>,
    shared: Arc<Shared>,
    server: Arc<ServerConfig>,
    loaded: Mutex<[Option<Stamp>; 4]>,
}

impl std::fmt::Debug for TlsContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsContext")
            .field("files", &self.inner.files)
            .field("identity", &self.identity())
            .finish_non_exhaustive()
    }
}

impl TlsContext {
    /// Reads the files and builds the configs.
    pub fn load(files: TlsFiles) -> Result<TlsContext, TlsError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let seen = stamps(&files);
        let shared = Arc::new(Shared::new(read_material(&files, &provider)?));
        let algs = provider.signature_verification_algorithms;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_client_cert_verifier(Arc::new(ClientVerifier {
                shared: shared.clone(),
                algs,
            }))
            .with_cert_resolver(Arc::new(OwnCert { shared: shared.clone() }));
        server.session_storage = Arc::new(NoServerSessionStorage {});
        server.send_tls13_tickets = 0;
        server.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(TlsContext {
            inner: Arc::new(Inner {
                files,
                provider,
                shared,
                server: Arc::new(server),
                loaded: Mutex::new(seen),
            }),
        })
    }

    /// The files it reads.
    pub fn files(&self) -> &TlsFiles {
        &self.inner.files
    }

    /// The router's own identity, as its certificate in force says.
    pub fn identity(&self) -> Identity {
        self.inner.shared.current().identity.clone()
    }

    /// The server config: requires a client certificate issued by the CA, not revoked, in its
    /// validity, with a wuos identity (which router it is, the caller checks once the client has
    /// claimed an id: [`Identity::check_claim`]). One config, shared by every accept.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.inner.server.clone()
    }

    /// A client config that presents the router's certificate and accepts only a server whose
    /// certificate is issued by the CA, not revoked, in its validity, and names `expected`.
    pub fn client_config(&self, expected: &RouterId) -> Arc<ClientConfig> {
        let shared = &self.inner.shared;
        let mut config = ClientConfig::builder_with_provider(self.inner.provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .expect("the aws-lc-rs provider supports TLS 1.3")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ServerVerifier {
                shared: shared.clone(),
                algs: self.inner.provider.signature_verification_algorithms,
                expected: expected.clone(),
            }))
            .with_client_cert_resolver(Arc::new(OwnCert { shared: shared.clone() }));
        config.resumption = Resumption::disabled();
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Arc::new(config)
    }

    /// Reads the files again and puts them in force for new handshakes; established streams are
    /// untouched. All or nothing: if a file is missing, damaged, or the key does not match the
    /// certificate, the error is returned and the material in force stays. Returns the router's
    /// identity now in force.
    pub fn reload(&self) -> Result<Identity, TlsError> {
        let mut loaded = self.inner.loaded.lock().unwrap_or_else(|p| p.into_inner());
        let seen = stamps(&self.inner.files);
        let m = read_material(&self.inner.files, &self.inner.provider)?;
        let id = m.identity.clone();
        self.inner.shared.replace(m);
        *loaded = seen;
        Ok(id)
    }

    /// [`TlsContext::reload`] if a file changed (another inode, size or mtime) since the last
    /// successful load; `Ok(true)` if it reloaded. A failed reload is tried again next time.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let unchanged = {
            let loaded = self.inner.loaded.lock().unwrap_or_else(|p| p.into_inner());
            *loaded == stamps(&self.inner.files)
        };
        if unchanged {
            return Ok(false);
        }
        self.reload().map(|_| true)
    }
}

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn pem_error<'a>(path: &'a Path, what: &'static str) -> impl Fn(rustls_pki_types::pem::Error) -> TlsError + 'a {
    move |e| TlsError::Pem {
        path: path.to_path_buf(),
        what,
        reason: e.to_string(),
    }
}

fn read_material(files: &TlsFiles, provider: &CryptoProvider) -> Result<Material, TlsError> {
    let ca = read(&files.ca)?;
    let mut anchors = Vec::new();
    for der in CertificateDer::pem_slice_iter(&ca) {
        let der = der.map_err(pem_error(&files.ca, "certificate"))?;
        let anchor = webpki::anchor_from_trusted_cert(&der).map_err(|e| TlsError::Pem {
            path: files.ca.clone(),
            what: "certificate",
            reason: e.to_string(),
        })?;
        anchors.push(anchor.to_owned());
    }
    if anchors.is_empty() {
        return Err(TlsError::Pem {
            path: files.ca.clone(),
            what: "certificate",
            reason: "it has no CERTIFICATE block".into(),
        });
    }

    let crl_pem = read(&files.crl)?;
    let mut crls = Vec::new();
    for der in CertificateRevocationListDer::pem_slice_iter(&crl_pem) {
        let der = der.map_err(pem_error(&files.crl, "CRL"))?;
        let crl = OwnedCertRevocationList::from_der(der.as_ref()).map_err(|e| TlsError::Pem {
            path: files.crl.clone(),
            what: "CRL",
            reason: e.to_string(),
        })?;
        crls.push(CertRevocationList::from(crl));
    }
    if crls.is_empty() {
        // Without a CRL nothing would be checked for revocation: refuse rather than trust all.
        return Err(TlsError::Pem {
            path: files.crl.clone(),
            what: "CRL",
            reason: "it has no X509 CRL block".into(),
        });
    }

    let cert_pem = read(&files.cert)?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_error(&files.cert, "certificate"))?;
    let Some(own) = chain.first() else {
        return Err(TlsError::Pem {
            path: files.cert.clone(),
            what: "certificate",
            reason: "it has no CERTIFICATE block".into(),
        });
    };
    let identity = Identity::from_der(own).map_err(|source| TlsError::Identity {
        path: files.cert.clone(),
        source,
    })?;
    let key = PrivateKeyDer::from_pem_slice(&read(&files.key)?).map_err(pem_error(&files.key, "private key"))?;
    let certified = CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::KeyMismatch {
        key: files.key.clone(),
        cert: files.cert.clone(),
        reason: e.to_string(),
    })?;
    Ok(Material {
        anchors,
        crls,
        certified: Arc::new(certified),
        identity,
    })
}
