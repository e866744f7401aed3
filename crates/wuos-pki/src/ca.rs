//! The CA and its directory: [`Pki::init`], [`Pki::open`], [`Pki::issue`] / [`Pki::issue_many`]
//! (issue and rotate), [`Pki::revoke`], [`Pki::list`], and [`PkiError`].
//!
//! ```text
//! DIR/ca.pem               the CA certificate
//! DIR/ca.key               its private key (0600)
//! DIR/routers/<id>.pem     a router's newest certificate
//! DIR/routers/<id>.key     its private key (0600)
//! DIR/crl.pem              the CRL, signed by the CA (always there after init; may list nothing)
//! DIR/index.json           every certificate issued, and the CRL's number (see `index`)
//! DIR/.lock                taken while the directory is changed
//! ```
//!
//! Every file is replaced atomically (see `disk`). Changes to the directory are serialised by
//! `DIR/.lock`; the index is re-read under the lock, so two processes never lose each other's
//! entries.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};
use wuos_model::{Classify, ErrorClass, IdError, Role, RouterId, TopologyErrorKind};

use crate::disk::{DirLock, PRIVATE, PUBLIC, Staged};
use crate::identity::{Capability, CapabilityError, Identity, san_uris, serial_hex};
use crate::index::{Index, IndexEntry};

/// How long a CRL says it is current. wuos does not enforce it (a CRL is signed again only when
/// something is revoked, and an old CRL must not lock routers out); it is there for other tools.
const CRL_NEXT_UPDATE: Duration = Duration::days(365);
/// How far back a new certificate's validity starts, for clocks a little behind.
const CLOCK_SKEW: Duration = Duration::minutes(5);

