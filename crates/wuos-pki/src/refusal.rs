//! Why a TLS peer was refused: [`Refusal`] (a closed set, each with a stable label for metrics)
//! and [`Refused`] (the reason with a human detail), made from rustls' errors.
//!
//! Both sides of a handshake map what they see. The side that checks a certificate knows the
//! reason from its own verifier; the side whose certificate was refused only gets the TLS alert
//! the other side sent (`unknown_ca`, `certificate_revoked`, `certificate_expired`,
//! `certificate_required`), which maps to the same reason where one exists. In TLS 1.3 a client
//! finishes its handshake before the server has judged the client's certificate, so a client
//! refused by the server learns it on its first read: [`Refused::from_io`] maps that error too.

use std::fmt;
use std::io;
use std::sync::Arc;

use rustls::{AlertDescription, CertificateError, OtherError};

/// Why a handshake or a peer was refused. The labels ([`Refusal::label`]) are stable: they are
/// used as a Prometheus label value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Refusal {
    /// The client presented no certificate (`no_certificate`).
    NoCertificate,
    /// The certificate was not issued by this deployment's CA (`unknown_ca`).
    UnknownCa,
    /// The certificate is on the CA's revocation list (`revoked`).
    Revoked,
    /// The certificate is outside its validity period: expired, or not valid yet (`expired`).
    Expired,
    /// The certificate names another router than the one expected or claimed
    /// (`identity_mismatch`).
    IdentityMismatch,
    /// The certificate chains to the CA but carries no wuos identity (`not_a_router_cert`).
    NotARouterCert,
    /// Anything else: a timeout, a closed connection, a protocol error (`handshake`).
    Handshake,
}

impl Refusal {
    /// Every reason, in documentation order.
    pub const ALL: [Refusal; 7] = [
        Refusal::NoCertificate,
        Refusal::UnknownCa,
        Refusal::Revoked,
        Refusal::Expired,
        Refusal::IdentityMismatch,
        Refusal::NotARouterCert,
        Refusal::Handshake,
    ];

    /// The stable short label (a Prometheus label value).
    pub fn label(self) -> &'static str {
        match self {
            Refusal::NoCertificate => "no_certificate",
            Refusal::UnknownCa => "unknown_ca",
            Refusal::Revoked => "revoked",
            Refusal::Expired => "expired",
            Refusal::IdentityMismatch => "identity_mismatch",
            Refusal::NotARouterCert => "not_a_router_cert",
            Refusal::Handshake => "handshake",
        }
    }

    /// The reason a rustls error stands for, on either side of the handshake.
    pub fn of_tls_error(e: &rustls::Error) -> Refusal {
        match e {
            rustls::Error::NoCertificatesPresented => Refusal::NoCertificate,
            rustls::Error::InvalidCertificate(c) => match c {
                CertificateError::UnknownIssuer => Refusal::UnknownCa,
                CertificateError::Revoked => Refusal::Revoked,
                CertificateError::Expired
                | CertificateError::ExpiredContext { .. }
                | CertificateError::NotValidYet
                | CertificateError::NotValidYetContext { .. } => Refusal::Expired,
                CertificateError::Other(OtherError(o)) => {
                    o.downcast_ref::<Refused>().map_or(Refusal::Handshake, |r| r.reason)
                }
                _ => Refusal::Handshake,
            },
            rustls::Error::AlertReceived(a) => match a {
                AlertDescription::CertificateRequired => Refusal::NoCertificate,
                AlertDescription::UnknownCA => Refusal::UnknownCa,
                AlertDescription::CertificateRevoked => Refusal::Revoked,
                AlertDescription::CertificateExpired => Refusal::Expired,
                _ => Refusal::Handshake,
            },
            _ => Refusal::Handshake,
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A refused handshake or peer: the reason and what exactly happened.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("TLS peer refused ({reason}): {detail}")]
pub struct Refused {
    /// The reason (its label goes to metrics).
    pub reason: Refusal,
    /// What happened, for a log line.
    pub detail: String,
}

impl Refused {
    /// A refusal with its detail.
    pub fn new(reason: Refusal, detail: impl Into<String>) -> Refused {
        Refused {
            reason,
            detail: detail.into(),
        }
    }

    /// The refusal a rustls error stands for.
    pub fn from_tls(e: &rustls::Error) -> Refused {
        if let rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(o))) = e
            && let Some(r) = o.downcast_ref::<Refused>()
        {
            return r.clone();
        }
        Refused::new(Refusal::of_tls_error(e), e.to_string())
    }

    /// The refusal an I/O error of a TLS stream stands for: the rustls error inside it if there is
    /// one (a failed handshake, an alert from the peer), else [`Refusal::Handshake`].
    pub fn from_io(e: &io::Error) -> Refused {
        match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(tls) => Refused::from_tls(tls),
            None => Refused::new(Refusal::Handshake, e.to_string()),
        }
    }

    /// This refusal as the rustls error a verifier returns (so that the handshake fails with it
    /// and [`Refused::from_tls`] gets it back whole).
    pub(crate) fn into_tls(self) -> rustls::Error {
        rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(self))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_stable_and_distinct() {
        let labels: Vec<&str> = Refusal::ALL.iter().map(|r| r.label()).collect();
        assert_eq!(
            labels,
            [
                "no_certificate",
                "unknown_ca",
                "revoked",
                "expired",
                "identity_mismatch",
                "not_a_router_cert",
                "handshake"
            ],
            "these labels are a metrics contract"
        );
    }

    #[test]
    fn rustls_errors_map_to_reasons() {
        let cases = [
            (rustls::Error::NoCertificatesPresented, Refusal::NoCertificate),
            (CertificateError::UnknownIssuer.into(), Refusal::UnknownCa),
            (CertificateError::Revoked.into(), Refusal::Revoked),
            (CertificateError::Expired.into(), Refusal::Expired),
            (CertificateError::NotValidYet.into(), Refusal::Expired),
            (CertificateError::BadEncoding.into(), Refusal::Handshake),
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateRevoked),
                Refusal::Revoked,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::UnknownCA),
                Refusal::UnknownCa,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::CertificateRequired),
                Refusal::NoCertificate,
            ),
            (
                rustls::Error::AlertReceived(AlertDescription::HandshakeFailure),
                Refusal::Handshake,
            ),
            (
                Refused::new(Refusal::NotARouterCert, "x").into_tls(),
                Refusal::NotARouterCert,
            ),
        ];
        for (e, want) in cases {
            assert_eq!(Refusal::of_tls_error(&e), want, "for {e:?}");
            assert_eq!(Refused::from_tls(&e).reason, want, "for {e:?}");
        }
    }

    #[test]
    fn io_errors_carry_the_rustls_error_inside() {
        let e = io::Error::new(
            io::ErrorKind::InvalidData,
            rustls::Error::from(CertificateError::Revoked),
        );
        assert_eq!(Refused::from_io(&e).reason, Refusal::Revoked);
        let detail = Refused::new(Refusal::IdentityMismatch, "it is r2").into_tls();
        let e = io::Error::new(io::ErrorKind::InvalidData, detail);
        assert_eq!(
            Refused::from_io(&e),
            Refused::new(Refusal::IdentityMismatch, "it is r2")
        );
        let e = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(Refused::from_io(&e).reason, Refusal::Handshake);
    }
}
