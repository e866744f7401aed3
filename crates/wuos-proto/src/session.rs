//! One controller ↔ orchestrator session (service `Control`): the envelope rules, without I/O.
//!
//! Each direction numbers its envelopes from 1; the first envelope received fixes the session id.
//! A receiver checks every envelope (version, fields, session id, sequence) and answers a bad one
//! with an `IntentError` envelope naming the problem; the session continues. Acting on intents is
//! the controller's business (`wuosd`'s `controller`); a side that takes no intents (as every
//! 1.0 router did) answers each with [`Session::unsupported`], an `unimplemented` error.

use crate::pb;
use crate::pb::session_envelope::Body;
use crate::validate::{self, ValidateError};

/// Error codes carried in `IntentError.code`.
pub const CODE_INVALID: &str = "invalid";
pub const CODE_SEQUENCE: &str = "sequence";
pub const CODE_SESSION: &str = "session";
pub const CODE_UNIMPLEMENTED: &str = "unimplemented";

#[derive(Debug)]
pub struct Session {
    me: String,
    session_id: Option<u64>,
    expect_in: u64,
    next_out: u64,
}

impl Session {
    pub fn new(me: impl Into<String>) -> Self {
        Self {
            me: me.into(),
            session_id: None,
            expect_in: 1,
            next_out: 1,
        }
    }

    /// A session this side opens (the orchestrator's), with its id chosen (≠ 0).
    pub fn opened(me: impl Into<String>, id: u64) -> Self {
        let mut s = Self::new(me);
        s.session_id = Some(id);
        s
    }

    /// The session id, once the first envelope fixed it.
    pub fn id(&self) -> Option<u64> {
        self.session_id
    }

    /// Stamps an outgoing envelope: header, session id, next sequence number.
    pub fn envelope(&mut self, body: Body) -> pb::SessionEnvelope {
        let seq = self.next_out;
        self.next_out += 1;
        pb::SessionEnvelope {
            header: Some(validate::header(&self.me)),
            session_id: self.session_id.unwrap_or(0),
            sequence: seq,
            body: Some(body),
        }
    }

    fn error(&mut self, intent_id: u64, code: &str, message: String) -> pb::SessionEnvelope {
        self.envelope(Body::Error(pb::IntentError {
            intent_id,
            code: code.into(),
            message,
        }))
    }

    /// Checks an incoming envelope. `Ok(body)` is for the caller to act on; `Err(reply)` is the
    /// error envelope to send back (the envelope is then ignored, the session goes on).
    pub fn receive<'a>(&mut self, env: &'a pb::SessionEnvelope) -> Result<&'a Body, pb::SessionEnvelope> {
        if let Err(e) = validate::check_envelope(env) {
            return Err(self.error(0, CODE_INVALID, e.to_string()));
        }
        match self.session_id {
            None => self.session_id = Some(env.session_id),
            Some(id) if id != env.session_id => {
                return Err(self.error(
                    0,
                    CODE_SESSION,
                    format!("session id {} in a session that started as {id}", env.session_id),
                ));
            }
            Some(_) => {}
        }
        if env.sequence != self.expect_in {
            let msg = format!("expected sequence {}, got {}", self.expect_in, env.sequence);
            // Resynchronise on what the peer sent, so one loss is reported once.
            self.expect_in = env.sequence + 1;
            return Err(self.error(0, CODE_SEQUENCE, msg));
        }
        self.expect_in += 1;
        env.body.as_ref().ok_or_else(|| {
            let e = ValidateError::Missing {
                context: "session envelope".into(),
                field: "body",
            };
            self.error(0, CODE_INVALID, e.to_string())
        })
    }

    /// The answer of a router that does not apply intents yet: one `unimplemented` error per intent.
    pub fn unsupported(&mut self, batch: &pb::IntentBatch) -> Vec<pb::SessionEnvelope> {
        batch
            .intents
            .iter()
            .map(|i| {
                self.error(
                    i.id,
                    CODE_UNIMPLEMENTED,
                    format!(
                        "{} cannot apply intents yet (protocol 1.0 defines only the envelope)",
                        self.me
                    ),
                )
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(session_id: u64, sequence: u64, body: Option<Body>) -> pb::SessionEnvelope {
        pb::SessionEnvelope {
            header: Some(validate::header("orch")),
            session_id,
            sequence,
            body,
        }
    }

    fn batch(ids: &[u64]) -> Body {
        Body::Intents(pb::IntentBatch {
            intents: ids
                .iter()
                .map(|&id| pb::Intent {
                    id,
                    kind: Some(pb::intent::Kind::Policy(pb::PolicyIntent { text: "x".into() })),
                })
                .collect(),
        })
    }

    fn code(e: &pb::SessionEnvelope) -> &str {
        match &e.body {
            Some(Body::Error(err)) => &err.code,
            _ => "",
        }
    }

    #[test]
    fn a_good_session_numbers_both_directions() {
        let mut s = Session::new("r1");
        let first = env(9, 1, Some(batch(&[1, 2])));
        let Ok(Body::Intents(b)) = s.receive(&first) else {
            panic!("a good envelope is accepted")
        };
        let replies = s.unsupported(b);
        assert_eq!(replies.len(), 2);
        assert_eq!(replies.iter().map(|r| r.sequence).collect::<Vec<_>>(), vec![1, 2]);
        assert!(
            replies
                .iter()
                .all(|r| r.session_id == 9 && code(r) == CODE_UNIMPLEMENTED)
        );
        assert!(
            s.receive(&env(9, 2, Some(Body::Ack(pb::Ack { intent_ids: vec![] }))))
                .is_ok()
        );
    }

    #[test]
    fn bad_envelopes_get_an_error_and_the_session_goes_on() {
        let mut s = Session::new("r1");
        assert!(s.receive(&env(9, 1, Some(batch(&[1])))).is_ok());
        let gap = s.receive(&env(9, 3, Some(batch(&[2])))).unwrap_err();
        assert_eq!(code(&gap), CODE_SEQUENCE);
        let other = s.receive(&env(8, 4, Some(batch(&[3])))).unwrap_err();
        assert_eq!(code(&other), CODE_SESSION);
        let mut wrong_version = env(9, 4, Some(batch(&[4])));
        wrong_version.header.as_mut().unwrap().version = 1 << 16;
        let e = s.receive(&wrong_version).unwrap_err();
        assert_eq!(code(&e), CODE_INVALID);
        assert!(matches!(&e.body, Some(Body::Error(x)) if x.message.contains("version 1.0")));
        assert!(
            s.receive(&env(9, 4, Some(batch(&[5])))).is_ok(),
            "the session resynchronised"
        );
    }
}