/// A PKI directory's problem.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// A router id that is not one.
    #[error(transparent)]
    BadRouter(#[from] IdError),
    /// A role that is not one.
    #[error(transparent)]
    BadRole(#[from] TopologyErrorKind),
    /// A capability that is not one.
    #[error(transparent)]
    BadCapability(#[from] CapabilityError),
    /// A validity that ends before it starts.
    #[error("the validity ends ({not_after}) before it starts ({not_before}); fix: give a positive number of days")]
    BadValidity {
        /// Its start.
        not_before: OffsetDateTime,
        /// Its end.
        not_after: OffsetDateTime,
    },
    /// No CA in the directory.
    #[error("no CA in {}: {} is missing; fix: create one with `wuos pki init --dir {}`", .dir.display(), .missing.display(), .dir.display())]
    NoCa {
        /// The directory.
        dir: PathBuf,
        /// The file that is not there.
        missing: PathBuf,
    },
    /// `init` over an existing CA without `force`.
    #[error("a CA already exists in {}; fix: keep it, or pass --force to start over (every certificate it issued stops being trusted)", .dir.display())]
    CaExists {
        /// The directory.
        dir: PathBuf,
    },
    /// `revoke` names nothing in the index.
    #[error("no certificate in {} has the serial or router {target:?}", .dir.display())]
    UnknownTarget {
        /// The directory.
        dir: PathBuf,
        /// What was named.
        target: String,
    },
    /// `revoke` names both a router and a serial.
    #[error("{target:?} is both a router and a serial in {}; fix: say router:{target} or serial:{target}", .dir.display())]
    AmbiguousTarget {
        /// The directory.
        dir: PathBuf,
        /// What was named.
        target: String,
    },
    /// A file that cannot be read or written.
    #[error("cannot {what} {}", .path.display())]
    Io {
        /// `"read"`, `"write"`, `"create"`, `"lock"`, ….
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A file of the directory that does not hold what it should.
    #[error("{} is damaged: {reason}", .path.display())]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rcgen refused to make a key, certificate or CRL.
    #[error("cannot make {what}: {reason}")]
    Generate {
        /// What was being made.
        what: String,
        /// rcgen's reason.
        reason: String,
    },
}

impl Classify for PkiError {
    fn class(&self) -> ErrorClass {
        match self {
            PkiError::BadRouter(_)
            | PkiError::BadRole(_)
            | PkiError::BadCapability(_)
            | PkiError::BadValidity { .. }
            | PkiError::AmbiguousTarget { .. } => ErrorClass::BadInput,
            PkiError::NoCa { .. } | PkiError::UnknownTarget { .. } => ErrorClass::NotFound,
            PkiError::CaExists { .. } => ErrorClass::Conflict,
            PkiError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound => ErrorClass::NotFound,
            PkiError::Io { .. } | PkiError::Damaged { .. } | PkiError::Generate { .. } => ErrorClass::Internal,
        }
    }
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> PkiError + 'a {
    move |source| PkiError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn gen_err(what: impl Into<String>) -> impl FnOnce(rcgen::Error) -> PkiError {
    let what = what.into();
    move |e| PkiError::Generate {
        what,
        reason: e.to_string(),
    }
}

/// Options of [`Pki::init`].
#[derive(Clone, Debug)]
pub struct InitOptions {
    /// Replace an existing CA (and forget everything it issued).
    pub force: bool,
    /// How long the CA certificate is valid.
    pub ca_validity: Duration,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            force: false,
            ca_validity: Duration::days(3650),
        }
    }
}

/// When a certificate is valid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Validity {
    /// Start (a certificate holds whole seconds: the fraction is dropped).
    pub not_before: OffsetDateTime,
    /// End (likewise).
    pub not_after: OffsetDateTime,
}

impl Validity {
    /// From a few minutes ago (for clocks a little behind) to `days` days from now.
    pub fn days(days: u32) -> Validity {
        let now = OffsetDateTime::now_utc();
        Validity {
            not_before: now - CLOCK_SKEW,
            not_after: now + Duration::days(i64::from(days)),
        }
    }
}

/// One certificate to issue.
#[derive(Clone, Debug)]
pub struct IssueRequest {
    /// The router.
    pub router: RouterId,
    /// Its role.
    pub role: Role,
    /// Its capabilities.
    pub capabilities: BTreeSet<Capability>,
    /// When the certificate is valid.
    pub validity: Validity,
}

/// What [`Pki::revoke`] revokes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RevokeTarget {
    /// Every unrevoked certificate of a router: it is no longer trusted at all (retired, or its
    /// key leaked).
    Router(RouterId),
    /// Every unrevoked certificate of a router except its newest: the end of a rotation, once
    /// the router runs with its new certificate.
    Superseded(RouterId),
    /// One certificate, by its serial (lowercase hex, as `list` shows it).
    Serial(String),
}

/// Paths of a PKI directory.
#[derive(Clone, Debug)]
struct Layout {
    dir: PathBuf,
}

impl Layout {
    fn ca_cert(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    fn ca_key(&self) -> PathBuf {
        self.dir.join("ca.key")
    }
    fn crl(&self) -> PathBuf {
        self.dir.join("crl.pem")
    }
    fn index(&self) -> PathBuf {
        self.dir.join("index.json")
    }
    fn lock(&self) -> PathBuf {
        self.dir.join(".lock")
    }
    fn routers(&self) -> PathBuf {
        self.dir.join("routers")
    }
    fn router_cert(&self, router: &RouterId) -> PathBuf {
        self.routers().join(format!("{router}.pem"))
    }
    fn router_key(&self, router: &RouterId) -> PathBuf {
        self.routers().join(format!("{router}.key"))
    }
}

/// An open PKI directory: the CA, able to issue and revoke.
pub struct Pki {
    layout: Layout,
    issuer: Issuer<'static, KeyPair>,
    rng: &'static dyn rustls::crypto::SecureRandom,
}

impl std::fmt::Debug for Pki {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pki")
            .field("dir", &self.layout.dir)
            .finish_non_exhaustive()
    }
}

