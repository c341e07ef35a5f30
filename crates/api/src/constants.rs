//! Names KubeSphere gives meaning to: API groups, labels, annotations, finalizers, secret and
//! volume names, well-known users and groups, event reasons and controller names.
//!
//! The values are copied exactly from KubeSphere v4 so that ksiam can replace it in place.

// --- API groups and versions ---

/// API group of the KubeSphere ServiceAccount.
pub const KUBESPHERE_GROUP: &str = "kubesphere.io";
/// API version of the KubeSphere ServiceAccount within [`KUBESPHERE_GROUP`].
pub const KUBESPHERE_VERSION: &str = "v1alpha1";
/// Kind of the KubeSphere ServiceAccount.
pub const SERVICE_ACCOUNT_KIND: &str = "ServiceAccount";
/// Plural resource name of the KubeSphere ServiceAccount.
pub const SERVICE_ACCOUNT_PLURAL: &str = "serviceaccounts";
/// Singular resource name of the KubeSphere ServiceAccount.
pub const SERVICE_ACCOUNT_SINGULAR: &str = "serviceaccount";
/// API group of the IAM objects (roles, bindings, role templates, users).
pub const IAM_GROUP: &str = "iam.kubesphere.io";
/// Storage version of the IAM objects.
pub const IAM_VERSION: &str = "v1beta1";
/// Older, deprecated version still served for GlobalRole(Binding)s and WorkspaceRole(Binding)s.
pub const IAM_DEPRECATED_VERSION: &str = "v1alpha2";
/// API group of Cluster objects.
pub const CLUSTER_GROUP: &str = "cluster.kubesphere.io";
/// API group of Workspace and WorkspaceTemplate objects and of the tenant API.
pub const TENANT_GROUP: &str = "tenant.kubesphere.io";
/// API group of Kubernetes RBAC, also used as the `apiGroup` of Kubernetes ServiceAccount subjects.
pub const RBAC_GROUP: &str = "rbac.authorization.k8s.io";
/// The CRD category shared by every `iam.kubesphere.io` kind.
pub const IAM_CATEGORY: &str = "iam";

// --- Kinds used in role references and subjects ---

/// `roleRef.kind` of a GlobalRole.
pub const GLOBAL_ROLE_KIND: &str = "GlobalRole";
/// `roleRef.kind` of a WorkspaceRole.
pub const WORKSPACE_ROLE_KIND: &str = "WorkspaceRole";
/// `roleRef.kind` of an iam ClusterRole.
pub const CLUSTER_ROLE_KIND: &str = "ClusterRole";
/// `roleRef.kind` of an iam Role.
pub const ROLE_KIND: &str = "Role";
/// `subjects[].kind` of a user.
pub const USER_SUBJECT_KIND: &str = "User";
/// `subjects[].kind` of a group.
pub const GROUP_SUBJECT_KIND: &str = "Group";
/// `subjects[].kind` of a ServiceAccount (KubeSphere's when `apiGroup` is [`KUBESPHERE_GROUP`]).
pub const SERVICE_ACCOUNT_SUBJECT_KIND: &str = "ServiceAccount";

// --- ServiceAccount token secrets ---

/// `type` of the Secret that holds a KubeSphere ServiceAccount token.
pub const SERVICE_ACCOUNT_TOKEN_SECRET_TYPE: &str = "kubesphere.io/service-account-token";
/// Secret annotation naming the ServiceAccount the token belongs to.
pub const SERVICE_ACCOUNT_NAME_ANNOTATION: &str = "kubesphere.io/service-account.name";
/// Secret annotation reserved for the ServiceAccount UID; KubeSphere never sets it.
pub const SERVICE_ACCOUNT_UID_ANNOTATION: &str = "kubesphere.io/service-account.uid";
/// Secret data key holding the token.
pub const SERVICE_ACCOUNT_TOKEN_KEY: &str = "token";
/// Group-like constant and username prefix (without the trailing colon) of ServiceAccounts.
pub const SERVICE_ACCOUNT_GROUP: &str = "kubesphere:serviceaccount";
/// Prefix of every ServiceAccount username: `kubesphere:serviceaccount:<namespace>:<name>`.
pub const SERVICE_ACCOUNT_USERNAME_PREFIX: &str = "kubesphere:serviceaccount:";
/// Separator between the parts of a ServiceAccount username.
pub const SERVICE_ACCOUNT_USERNAME_SEPARATOR: &str = ":";
/// Declared (unused) key of the user extra naming the token secret's namespace.
pub const SERVICE_ACCOUNT_EXTRA_SECRET_NAMESPACE: &str = "secret-namespace";
/// Declared (unused) key of the user extra naming the token secret.
pub const SERVICE_ACCOUNT_EXTRA_SECRET_NAME: &str = "secret-name";
/// Finalizer the ServiceAccount controller puts on every KubeSphere ServiceAccount.
pub const SERVICE_ACCOUNT_FINALIZER: &str = "finalizers.kubesphere.io/serviceaccount";
/// Value of the `token_type` claim of ServiceAccount tokens.
pub const STATIC_TOKEN_TYPE: &str = "static_token";

