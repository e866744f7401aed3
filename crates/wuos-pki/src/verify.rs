//! rustls' hooks over the reloadable material: the client-certificate verifier of servers, the
//! server-certificate verifier of clients (which also checks the router id the caller expects),
//! and the resolvers that present the router's own certificate.
//!
//! Each hook holds the [`Shared`] cell and reads the material in force when rustls calls it, so
//! a config handed out before [`crate::TlsContext::reload`] uses the new certificate and CRL for
//! its next handshake.
//!
//! Both verifiers run the same check ([`Material::verify_peer`]): webpki path building from the
//! peer's certificate to one of the CA certificates, the extended key usage of the side, and the
//! revocation status against the CRLs (an end-entity certificate whose status the CRLs cannot tell
//! is refused); then the wuos identity is read from it. No DNS name is checked: the router id
//! inside the certificate is what identifies a router (router ids are not all valid DNS labels).

use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, TrustAnchor, UnixTime};
use webpki::{CertRevocationList, EndEntityCert, ExpirationPolicy, KeyUsage, RevocationCheckDepth};
use wuos_model::RouterId;

use crate::identity::Identity;
use crate::refusal::{Refusal, Refused};

/// What a TLS context holds at one time: read from its files, replaced whole on reload.
#[derive(Debug)]
pub(crate) struct Material {
    /// The CA certificates, as trust anchors.
    pub anchors: Vec<TrustAnchor<'static>>,
    /// The CRLs.
    pub crls: Vec<CertRevocationList<'static>>,
    /// The router's own certificate and key.
    pub certified: Arc<CertifiedKey>,
    /// The router's own identity.
    pub identity: Identity,
}

impl Material {
    /// Verifies a peer's certificate for `usage` against the CA and the CRLs and reads its
    /// identity.
    pub fn verify_peer(
        &self,
        algs: &WebPkiSupportedAlgorithms,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
        usage: KeyUsage,
    ) -> Result<Identity, rustls::Error> {
        let cert =
            EndEntityCert::try_from(end_entity).map_err(|_| rustls::Error::from(CertificateError::BadEncoding))?;
        let crls: Vec<&CertRevocationList<'_>> = self.crls.iter().collect();
        let revocation = webpki::RevocationOptionsBuilder::new(&crls)
            .map_err(|_| rustls::Error::General("no CRL is loaded".into()))?
            .with_depth(RevocationCheckDepth::EndEntity)
            .with_status_policy(webpki::UnknownStatusPolicy::Deny)
            .with_expiration_policy(ExpirationPolicy::Ignore)
            .build();
        cert.verify_for_usage(
            algs.all,
            &self.anchors,
            intermediates,
            now,
            usage,
            Some(revocation),
            None,
        )
        .map_err(chain_error)?;
        Identity::from_der(end_entity).map_err(|e| {
            Refused::new(
                Refusal::NotARouterCert,
                format!("the peer's certificate is not a router's: {e}"),
            )
            .into_tls()
        })
    }
}

/// A webpki path-building error as the rustls error with the TLS alert that fits it.
fn chain_error(e: webpki::Error) -> rustls::Error {
    use webpki::Error as W;
    let c = match e {
        W::UnknownIssuer => CertificateError::UnknownIssuer,
        // Same issuer name, another key: not our CA either.
        W::InvalidSignatureForPublicKey => CertificateError::UnknownIssuer,
        W::CertRevoked => CertificateError::Revoked,
        W::CertExpired { time, not_after } => CertificateError::ExpiredContext { time, not_after },
        W::CertNotValidYet { time, not_before } => CertificateError::NotValidYetContext { time, not_before },
        W::InvalidCertValidity => CertificateError::Expired,
        W::UnknownRevocationStatus => CertificateError::UnknownRevocationStatus,
        W::RequiredEkuNotFoundContext(_) => CertificateError::InvalidPurpose,
        W::BadDer | W::BadDerTime | W::TrailingData(_) => CertificateError::BadEncoding,
        other => CertificateError::Other(rustls::OtherError(Arc::new(other))),
    };
    c.into()
}

/// The cell every hook reads the material from; [`crate::TlsContext::reload`] replaces it.
#[derive(Debug)]
pub(crate) struct Shared {
    material: RwLock<Arc<Material>>,
}

impl Shared {
    pub fn new(m: Material) -> Shared {
        Shared {
            material: RwLock::new(Arc::new(m)),
        }
    }

    /// The material in force.
    pub fn current(&self) -> Arc<Material> {
        // A writer only swaps an Arc, so a poisoned lock still holds a whole value.
        self.material.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `m` in force for the handshakes that start from now on.
    pub fn replace(&self, m: Material) {
        *self.material.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(m);
    }
}

/// Servers' verifier of client certificates: a certificate is required.
#[derive(Debug)]
pub(crate) struct ClientVerifier {
    pub shared: Arc<Shared>,
    pub algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for ClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // An empty hint list: "send your certificate, whatever its issuer". The CA may change on
        // reload, and a borrowed list cannot follow it.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.shared
            .current()
            .verify_peer(&self.algs, end_entity, intermediates, now, KeyUsage::client_auth())?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Clients' verifier of a server certificate, which must name the `expected` router.
#[derive(Debug)]
pub(crate) struct ServerVerifier {
    pub shared: Arc<Shared>,
    pub algs: WebPkiSupportedAlgorithms,
    pub expected: RouterId,
}

impl ServerCertVerifier for ServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let id =
            self.shared
                .current()
                .verify_peer(&self.algs, end_entity, intermediates, now, KeyUsage::server_auth())?;
        if id.router != self.expected {
            return Err(Refused::new(
                Refusal::IdentityMismatch,
                format!(
                    "expected router {:?} but the server's certificate (serial {}) is {:?}'s",
                    self.expected.as_str(),
                    id.serial,
                    id.router.as_str()
                ),
            )
            .into_tls());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Presents the router's own certificate, whichever is in force, on both sides.
#[derive(Debug)]
pub(crate) struct OwnCert {
    pub shared: Arc<Shared>,
}

impl ResolvesServerCert for OwnCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.shared.current().certified.clone())
    }
}

impl ResolvesClientCert for OwnCert {
    fn resolve(&self, _root_hint_subjects: &[&[u8]], _sigschemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.shared.current().certified.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
