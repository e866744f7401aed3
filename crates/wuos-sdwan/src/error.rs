//! What is wrong with an SD-WAN request. Every message names the thing that is wrong and, where
//! there is one, the fix; a refused request changes nothing.

/// Why a request, an overlay or a class is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SdwanError {
    #[error("{what} name {name:?} is not valid: {why}")]
    BadName {
        what: &'static str,
        name: String,
        why: &'static str,
    },
    #[error("overlay {0:?} already exists; delete it first or pick another name")]
    OverlayExists(String),
    #[error("no overlay {name:?}; the overlays are: {known}")]
    UnknownOverlay { name: String, known: String },
    #[error("traffic class {0:?} already exists; delete it first or pick another name")]
    ClassExists(String),
    #[error("no traffic class {name:?}; the classes are: {known}")]
    UnknownClass { name: String, known: String },
    #[error("no site {name:?}; the sites are: {known}")]
    UnknownSite { name: String, known: String },
    #[error("no underlay {name:?}; the underlays are: {known}")]
    UnknownUnderlay { name: String, known: String },
    #[error("site {site:?} is already in overlay {overlay:?}")]
    SiteInOverlay { overlay: String, site: String },
    #[error("site {site:?} is not in overlay {overlay:?}")]
    SiteNotInOverlay { overlay: String, site: String },
    #[error("overlay {overlay:?}: site {site:?} has none of the overlay's underlays ({underlays}); it is on {has}")]
    NoCommonUnderlay {
        overlay: String,
        site: String,
        underlays: String,
        has: String,
    },
    #[error("overlay {overlay:?}: the hub {hub:?} is not a member; add it to the sites")]
    HubNotMember { overlay: String, hub: String },
    #[error("overlay {overlay:?}: the hub {hub:?} cannot be removed while the overlay is hub-and-spoke")]
    RemoveHub { overlay: String, hub: String },
    #[error("overlay {overlay:?}: the pair {a:?}-{b:?} names a site that is not a member")]
    PairNotMember { overlay: String, a: String, b: String },
    #[error("overlay {overlay:?}: site {site:?} has no LAN holding {prefix}; its LANs are: {lans}")]
    PrefixNotOnLan {
        overlay: String,
        site: String,
        prefix: String,
        lans: String,
    },
    #[error("overlay {overlay:?}: LAN prefix {prefix} of site {site:?} overlaps {other} of site {other_site:?}")]
    LanOverlap {
        overlay: String,
        site: String,
        prefix: String,
        other_site: String,
        other: String,
    },
    #[error("{what} limit reached: at most {max}")]
    TooMany { what: &'static str, max: usize },
    #[error("bad {field} {value:?}: {why}")]
    BadValue {
        field: &'static str,
        value: String,
        why: String,
    },
    #[error("class {class:?} rule {rule}: {why}")]
    BadRule { class: String, rule: usize, why: String },
    #[error(
        "class {class:?} rule {rule} ({rule_text}) overlaps class {other:?} rule {other_rule} ({other_text}): \
         a packet could match both; narrow one of them"
    )]
    ClassOverlap {
        class: String,
        rule: usize,
        rule_text: String,
        other: String,
        other_rule: usize,
        other_text: String,
    },
    #[error("class {class:?} has no service {service:?}")]
    UnknownService { class: String, service: String },
    #[error("class {class:?} already has a service {service:?}")]
    ServiceExists { class: String, service: String },
    #[error("overlay {overlay:?} carries classes ({classes}); delete them or assign them elsewhere first")]
    OverlayInUse { overlay: String, classes: String },
}

/// `a, b, c`, or `(none)`.
pub(crate) fn list<'a>(names: impl IntoIterator<Item = &'a String>) -> String {
    let v: Vec<&str> = names.into_iter().map(String::as_str).collect();
    if v.is_empty() {
        "(none)".to_string()
    } else {
        v.join(", ")
    }
}

/// What kind of refusal an error is, for the NBI's status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// It names something that does not exist (an overlay, class, site, underlay, service).
    NotFound,
    /// It clashes with the state (exists already, still in use, overlaps).
    Conflict,
    /// The request itself is bad (a name, a value, a rule, a limit).
    Invalid,
}

impl SdwanError {
    pub fn kind(&self) -> ErrorKind {
        use SdwanError::*;
        match self {
            UnknownOverlay { .. }
            | UnknownClass { .. }
            | UnknownSite { .. }
            | UnknownUnderlay { .. }
            | UnknownService { .. } => ErrorKind::NotFound,
            OverlayExists(_)
            | ClassExists(_)
            | SiteInOverlay { .. }
            | ServiceExists { .. }
            | OverlayInUse { .. }
            | ClassOverlap { .. }
            | LanOverlap { .. }
            | RemoveHub { .. } => ErrorKind::Conflict,
            _ => ErrorKind::Invalid,
        }
    }
}
