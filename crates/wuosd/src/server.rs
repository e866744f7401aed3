//! The Neighbor gRPC service: thin — it validates through the state machine and maps refusals to
//! `invalid_argument` with the reason, counted by reason.

use std::sync::Arc;

use prost::Message;
use tonic::{Request, Response, Status};
use tracing::warn;
use wuos_proto::MAX_MESSAGE_BYTES;
use wuos_proto::pb;
use wuos_proto::pb::neighbor_server::{Neighbor, NeighborServer};

use crate::daemon::Shared;

pub struct NeighborSvc(Arc<Shared>);

impl std::fmt::Debug for NeighborSvc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NeighborSvc")
    }
}

/// The service, with a decoding limit above the protocol's, so that an oversized message reaches
/// the handler and is refused *and counted* there (a larger one is refused by tonic itself).
pub fn neighbor_service(shared: Arc<Shared>) -> NeighborServer<NeighborSvc> {
    NeighborServer::new(NeighborSvc(shared)).max_decoding_message_size(4 * MAX_MESSAGE_BYTES)
}

impl NeighborSvc {
    fn refuse(&self, what: &str, reason: String) -> Status {
        let key = reason.split(':').next().unwrap_or("invalid").to_string();
        self.0.metrics.reject(&key);
        warn!(message = what, %reason, "refused a protocol message");
        Status::invalid_argument(reason)
    }

    fn check_size(&self, what: &str, len: usize) -> Result<(), Status> {
        self.0.metrics.bytes("received", len);
        if len > MAX_MESSAGE_BYTES {
            return Err(self.refuse(
                what,
                format!("oversized: {len} bytes, the limit is {MAX_MESSAGE_BYTES}"),
            ));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Neighbor for NeighborSvc {
    async fn hello(&self, req: Request<pb::Hello>) -> Result<Response<pb::HelloReply>, Status> {
        let hello = req.into_inner();
        self.check_size("hello", hello.encoded_len())?;
        let now = self.0.now_ms();
        let r = self.0.lock().on_hello(now, &hello);
        match r {
            Ok((reply, actions)) => {
                self.0.apply(actions);
                self.0.metrics.bytes("sent", reply.encoded_len());
                Ok(Response::new(reply))
            }
            Err(e) => Err(self.refuse("hello", e.to_string())),
        }
    }

    async fn flood(&self, req: Request<pb::FloodRequest>) -> Result<Response<pb::FloodReply>, Status> {
        let flood = req.into_inner();
        self.check_size("flood", flood.encoded_len())?;
        let now = self.0.now_ms();
        let r = self.0.lock().on_flood(now, &flood);
        match r {
            Ok((reply, actions)) => {
                self.0.apply(actions);
                Ok(Response::new(reply))
            }
            Err(e) => Err(self.refuse("flood", e.to_string())),
        }
    }
}
