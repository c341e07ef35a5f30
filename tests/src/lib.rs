//! Helpers for the e2e tests: kubectl, a fresh namespace per test, polling, and a tiny admission webhook.
//!
//! The tests need a real API server, started by `cargo xtask e2e` (or `cargo xtask test`), which exports
//! `KSIAM_E2E=1`, `KUBECONFIG`, `KSIAM_KUBECTL` and `KSIAM_E2E_RUN_DIR`. Without them every test fails
//! (never skips) and says how to run it.

mod access;
mod env;
mod grpc;
mod kubectl;
mod namespace;
mod poll;
mod seed;
mod webhook;

pub use self::{
    access::{
        api_server, gateway_addr, gateway_ready, gateway_request, kubectl_with_token, service_account_token,
        token_kubeconfig,
    },
    env::{E2e, e2e, workspace_root},
    grpc::{GrpcIdentity, grpc_ca_pem, grpc_channel, grpc_tls, grpc_tls_anonymous},
    kubectl::{apply, get_json, kubectl, kubectl_with_stdin},
    namespace::{TestNamespace, random_suffix},
    poll::poll,
    seed::{
        SEED_CLUSTER_ROLE_BINDING, SEED_GLOBAL_ROLE_BINDING, SEED_POD, SEED_ROLE_AND_BINDING,
        SEED_SERVICE_ACCOUNT, SEED_WORKSPACE_ROLE_BINDING, secret_names, secret_token, token_secret_name,
    },
    webhook::{Hook, TestWebhook},
};
