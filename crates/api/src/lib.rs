//! Kubernetes object types of ksiam: the `kubesphere.io` ServiceAccount, the `iam.kubesphere.io`
//! roles and bindings, the Cluster, Workspace and WorkspaceTemplate objects the tenant API reads,
//! the names KubeSphere gives meaning to, and the built-in roles.
//!
//! This crate does no I/O. Its main modules:
//!
//! - [`serviceaccount`]: `kubesphere.io/v1alpha1` [`ServiceAccount`].
//! - [`iam`]: `iam.kubesphere.io/v1beta1` roles, bindings, [`RoleTemplate`], [`BuiltinRole`], [`User`].
//! - [`cluster`], [`tenant`]: [`Cluster`], [`Workspace`], [`WorkspaceTemplate`].
//! - [`constants`]: labels, annotations, finalizers, well-known users, event reasons.
//! - [`builtin`]: the GlobalRoles, GlobalRoleBindings, ClusterRoles and BuiltinRoles KubeSphere installs.
//! - [`generate`]: the CRDs and the YAML files that `cargo xtask codegen` writes to `deploy/`.
//!
//! Objects that KubeSphere defines without a `spec` (the ServiceAccount and all iam kinds except
//! RoleTemplate) keep their fields in a `*Spec` struct on the Rust side, flattened onto the
//! top level of the object on the wire:
//!
//! ```
//! use ksiam_api::{ServiceAccount, ServiceAccountSpec};
//!
//! let sa = ServiceAccount::new("sample", ServiceAccountSpec::default());
//! let json = serde_json::to_value(&sa).unwrap();
//! assert_eq!(json["apiVersion"], "kubesphere.io/v1alpha1");
//! assert!(json.get("spec").is_none() && json.get("secrets").is_none());
//! ```

pub mod builtin;
pub mod cluster;
pub mod constants;
pub mod generate;
pub mod iam;
pub mod identity;
mod schema;
pub mod serviceaccount;
pub mod tenant;

pub use self::{
    cluster::{Cluster, ClusterSpec, ClusterStatus},
    generate::{crds, generated_files},
    iam::{
        AggregationRoleTemplates, BuiltinRole, BuiltinRoleSpec, ClusterRole, ClusterRoleBinding,
        ClusterRoleBindingSpec, ClusterRoleSpec, GlobalRole, GlobalRoleBinding, GlobalRoleBindingSpec,
        GlobalRoleSpec, IamRole, IamRoleBinding, Role, RoleBinding, RoleBindingSpec, RoleSpec, RoleTemplate,
        RoleTemplateSpec, User, UserSpec, UserStatus, WorkspaceRole, WorkspaceRoleBinding,
        WorkspaceRoleBindingSpec, WorkspaceRoleSpec,
    },
    serviceaccount::{ServiceAccount, ServiceAccountSpec},
    tenant::{Workspace, WorkspaceSpec, WorkspaceTemplate, WorkspaceTemplateSpec},
};
