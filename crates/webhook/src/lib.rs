//! ksiam's pod admission webhook: mounts the token of the KubeSphere ServiceAccount named by a pod's
//! `kubesphere.io/serviceaccount-name` annotation at `/var/run/secrets/kubesphere.io/serviceaccount`.
//!
//! * [`mod@inject`]: the mutation itself ([`mutate`], [`inject()`]), no I/O of its own.
//! * [`lookup`]: where ServiceAccounts and Secrets are read from ([`KubeLookup`], [`MemoryLookup`]).
//! * [`review`]: decoding `AdmissionReview` bodies.

pub mod inject;
pub mod lookup;
pub mod review;

pub use self::{
    inject::{InjectOptions, Injector, inject, mutate},
    lookup::{KubeLookup, Lookup, LookupError, MemoryLookup},
    review::{PodReview, ReviewError, encode_review, parse_review},
};
