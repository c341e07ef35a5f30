//! Attack tests (issue: the authorization boundary), against the real kube-apiserver and `ksiam all`.
//!
//! One module per class of hole; each test is named after its class and fails on the code before the
//! guard that closes it. `docs/security.md` lists every class, what closes it and the test.

#[path = "attacks/boundary.rs"]
mod boundary;
#[path = "attacks/escalation.rs"]
mod escalation;
#[path = "attacks/grpc.rs"]
mod grpc;
#[path = "attacks/namespaces.rs"]
mod namespaces;
#[path = "attacks/ownership.rs"]
mod ownership;
