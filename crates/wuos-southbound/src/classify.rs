//! The class of every error of this crate ([`wuos_model::ErrorClass`]): what the kernel refuses
//! is internal, unless it says a thing exists already (conflict) or is missing (not found).

use wuos_model::{Classify, ErrorClass};

use crate::cgroup::CgroupError;
use crate::domain::DomainError;
use crate::netlink::NetlinkError;
use crate::netns::NetnsError;
use crate::nft::NftError;
use crate::process::BesideError;
use crate::tc::TcError;
use crate::xdp::XdpError;

impl Classify for NetlinkError {
    fn class(&self) -> ErrorClass {
        match self {
            NetlinkError::NoSuchLink(_) => ErrorClass::NotFound,
            _ => ErrorClass::Internal,
        }
    }
}

impl Classify for NetnsError {
    fn class(&self) -> ErrorClass {
        match self {
            NetnsError::Exists { .. } => ErrorClass::Conflict,
            _ => ErrorClass::Internal,
        }
    }
}

impl Classify for CgroupError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Internal
    }
}

impl Classify for TcError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Internal
    }
}

impl Classify for NftError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Internal
    }
}

impl Classify for BesideError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Internal
    }
}

impl Classify for XdpError {
    fn class(&self) -> ErrorClass {
        match self {
            XdpError::NoSuchInterface { .. } => ErrorClass::NotFound,
            _ => ErrorClass::Internal,
        }
    }
}

impl Classify for DomainError {
    fn class(&self) -> ErrorClass {
        match self {
            DomainError::InvalidSpec { .. } | DomainError::InitUsage(_) => ErrorClass::BadInput,
            DomainError::Exists { .. } | DomainError::AlreadyRunning { .. } | DomainError::NotRunning { .. } => {
                ErrorClass::Conflict
            }
            DomainError::NotCreated { .. } | DomainError::NotParked { .. } => ErrorClass::NotFound,
            DomainError::Unsupported { .. } => ErrorClass::BadInput,
            _ => ErrorClass::Internal,
        }
    }
}