// --- Pod injection ---

/// Pod annotation naming the KubeSphere ServiceAccount whose token is mounted into the pod.
pub const POD_SERVICE_ACCOUNT_ANNOTATION: &str = "kubesphere.io/serviceaccount-name";
/// Name of the projected volume the webhook adds to pods.
pub const SERVICE_ACCOUNT_VOLUME_NAME: &str = "kubesphere-service-account";
/// Where the webhook mounts the projected volume in every container.
pub const SERVICE_ACCOUNT_MOUNT_PATH: &str = "/var/run/secrets/kubesphere.io/serviceaccount";
/// ConfigMap holding the KubeSphere CA in TLS mode.
pub const ROOT_CA_CONFIG_MAP: &str = "kubesphere-root-ca.crt";
/// Key (and mounted file name) of the CA certificate in [`ROOT_CA_CONFIG_MAP`].
pub const ROOT_CA_KEY: &str = "ca.crt";
/// Secret in [`KUBESPHERE_NAMESPACE`] whose [`ROOT_CA_KEY`] is copied into [`ROOT_CA_CONFIG_MAP`].
pub const APISERVER_TLS_SECRET: &str = "ks-apiserver-tls-certs";
/// Pod-template annotation set to the current time to roll out a workload again.
pub const RESTARTED_AT_ANNOTATION: &str = "kubesphere.io/restartedAt";
/// HTTP path of the pod injection webhook on ks-controller-manager.
pub const POD_INJECTOR_WEBHOOK_PATH: &str = "/serviceaccount-pod-injector";
/// Name of the MutatingWebhookConfiguration holding the pod injector.
pub const POD_INJECTOR_WEBHOOK_CONFIGURATION: &str = "serviceaccount.kubesphere.io";
/// Name of the pod injector webhook inside [`POD_INJECTOR_WEBHOOK_CONFIGURATION`].
pub const POD_INJECTOR_WEBHOOK_NAME: &str = "serviceaccount-pod-injector.kubesphere.io";

// --- Identities ksiam vouches for ---

/// The `extra` key ksiam sets on every identity it authenticated: in its TokenReview answers to
/// kube-apiserver, and as `Impersonate-Extra-*` on requests the gateway proxies. kube-apiserver passes it on to
/// the SubjectAccessReview webhook and to admission (`userInfo.extra`), which is how ksiam tells its own
/// identities from Kubernetes' (ServiceAccounts, certificates): it decides only for the former.
pub const AUTHENTICATED_BY_EXTRA: &str = "ksiam.kubesphere.io/authenticated-by";
/// The value of [`AUTHENTICATED_BY_EXTRA`].
pub const AUTHENTICATED_BY_KSIAM: &str = "ksiam";

// --- Labels ---

