//! Errors of a policy file.

use crate::policy::Pos;

/// A policy that cannot be used: where (1-based line and column, in characters) and what.
///
/// Displays as `LINE:COL: message`; the caller prefixes the file name
/// (`voip.policy:3:34: expected a comparison operator ...`). The message names the problem and
/// what was expected; every message is listed in `docs/policy.md` and pinned by a unit test, so
/// the message, not a variant, is the interface — callers only show it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {message}")]
pub struct PolicyError {
    /// 1-based line.
    pub line: u32,
    /// 1-based column, in characters.
    pub col: u32,
    /// What is wrong and what was expected.
    pub message: String,
}

impl PolicyError {
    /// An error at `pos`.
    pub fn new(pos: Pos, message: impl Into<String>) -> Self {
        PolicyError {
            line: pos.line,
            col: pos.col,
            message: message.into(),
        }
    }

    /// Where it is.
    pub fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            col: self.col,
        }
    }
}

impl wuos_model::Classify for PolicyError {
    fn class(&self) -> wuos_model::ErrorClass {
        wuos_model::ErrorClass::BadInput
    }
}