impl Pki {
    /// Creates a CA in `dir` (made if missing): a new key and self-signed certificate, an empty
    /// CRL and index. Refuses a directory that has a CA unless `opts.force`; with it, starts over:
    /// the index, the CRL and the routers' files of the old CA are removed.
    pub fn init(dir: &Path, opts: &InitOptions) -> Result<Pki, PkiError> {
        let layout = Layout { dir: dir.to_path_buf() };
        fs::create_dir_all(layout.routers()).map_err(io_err("create", &layout.routers()))?;
        let _lock = DirLock::take(&layout.lock()).map_err(io_err("lock", &layout.lock()))?;
        if !opts.force && (layout.ca_cert().exists() || layout.ca_key().exists()) {
            return Err(PkiError::CaExists { dir: layout.dir });
        }
        if opts.force {
            let routers = layout.routers();
            for entry in fs::read_dir(&routers).map_err(io_err("read", &routers))? {
                let path = entry.map_err(io_err("read", &routers))?.path();
                if matches!(path.extension().and_then(|e| e.to_str()), Some("pem" | "key")) {
                    fs::remove_file(&path).map_err(io_err("remove", &path))?;
                }
            }
        }
        let rng = rustls::crypto::aws_lc_rs::default_provider().secure_random;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err("the CA key"))?;
        let mut params = CertificateParams::default();
        let tag = random_serial(rng)?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("wuos CA {}", &tag[..8]));
        params.distinguished_name.push(DnType::OrganizationName, "wuos");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let now = OffsetDateTime::now_utc();
        params.not_before = now - CLOCK_SKEW;
        params.not_after = now + opts.ca_validity;
        params.serial_number = Some(serial_number(&tag)?);
        params.key_identifier_method = KeyIdMethod::Sha256;
        let cert = params.self_signed(&key).map_err(gen_err("the CA certificate"))?;
        let mut staged = Staged::default();
        staged
            .write(&layout.ca_key(), key.serialize_pem().as_bytes(), PRIVATE)
            .map_err(io_err("write", &layout.ca_key()))?;
        staged
            .write(&layout.ca_cert(), cert.pem().as_bytes(), PUBLIC)
            .map_err(io_err("write", &layout.ca_cert()))?;
        let pki = Pki {
            layout,
            issuer: Issuer::new(params, key),
            rng,
        };
        let index = Index {
            crl_number: 1,
            certificates: Vec::new(),
        };
        pki.stage_crl(&index, &mut staged)?;
        pki.stage_index(&index, &mut staged)?;
        pki.commit(staged)?;
        Ok(pki)
    }

    /// Opens the CA in `dir`.
    pub fn open(dir: &Path) -> Result<Pki, PkiError> {
        let layout = Layout { dir: dir.to_path_buf() };
        for path in [layout.ca_cert(), layout.ca_key(), layout.index()] {
            if !path.exists() {
                return Err(PkiError::NoCa {
                    dir: layout.dir,
                    missing: path,
                });
            }
        }
        let ca_path = layout.ca_cert();
        let ca_pem = fs::read_to_string(&ca_path).map_err(io_err("read", &ca_path))?;
        let key_path = layout.ca_key();
        let key_pem = fs::read_to_string(&key_path).map_err(io_err("read", &key_path))?;
        let key = KeyPair::from_pem(&key_pem).map_err(|e| PkiError::Damaged {
            path: key_path.clone(),
            reason: e.to_string(),
        })?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key).map_err(|e| PkiError::Damaged {
            path: ca_path.clone(),
            reason: e.to_string(),
        })?;
        Ok(Pki {
            layout,
            issuer,
            rng: rustls::crypto::aws_lc_rs::default_provider().secure_random,
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.layout.dir
    }

    /// The CA certificate's file.
    pub fn ca_path(&self) -> PathBuf {
        self.layout.ca_cert()
    }

    /// The CRL's file.
    pub fn crl_path(&self) -> PathBuf {
        self.layout.crl()
    }

    /// A router's certificate file (its newest certificate).
    pub fn cert_path(&self, router: &RouterId) -> PathBuf {
        self.layout.router_cert(router)
    }

    /// A router's private key file.
    pub fn key_path(&self, router: &RouterId) -> PathBuf {
        self.layout.router_key(router)
    }

    /// Issues a certificate (and a new key) to `router`, written to `routers/<id>.pem` and
    /// `.key`. Issuing again for the same router is rotation: a new key, a new serial; the old
    /// certificate stays valid until it is revoked (see [`RevokeTarget::Superseded`]).
    pub fn issue(
        &self,
        router: &RouterId,
        role: Role,
        capabilities: &BTreeSet<Capability>,
        validity: Validity,
    ) -> Result<Identity, PkiError> {
        let mut ids = self.issue_many(&[IssueRequest {
            router: router.clone(),
            role,
            capabilities: capabilities.clone(),
            validity,
        }])?;
        Ok(ids.remove(0))
    }

    /// Issues several certificates under one lock, one index write and one flush to disk (what a
    /// lab does for all its routers at once). All or nothing: the files are staged and put in
    /// place only once every certificate is made (see `disk::Staged`).
    pub fn issue_many(&self, requests: &[IssueRequest]) -> Result<Vec<Identity>, PkiError> {
        for r in requests {
            if r.validity.not_after <= r.validity.not_before {
                return Err(PkiError::BadValidity {
                    not_before: r.validity.not_before,
                    not_after: r.validity.not_after,
                });
            }
        }
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let mut staged = Staged::default();
        let mut issued = Vec::with_capacity(requests.len());
        for r in requests {
            let entry = self.issue_one(r, &mut staged)?;
            issued.push(entry.identity());
            index.certificates.push(entry);
        }
        self.stage_index(&index, &mut staged)?;
        self.commit(staged)?;
        Ok(issued)
    }

    fn issue_one(&self, r: &IssueRequest, staged: &mut Staged) -> Result<IndexEntry, PkiError> {
        let what = format!("a certificate for {}", r.router);
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(gen_err(what.clone()))?;
        let serial = random_serial(self.rng)?;
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, r.router.as_str());
        params.distinguished_name.push(DnType::OrganizationName, "wuos");
        params.subject_alt_names = san_uris(&r.router, r.role, &r.capabilities)
            .into_iter()
            .map(|u| {
                u.try_into()
                    .map(SanType::URI)
                    .map_err(|e: rcgen::Error| PkiError::Generate {
                        what: what.clone(),
                        reason: e.to_string(),
                    })
            })
            .collect::<Result<_, _>>()?;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let (not_before, not_after) = (
            whole_seconds(r.validity.not_before),
            whole_seconds(r.validity.not_after),
        );
        params.not_before = not_before;
        params.not_after = not_after;
        params.serial_number = Some(serial_number(&serial)?);
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &self.issuer).map_err(gen_err(what))?;
        let key_path = self.layout.router_key(&r.router);
        let cert_path = self.layout.router_cert(&r.router);
        // The key first: a daemon that reloads in between sees a key that does not match its
        // certificate and keeps what it had (see `TlsContext::reload`).
        staged
            .write(&key_path, key.serialize_pem().as_bytes(), PRIVATE)
            .map_err(io_err("write", &key_path))?;
        staged
            .write(&cert_path, cert.pem().as_bytes(), PUBLIC)
            .map_err(io_err("write", &cert_path))?;
        Ok(IndexEntry {
            serial,
            router: r.router.clone(),
            role: r.role,
            capabilities: r.capabilities.clone(),
            not_before,
            not_after,
            revoked_at: None,
        })
    }

    /// What `text` names for [`Pki::revoke`]: `router:ID`, `serial:HEX`, or either alone if the
    /// index knows it as exactly one of them.
    pub fn resolve_target(&self, text: &str) -> Result<RevokeTarget, PkiError> {
        if let Some(r) = text.strip_prefix("router:") {
            return Ok(RevokeTarget::Router(RouterId::new(r)?));
        }
        if let Some(s) = text.strip_prefix("serial:") {
            return Ok(RevokeTarget::Serial(s.to_ascii_lowercase()));
        }
        let index = self.read_index()?;
        let serial = text.to_ascii_lowercase();
        let is_serial = index.by_serial(&serial).is_some();
        let is_router = index.of_router(text).next().is_some();
        match (is_router, is_serial) {
            (true, true) => Err(PkiError::AmbiguousTarget {
                dir: self.layout.dir.clone(),
                target: text.to_string(),
            }),
            (true, false) => Ok(RevokeTarget::Router(RouterId::new(text)?)),
            (false, true) => Ok(RevokeTarget::Serial(serial)),
            (false, false) => {
                // A well-formed name that is nowhere is "not found"; a malformed one is bad input.
                RouterId::new(text)?;
                Err(PkiError::UnknownTarget {
                    dir: self.layout.dir.clone(),
                    target: text.to_string(),
                })
            }
        }
    }

    /// Revokes what `target` names and signs a new CRL listing every revoked certificate. Returns
    /// the entries revoked now (empty if they all were already). A router or serial the index does
    /// not know is [`PkiError::UnknownTarget`].
    pub fn revoke(&self, target: &RevokeTarget) -> Result<Vec<IndexEntry>, PkiError> {
        let _lock = self.lock()?;
        let mut index = self.read_index()?;
        let unknown = |t: &str| PkiError::UnknownTarget {
            dir: self.layout.dir.clone(),
            target: t.to_string(),
        };
        let chosen: Vec<usize> = match target {
            RevokeTarget::Serial(s) => {
                let i = index
                    .certificates
                    .iter()
                    .position(|e| e.serial == *s)
                    .ok_or_else(|| unknown(s))?;
                vec![i]
            }
            RevokeTarget::Router(r) | RevokeTarget::Superseded(r) => {
                let mut all: Vec<usize> = (0..index.certificates.len())
                    .filter(|&i| index.certificates[i].router == *r)
                    .collect();
                if all.is_empty() {
                    return Err(unknown(r.as_str()));
                }
                if matches!(target, RevokeTarget::Superseded(_)) {
                    // The newest is the last issued (the index is in issue order).
                    all.pop();
                }
                all
            }
        };
        let now = whole_seconds(OffsetDateTime::now_utc());
        let mut revoked = Vec::new();
        for i in chosen {
            let e = &mut index.certificates[i];
            if e.revoked_at.is_none() {
                e.revoked_at = Some(now);
                revoked.push(e.clone());
            }
        }
        if !revoked.is_empty() {
            // The index first: if the CRL write fails, the next one still lists these.
            index.crl_number += 1;
            let mut staged = Staged::default();
            self.stage_index(&index, &mut staged)?;
            self.stage_crl(&index, &mut staged)?;
            self.commit(staged)?;
        }
        Ok(revoked)
    }

    /// Every certificate issued, oldest first.
    pub fn list(&self) -> Result<Vec<IndexEntry>, PkiError> {
        Ok(self.read_index()?.certificates)
    }

    fn lock(&self) -> Result<DirLock, PkiError> {
        let path = self.layout.lock();
        DirLock::take(&path).map_err(io_err("lock", &path))
    }

    fn read_index(&self) -> Result<Index, PkiError> {
        let path = self.layout.index();
        let text = fs::read_to_string(&path).map_err(io_err("read", &path))?;
        serde_json::from_str(&text).map_err(|e| PkiError::Damaged {
            path,
            reason: e.to_string(),
        })
    }

    fn commit(&self, staged: Staged) -> Result<(), PkiError> {
        staged.commit().map_err(io_err("write files in", &self.layout.dir))
    }

    fn stage_index(&self, index: &Index, staged: &mut Staged) -> Result<(), PkiError> {
        let path = self.layout.index();
        let mut text = serde_json::to_string_pretty(index).map_err(|e| PkiError::Damaged {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        text.push('\n');
        staged
            .write(&path, text.as_bytes(), PUBLIC)
            .map_err(io_err("write", &path))
    }

    /// Signs a CRL of every revoked certificate of `index`, numbered `index.crl_number`.
    fn stage_crl(&self, index: &Index, staged: &mut Staged) -> Result<(), PkiError> {
        let now = OffsetDateTime::now_utc();
        let revoked_certs = index
            .certificates
            .iter()
            .filter_map(|e| {
                e.revoked_at.map(|at| {
                    Ok(RevokedCertParams {
                        serial_number: serial_number(&e.serial)?,
                        revocation_time: at,
                        reason_code: None,
                        invalidity_date: None,
                    })
                })
            })
            .collect::<Result<Vec<_>, PkiError>>()?;
        let crl = CertificateRevocationListParams {
            this_update: now,
            next_update: now + CRL_NEXT_UPDATE,
            crl_number: SerialNumber::from(index.crl_number),
            issuing_distribution_point: None,
            revoked_certs,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.issuer)
        .map_err(gen_err("the CRL"))?;
        let pem = crl.pem().map_err(gen_err("the CRL"))?;
        let path = self.layout.crl();
        staged
            .write(&path, pem.as_bytes(), PUBLIC)
            .map_err(io_err("write", &path))
    }
}

/// `t` without its fraction of a second, as a certificate stores it.
fn whole_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).unwrap_or(t)
}