/// Label naming the workspace a namespace, WorkspaceRole or WorkspaceRoleBinding belongs to.
pub const WORKSPACE_LABEL: &str = "kubesphere.io/workspace";
/// Label marking objects managed by KubeSphere (namespaces, role templates).
pub const MANAGED_LABEL: &str = "kubesphere.io/managed";
/// Label marking namespaces that must not be deleted.
pub const PROTECTED_RESOURCE_LABEL: &str = "kubesphere.io/protected-resource";
/// Label on bindings naming the role they grant.
pub const ROLE_REF_LABEL: &str = "iam.kubesphere.io/role-ref";
/// Label on bindings naming the user they bind.
pub const USER_REF_LABEL: &str = "iam.kubesphere.io/user-ref";
/// Label on role templates and BuiltinRoles naming their scope (see the `SCOPE_LABEL_*` values).
pub const SCOPE_LABEL: &str = "iam.kubesphere.io/scope";
/// [`SCOPE_LABEL`] value for global objects.
pub const SCOPE_LABEL_GLOBAL: &str = "global";
/// [`SCOPE_LABEL`] value for workspace objects.
pub const SCOPE_LABEL_WORKSPACE: &str = "workspace";
/// [`SCOPE_LABEL`] value for cluster objects.
pub const SCOPE_LABEL_CLUSTER: &str = "cluster";
/// [`SCOPE_LABEL`] value for namespace objects.
pub const SCOPE_LABEL_NAMESPACE: &str = "namespace";
/// Label on role templates naming their UI category.
pub const CATEGORY_LABEL: &str = "iam.kubesphere.io/category";
/// Label on role templates aggregated into `operator` roles.
pub const AGGREGATE_TO_OPERATOR_LABEL: &str = "iam.kubesphere.io/aggregate-to-operator";
/// Label on role templates aggregated into `viewer` roles.
pub const AGGREGATE_TO_VIEWER_LABEL: &str = "iam.kubesphere.io/aggregate-to-viewer";
/// Label on role templates aggregated into `regular` roles.
pub const AGGREGATE_TO_REGULAR_LABEL: &str = "iam.kubesphere.io/aggregate-to-regular";
/// Label on role templates aggregated into `self-provisioner` roles.
pub const AGGREGATE_TO_SELF_PROVISIONER_LABEL: &str = "iam.kubesphere.io/aggregate-to-self-provisioner";
/// Label on role templates aggregated into the `authenticated` GlobalRole.
pub const AGGREGATE_TO_AUTHENTICATED_LABEL: &str = "iam.kubesphere.io/aggregate-to-authenticated";
/// Label on role templates aggregated into the `cluster-viewer` ClusterRole.
pub const AGGREGATE_TO_CLUSTER_VIEWER_LABEL: &str = "iam.kubesphere.io/aggregate-to-cluster-viewer";
/// Label on native Kubernetes RoleBindings created for core ServiceAccounts with [`IAM_ROLE_ANNOTATION`].
pub const SERVICE_ACCOUNT_REF_LABEL: &str = "iam.kubesphere.io/serviceaccount-ref";
/// Label on native RoleBindings mirrored from an iam RoleBinding.
pub const ROLE_BINDING_REF_LABEL: &str = "iam.kubesphere.io/rolebinding-ref";
/// Label on native ClusterRoles mirrored from an iam ClusterRole.
pub const CLUSTER_ROLE_REF_LABEL: &str = "iam.kubesphere.io/clusterrole-ref";
/// Label on native ClusterRoleBindings mirrored from an iam ClusterRoleBinding.
pub const CLUSTER_ROLE_BINDING_REF_LABEL: &str = "iam.kubesphere.io/clusterrolebinding-ref";

// --- Annotations ---

/// Role annotation holding a Rego policy evaluated before the role's rules (package `authz`, rule `allow`).
pub const REGO_OVERRIDE_ANNOTATION: &str = "iam.kubesphere.io/rego-override";
/// Role annotation asking the role-template controller to aggregate matching templates automatically.
pub const AUTO_AGGREGATE_ANNOTATION: &str = "iam.kubesphere.io/auto-aggregate";
/// Legacy aggregation annotation, only used to filter lists.
pub const AGGREGATION_ROLES_ANNOTATION: &str = "iam.kubesphere.io/aggregation-roles";
/// User annotation listing the clusters granted to the user, comma separated.
pub const GRANTED_CLUSTERS_ANNOTATION: &str = "iam.kubesphere.io/granted-clusters";
/// Role-template annotation describing its rules for the UI.
pub const ROLE_TEMPLATE_RULES_ANNOTATION: &str = "iam.kubesphere.io/role-template-rules";
/// Annotation on core ServiceAccounts naming the iam role to bind them to.
pub const IAM_ROLE_ANNOTATION: &str = "iam.kubesphere.io/role";
/// Annotation naming the creator of an object.
pub const CREATOR_ANNOTATION: &str = "kubesphere.io/creator";
/// Annotation with a JSON description of an object in several languages, e.g. `{"en":"..."}`.
pub const DESCRIPTION_ANNOTATION: &str = "kubesphere.io/description";
/// Annotation with a human-friendly display name.
pub const ALIAS_NAME_ANNOTATION: &str = "kubesphere.io/alias-name";

