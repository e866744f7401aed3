//! SD-WAN overlays and traffic classes in the daemon (docs/sdwan.md): the edge component on
//! every router ([`edge`]: the pieces of its configuration from the controller, carried out on
//! the kernel), the controller component on the designated router ([`controller`]: the desired
//! state, changed by NBI actions, sent to the edges as pieces) and its northbound interface
//! ([`nbi`]: REST with OpenAPI, and [`grpc`]: its gRPC twin; bearer token); on every edge, the
//! STAMP reflector and the path monitoring and SLA steering of the steered classes ([`paths`]).

pub mod controller;
pub mod edge;
pub mod grpc;
pub mod nbi;
pub mod paths;