/// A new random serial: 16 bytes, positive and with a non-zero first byte (so it is exactly 16
/// bytes in DER and prints as 32 hex digits).
fn random_serial(rng: &dyn rustls::crypto::SecureRandom) -> Result<String, PkiError> {
    let mut b = [0u8; 16];
    rng.fill(&mut b).map_err(|_| PkiError::Generate {
        what: "a serial number".into(),
        reason: "the system's random source failed".into(),
    })?;
    b[0] = (b[0] & 0x7f) | 0x40;
    Ok(serial_hex(&b))
}

fn serial_number(hex: &str) -> Result<SerialNumber, PkiError> {
    let bytes = (0..hex.len())
        .step_by(2)
        .map(|i| hex.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| PkiError::Generate {
            what: format!("serial number {hex:?}"),
            reason: "it is not hex".into(),
        })?;
    Ok(SerialNumber::from_slice(&bytes))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use rustls_pki_types::CertificateDer;

    use super::*;

    fn r(id: &str) -> RouterId {
        RouterId::new(id).unwrap()
    }

    /// The DER of the first certificate of a PEM file.
    fn first_cert(path: &Path) -> Result<CertificateDer<'static>, PkiError> {
        use rustls_pki_types::pem::PemObject;
        CertificateDer::from_pem_file(path).map_err(|e| PkiError::Damaged {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
    }

    fn caps(c: &[Capability]) -> BTreeSet<Capability> {
        c.iter().copied().collect()
    }

    fn crl_serials(pki: &Pki) -> (Vec<String>, Vec<u8>) {
        use rustls_pki_types::CertificateRevocationListDer;
        use rustls_pki_types::pem::PemObject;
        use x509_parser::prelude::FromDer;
        let der = CertificateRevocationListDer::from_pem_file(pki.crl_path()).unwrap();
        let (_, crl) = x509_parser::revocation_list::CertificateRevocationList::from_der(der.as_ref()).unwrap();
        let serials = crl
            .iter_revoked_certificates()
            .map(|c| serial_hex(c.raw_serial()))
            .collect();
        (serials, crl.crl_number().unwrap().to_bytes_be())
    }

    #[test]
    fn init_makes_a_ca_an_empty_crl_and_index_and_refuses_to_run_twice() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("pki");
        let pki = Pki::init(&dir, &InitOptions::default()).unwrap();
        for f in ["ca.pem", "ca.key", "crl.pem", "index.json"] {
            assert!(dir.join(f).exists(), "{f} is made by init");
        }
        let mode = fs::metadata(dir.join("ca.key")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the CA key is private");
        assert!(pki.list().unwrap().is_empty());
        assert_eq!(crl_serials(&pki), (vec![], vec![1]), "an empty CRL numbered 1");

        let e = Pki::init(&dir, &InitOptions::default()).unwrap_err();
        assert!(matches!(e, PkiError::CaExists { .. }), "{e}");
        assert_eq!(e.class(), ErrorClass::Conflict);
        assert!(e.to_string().contains("--force"), "the message says how: {e}");
    }

    #[test]
    fn force_starts_over() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::init(tmp.path(), &InitOptions::default()).unwrap();
        pki.issue(&r("r1"), Role::Edge, &caps(&[]), Validity::days(1)).unwrap();
        let old_ca = fs::read(pki.ca_path()).unwrap();
        let pki = Pki::init(
            tmp.path(),
            &InitOptions {
                force: true,
                ..InitOptions::default()
            },
        )
        .unwrap();
        assert_ne!(fs::read(pki.ca_path()).unwrap(), old_ca, "a new CA");
        assert!(pki.list().unwrap().is_empty(), "the old CA's index is gone");
        assert!(!pki.cert_path(&r("r1")).exists(), "the old CA's router files are gone");
    }

    #[test]
    fn issue_writes_files_and_the_index_and_reads_back_as_the_identity() {
        let tmp = tempfile::tempdir().unwrap();
        Pki::init(tmp.path(), &InitOptions::default()).unwrap();
        let pki = Pki::open(tmp.path()).unwrap();
        let c = caps(&[Capability::Orchestrator]);
        let id = pki.issue(&r("fog_1"), Role::Fog, &c, Validity::days(30)).unwrap();
        assert_eq!(id.serial.len(), 32, "16-byte serials: {}", id.serial);
        let der = first_cert(&pki.cert_path(&r("fog_1"))).unwrap();
        assert_eq!(
            Identity::from_der(&der).unwrap(),
            id,
            "the file says what issue returned"
        );
        let mode = fs::metadata(pki.key_path(&r("fog_1"))).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let list = pki.list().unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].identity(), id);
        assert!(!list[0].is_revoked());
    }

    #[test]
    fn reissuing_rotates_and_revocation_by_router_serial_and_superseded() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::init(tmp.path(), &InitOptions::default()).unwrap();
        let none = caps(&[]);
        let a1 = pki.issue(&r("a"), Role::Edge, &none, Validity::days(1)).unwrap();
        let a2 = pki.issue(&r("a"), Role::Edge, &none, Validity::days(1)).unwrap();
        let a3 = pki.issue(&r("a"), Role::Edge, &none, Validity::days(1)).unwrap();
        let b1 = pki.issue(&r("b"), Role::Dc, &none, Validity::days(1)).unwrap();
        assert_ne!(a1.serial, a2.serial, "rotation gives a new serial");
        let on_disk = Identity::from_der(&first_cert(&pki.cert_path(&r("a"))).unwrap()).unwrap();
        assert_eq!(on_disk.serial, a3.serial, "the file holds the newest");

        let gone = pki.revoke(&RevokeTarget::Superseded(r("a"))).unwrap();
        let gone: Vec<_> = gone.iter().map(|e| e.serial.clone()).collect();
        assert_eq!(gone, [a1.serial.clone(), a2.serial.clone()], "all but the newest");
        let (crl, number) = crl_serials(&pki);
        assert_eq!(crl, gone, "the CRL lists them");
        assert_eq!(number, vec![2], "the CRL number grows");

        let again = pki.revoke(&RevokeTarget::Serial(a1.serial.clone())).unwrap();
        assert!(again.is_empty(), "revoking twice changes nothing");
        assert_eq!(crl_serials(&pki).1, vec![2], "and signs no new CRL");

        let t = pki.resolve_target(&b1.serial.to_uppercase()).unwrap();
        assert_eq!(t, RevokeTarget::Serial(b1.serial.clone()));
        assert_eq!(pki.revoke(&t).unwrap().len(), 1);
        let t = pki.resolve_target("a").unwrap();
        assert_eq!(t, RevokeTarget::Router(r("a")));
        assert_eq!(pki.revoke(&t).unwrap()[0].serial, a3.serial, "the router's last one");
        let (crl, number) = crl_serials(&pki);
        assert_eq!(crl.len(), 4);
        assert_eq!(number, vec![4]);
        assert!(pki.list().unwrap().iter().all(IndexEntry::is_revoked));
    }

    #[test]
    fn revoke_names_what_it_does_not_know() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::init(tmp.path(), &InitOptions::default()).unwrap();
        let e = pki.resolve_target("r9").unwrap_err();
        assert_eq!(e.class(), ErrorClass::NotFound, "{e}");
        assert!(e.to_string().contains("\"r9\""), "{e}");
        let e = pki.resolve_target("r 9").unwrap_err();
        assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
        let e = pki.revoke(&RevokeTarget::Serial("abcd".into())).unwrap_err();
        assert_eq!(e.class(), ErrorClass::NotFound, "{e}");
    }

    #[test]
    fn a_name_that_is_both_a_router_and_a_serial_must_be_qualified() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::init(tmp.path(), &InitOptions::default()).unwrap();
        let id = pki.issue(&r("a"), Role::Edge, &caps(&[]), Validity::days(1)).unwrap();
        // A router named like that serial.
        pki.issue(&r(&id.serial), Role::Edge, &caps(&[]), Validity::days(1))
            .unwrap();
        let e = pki.resolve_target(&id.serial).unwrap_err();
        assert!(matches!(e, PkiError::AmbiguousTarget { .. }), "{e}");
        assert!(e.to_string().contains("serial:"), "{e}");
        assert_eq!(
            pki.resolve_target(&format!("serial:{}", id.serial)).unwrap(),
            RevokeTarget::Serial(id.serial.clone())
        );
    }

    #[test]
    fn a_missing_ca_is_not_found_and_says_how_to_make_one() {
        let tmp = tempfile::tempdir().unwrap();
        let e = Pki::open(&tmp.path().join("nowhere")).unwrap_err();
        assert_eq!(e.class(), ErrorClass::NotFound);
        let text = e.to_string();
        assert!(
            text.contains("nowhere/ca.pem is missing") && text.contains("wuos pki init"),
            "{text}"
        );
    }

    #[test]
    fn a_validity_that_ends_before_it_starts_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::init(tmp.path(), &InitOptions::default()).unwrap();
        let now = OffsetDateTime::now_utc();
        let v = Validity {
            not_before: now,
            not_after: now - Duration::days(1),
        };
        let e = pki.issue(&r("a"), Role::Edge, &caps(&[]), v).unwrap_err();
        assert_eq!(e.class(), ErrorClass::BadInput, "{e}");
        assert!(pki.list().unwrap().is_empty(), "nothing was issued");
    }

    #[test]
    fn issue_many_issues_all_under_one_index_write() {
        let tmp = tempfile::tempdir().unwrap();
        let pki = Pki::init(tmp.path(), &InitOptions::default()).unwrap();
        let reqs: Vec<IssueRequest> = (0..20)
            .map(|i| IssueRequest {
                router: r(&format!("r{i}")),
                role: Role::Edge,
                capabilities: caps(&[]),
                validity: Validity::days(1),
            })
            .collect();
        let ids = pki.issue_many(&reqs).unwrap();
        assert_eq!(ids.len(), 20);
        let serials: BTreeSet<_> = ids.iter().map(|i| i.serial.clone()).collect();
        assert_eq!(serials.len(), 20, "serials are unique");
        assert_eq!(pki.list().unwrap().len(), 20);
        assert!(pki.cert_path(&r("r19")).exists());
    }
}