/// Prefix of native Kubernetes RBAC objects mirrored from iam roles and bindings.
pub const IAM_MIRROR_NAME_PREFIX: &str = "kubesphere:iam:";

// --- Finalizers ---

/// Finalizer of GlobalRoles (host cluster sync).
pub const GLOBAL_ROLE_FINALIZER: &str = "finalizers.kubesphere.io/globalroles";
/// Finalizer of GlobalRoleBindings (host cluster sync).
pub const GLOBAL_ROLE_BINDING_FINALIZER: &str = "finalizers.kubesphere.io/globalrolebindings";
/// Finalizer of WorkspaceRoles (host cluster sync).
pub const WORKSPACE_ROLE_FINALIZER: &str = "finalizers.kubesphere.io/workspaceroles";
/// Finalizer of WorkspaceRoleBindings (host cluster sync).
pub const WORKSPACE_ROLE_BINDING_FINALIZER: &str = "finalizers.kubesphere.io/workspacerolebindings";
/// Finalizer that namespace and workspace-template controllers use to mark "already initialised".
pub const CASCADING_DELETION_FINALIZER: &str = "kubesphere.io/cascading-deletion";

// --- Request scopes ---

/// Scope of requests on global resources (users, global roles, workspaces, clusters).
pub const SCOPE_GLOBAL: &str = "Global";
/// Scope of cluster-wide requests.
pub const SCOPE_CLUSTER: &str = "Cluster";
/// Scope of requests inside a workspace.
pub const SCOPE_WORKSPACE: &str = "Workspace";
/// Scope of requests inside a namespace.
pub const SCOPE_NAMESPACE: &str = "Namespace";

// --- Well-known names ---

/// The namespace KubeSphere runs in.
pub const KUBESPHERE_NAMESPACE: &str = "kubesphere-system";
/// The workspace holding KubeSphere's own namespaces.
pub const SYSTEM_WORKSPACE: &str = "system-workspace";
/// User of requests without credentials.
pub const ANONYMOUS_USER: &str = "system:anonymous";
/// Group of requests without credentials.
pub const UNAUTHENTICATED_GROUP: &str = "system:unauthenticated";
/// Group of every authenticated user (never of ServiceAccounts).
pub const AUTHENTICATED_GROUP: &str = "system:authenticated";
/// User of pre-registration requests (first login through an identity provider).
pub const PRE_REGISTRATION_USER: &str = "system:pre-registration";
/// Group bound to the `pre-registration` GlobalRole.
pub const PRE_REGISTRATION_GROUP: &str = "pre-registration";
/// The ServiceAccount (in [`KUBESPHERE_NAMESPACE`]) the console runs as.
pub const CONSOLE_SERVICE_ACCOUNT: &str = "ks-console";

// --- Controllers and events ---

/// Name of the ServiceAccount controller, used as the event source.
pub const SERVICE_ACCOUNT_CONTROLLER_NAME: &str = "ks-serviceaccount";
/// Name of the controller that fills token secrets.
pub const SERVICE_ACCOUNT_SECRET_CONTROLLER_NAME: &str = "serviceaccount-secret";
/// Event reason: a token secret was created (or, for role aggregation, the role was synced).
pub const EVENT_REASON_SYNCED: &str = "Synced";
/// Event message emitted with [`EVENT_REASON_SYNCED`] after the token secret is created.
pub const EVENT_MESSAGE_TOKEN_SECRET_CREATED: &str = "Create token secret successfully";
/// Event reason: a secret listed by a ServiceAccount is missing, of the wrong type or of another account.
pub const EVENT_REASON_INVALID_SECRET: &str = "InvalidSecret";
/// Event reason: role templates could not be aggregated into a role.
pub const EVENT_REASON_AGGREGATE_ROLE_TEMPLATE_FAILED: &str = "AggregateRoleTemplateFailed";
