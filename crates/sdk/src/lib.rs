//! A client for the KubeSphere v4 API server (ks-apiserver) from inside a pod, with the pod's KubeSphere
//! ServiceAccount token: the Rust counterpart of the Go SDK `kubesphere.io/client-go/rest`.
//!
//! - [`in_cluster_config`] reads the token that KubeSphere mounts at [`TOKEN_FILE`] and picks
//!   `https://ks-apiserver.kubesphere-system:443` (trusting the mounted `ca.crt`) or
//!   `http://ks-apiserver.kubesphere-system:80`, as the Go SDK does. `KUBESPHERE_HOST` and
//!   `KUBESPHERE_TOKEN_FILE` override the defaults; [`InClusterOptions`] and [`Config::from_parts`] set
//!   everything in code.
//! - The token file is read again whenever it changes (kubelet swaps it on rotation), so a long-running
//!   client keeps working with a rotated token, over `http` and `https`.
//! - [`Client`] wraps a `kube::Client`: use [`Client::kube`] with `kube::Api<T>` for the Kubernetes APIs
//!   that ks-apiserver proxies (`/api`, `/apis`), and the typed methods for KubeSphere's `/kapis`:
//!   [`Client::list_clusters`], [`Client::list_workspaces`], [`Client::list_namespaces`],
//!   [`Client::subject_access_review`]. `kube::Client::try_from(config)` works as well.
//! - Server errors are [`Error::Api`] with the server's `Status`; a 403's message is exactly the server's.
//! - [`set_kubesphere_defaults`] sets the Go SDK's User-Agent format when none is set.
//!
//! The token never appears in `Debug` output, logs or errors.
//!
//! # Example
//!
//! ```no_run
//! use k8s_openapi::api::core::v1::ConfigMap;
//! use kubesphere_client::{Client, ListQuery, in_cluster_config, set_kubesphere_defaults};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = in_cluster_config()?;
//! set_kubesphere_defaults(&mut config);
//! let client = Client::try_from(config)?;
//!
//! // KubeSphere's own API.
//! match client.list_clusters(&ListQuery::new().sort_by("name")).await {
//!     Ok(clusters) => println!("{} clusters: {:?}", clusters.total_items, clusters.names()),
//!     // For example 403: "clusters.tenant.kubesphere.io is forbidden: User ... cannot list ..."
//!     Err(err) => eprintln!("{:?}: {err}", err.code()),
//! }
//!
//! // Kubernetes APIs, proxied by ks-apiserver and authorized by KubeSphere.
//! let config_maps: kube::Api<ConfigMap> = kube::Api::default_namespaced(client.kube().clone());
//! for cm in config_maps.list(&Default::default()).await? {
//!     println!("{}", cm.metadata.name.unwrap_or_default());
//! }
//! # Ok(())
//! # }
//! ```
//!
//! # TLS
//!
//! TLS uses rustls with the aws-lc-rs provider. The client installs that provider as the process default
//! if none is installed yet; a process that installs another one first keeps it.
//!
//! # Kubernetes version
//!
//! Through kube, this crate depends on `k8s-openapi`, which needs exactly one Kubernetes version feature.
//! Like every library on kube, this crate leaves the choice to the application: add
//! `k8s-openapi = { version = "0.29", features = ["v1_34"] }` (or another version) to your binary.
#![deny(missing_docs)]

mod client;
mod config;
mod error;
mod iam;
mod layer;
mod tenant;
mod token;

pub use self::{
    client::{Client, SUBJECT_ACCESS_REVIEWS_PATH, TENANT_API},
    config::{
        CA_FILE_NAME, Config, DEFAULT_TOKEN_RELOAD_INTERVAL, HOST_ENV, HTTP_HOST, HTTPS_HOST,
        InClusterOptions, SERVICE_ACCOUNT_DIR, TOKEN_FILE, TOKEN_FILE_ENV, default_user_agent,
        in_cluster_config, set_kubesphere_defaults,
    },
    error::Error,
    iam::{
        IAM_API_VERSION, NonResourceAttributes, ResourceAttributes, SubjectAccessReview,
        SubjectAccessReviewSpec, SubjectAccessReviewStatus,
    },
    tenant::{ListQuery, TenantList},
};
/// The kube version this crate is built on, for `kube::Api<T>` with [`Client::kube`].
pub use kube;
/// The `Status` that [`Error::Api`] carries (kube's type, re-exported).
pub use kube::core::Status;

/// The README's example, compiled as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
