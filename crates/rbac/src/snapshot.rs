//! The compiled policy snapshot: bindings indexed by subject, then by scope.
//!
//! ```text
//!   users["kubesphere:serviceaccount:default:sample"] ─┐
//!   groups["system:authenticated"] ────────────────────┤   SubjectEntry
//!                                                      ├─ global     [GRB…]
//!                                                      ├─ cluster    [CRB…]
//!                                                      ├─ workspaces {ws → [WRB…]}
//!                                                      └─ namespaces {ns → [RB…]}
//!   roles by kind and name (bindings resolve their roleRef late, so a missing role grants nothing)
//!   namespaces {ns → workspace label}
//! ```
//!
//! A decision looks up the user and each of its groups once, then walks only the bindings of those
//! subjects in the four phases of spec §9.3. Its cost does not depend on the number of unrelated bindings.
//!
//! Every map is a persistent (structurally shared) hash map, so cloning a snapshot is a handful of reference
//! count increments and an update copies only the path to the changed entry. [`PolicyStore`] keeps a
//! private copy for its single writer and publishes a fresh `Arc<Snapshot>` after each change; readers load
//! the current one without locks and never wait for a writer.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use arc_swap::{ArcSwap, Guard};
use parking_lot::Mutex;

use crate::{
    matching::{SubjectKey, rule_allows, subject_applies},
    model::{
        Binding, BindingKey, BindingKind, Namespace, Policy, PolicyRule, Role, RoleKey, RoleKind, RoleRef,
        Subject,
    },
    rego::RegoPolicy,
    request::{Attributes, Scope},
    status::{go_quote, push_go_quoted},
};

type Map<K, V> = imbl::GenericHashMap<K, V, foldhash::fast::RandomState, imbl::shared_ptr::DefaultSharedPtr>;
type List = Arc<[Arc<CompiledBinding>]>;

fn new_map<K, V>() -> Map<K, V>
where
    K: std::hash::Hash + Eq + Clone,
    V: Clone,
{
    Map::with_hasher(foldhash::fast::RandomState::default())
}

/// A role ready for evaluation.
#[derive(Debug, PartialEq)]
pub struct CompiledRole {
    /// The role's kind.
    pub kind: RoleKind,
    /// The role's namespace (`Role` only).
    pub namespace: Arc<str>,
    /// The role's name.
    pub name: Arc<str>,
    /// Its rules.
    pub rules: Vec<PolicyRule>,
    /// Its rego override, compiled.
    pub rego: Option<RegoPolicy>,
}

impl CompiledRole {
    fn compile(role: &Role) -> Self {
        Self {
            kind: role.kind,
            namespace: role.namespace.as_str().into(),
            name: role.name.as_str().into(),
            rules: role.rules.clone(),
            rego: role
                .rego
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(RegoPolicy::compile),
        }
    }

    /// Whether this role allows the request (by a rule or its rego override).
    pub fn allows(&self, a: &Attributes<'_>) -> bool {
        self.grants(a).is_some()
    }

    /// What in this role allows the request, rules first (cheap), then the rego override. Upstream
    /// evaluates rego first; both only ever add allows, so the decision is the same.
    fn grants(&self, a: &Attributes<'_>) -> Option<Granted> {
        if let Some(i) = self.rules.iter().position(|r| rule_allows(r, a)) {
            return Some(Granted::Rule(i));
        }
        if self.rego.as_ref().is_some_and(|p| p.allows(a)) {
            return Some(Granted::Rego);
        }
        None
    }
}

/// A binding ready for evaluation.
#[derive(Debug, PartialEq)]
pub struct CompiledBinding {
    /// The binding's kind.
    pub kind: BindingKind,
    /// The binding's namespace (`RoleBinding` only).
    pub namespace: Arc<str>,
    /// The binding's name.
    pub name: Arc<str>,
    /// The workspace label (WorkspaceRoleBindings are only indexed when it is set).
    pub workspace: Option<Arc<str>>,
    /// The role reference as written.
    pub role_ref: RoleRef,
    /// The subjects as written (for reasons).
    pub subjects: Box<[Subject]>,
    role_kind: Option<RoleKind>,
}

impl CompiledBinding {
    fn compile(b: &Binding) -> Self {
        Self {
            kind: b.kind,
            namespace: b.namespace.as_str().into(),
            name: b.name.as_str().into(),
            workspace: b.workspace.as_deref().map(Arc::from),
            role_ref: b.role_ref.clone(),
            subjects: b.subjects.clone().into(),
            role_kind: RoleKind::from_ref_kind(&b.role_ref.kind),
        }
    }

    /// The distinct index keys of the subjects (recomputed on updates; not kept, to save memory).
    fn keys(&self) -> Vec<SubjectKey> {
        let mut keys: Vec<SubjectKey> = self
            .subjects
            .iter()
            .filter_map(|s| SubjectKey::of(s, &self.namespace))
            .collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// The kind of role the `roleRef` names; `None` for a kind the evaluation does not know (an error).
    pub fn role_kind(&self) -> Option<RoleKind> {
        self.role_kind
    }

    /// The key identifying this binding.
    pub fn key(&self) -> BindingKey {
        BindingKey {
            kind: self.kind,
            namespace: self.namespace.to_string(),
            name: self.name.to_string(),
        }
    }

    fn ref_error(&self) -> Option<String> {
        match self.role_kind {
            Some(_) => None,
            None => Some(format!(
                "unsupported role reference kind: {}",
                go_quote(&self.role_ref.kind)
            )),
        }
    }

    /// KubeSphere's description: `RoleBinding "name/ns" of Role "admin" to ServiceAccount "sample/default"`.
    pub fn describe(&self, a: &Attributes<'_>) -> String {
        let mut o = String::with_capacity(96);
        self.push_description(&mut o, a);
        o
    }

    /// Appends [`Self::describe`]'s text to `o` (one buffer: decisions describe their binding at high rates).
    pub fn push_description(&self, o: &mut String, a: &Attributes<'_>) {
        let default_ns: &str = &self.namespace;
        o.push_str(self.kind.as_str());
        o.push(' ');
        if self.kind == BindingKind::RoleBinding {
            push_go_quoted(o, &[&self.name, "/", &self.namespace]);
        } else {
            push_go_quoted(o, &[&self.name]);
        }
        o.push_str(" of ");
        o.push_str(&self.role_ref.kind);
        o.push(' ');
        push_go_quoted(o, &[&self.role_ref.name]);
        o.push_str(" to ");
        if let Some(s) = self
            .subjects
            .iter()
            .find(|s| subject_applies(s, a.user, a.groups, default_ns))
        {
            crate::matching::push_subject(o, s, default_ns);
        }
    }
}

/// Which part of a role allowed a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granted {
    /// The rule at this index of the role's rules.
    Rule(usize),
    /// The role's rego override.
    Rego,
}

/// What allowed a request.
#[derive(Clone, Debug)]
pub struct Grant {
    /// The binding.
    pub binding: Arc<CompiledBinding>,
    /// The role it refers to.
    pub role: Arc<CompiledRole>,
    /// The rule or policy of the role.
    pub granted: Granted,
}

/// Why nothing allowed a request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Denial {
    /// The snapshot is not ready yet (fail closed).
    pub not_ready: bool,
    /// Role-reference errors met during evaluation (empty in the common case, so no allocation).
    pub errors: Vec<String>,
}

/// The outcome of a decision.
#[derive(Clone, Debug)]
pub enum Decision {
    /// A binding allowed it.
    Allow(Grant),
    /// Nothing allowed it.
    Deny(Denial),
}

impl Decision {
    /// Whether the request is allowed.
    pub fn allowed(&self) -> bool {
        matches!(self, Self::Allow(_))
    }

    /// The reason in KubeSphere's words: `RBAC: allowed by …` on allow; on deny `""` unless errors occurred,
    /// then `RBAC: <errors>` (the text appended to 403 messages).
    pub fn reason(&self, a: &Attributes<'_>) -> String {
        match self {
            Self::Allow(g) => {
                let mut o = String::with_capacity(112);
                o.push_str("RBAC: allowed by ");
                g.binding.push_description(&mut o, a);
                o
            }
            Self::Deny(d) if d.not_ready => "authorizer is not ready: policy not synced yet".to_owned(),
            Self::Deny(d) if d.errors.is_empty() => String::new(),
            Self::Deny(d) => format!("RBAC: {}", aggregate(&d.errors)),
        }
    }

    /// A full explanation: the reason plus the binding, role and rule that decided.
    pub fn explain(&self, a: &Attributes<'_>) -> String {
        match self {
            Self::Allow(g) => {
                let what = match g.granted {
                    Granted::Rule(i) => format!(
                        "rule #{i} {}",
                        serde_json::to_string(&g.role.rules[i]).unwrap_or_default()
                    ),
                    Granted::Rego => "its rego-override policy".to_owned(),
                };
                format!(
                    "allowed: {}; {} {} grants it by {what}",
                    self.reason(a),
                    g.role.kind.as_str(),
                    go_quote(&g.role.name)
                )
            }
            Self::Deny(d) if d.not_ready => format!("denied: {}", self.reason(a)),
            Self::Deny(_) => {
                let why = self.reason(a);
                let why = if why.is_empty() {
                    "no binding of this subject grants it".to_owned()
                } else {
                    why
                };
                format!(
                    "denied: {why} (scope {})",
                    if a.scope == Scope::None {
                        "none"
                    } else {
                        a.scope.as_str()
                    }
                )
            }
        }
    }
}

/// Kubernetes' aggregate error text: one message verbatim, several as `[a, b]`.
fn aggregate(errors: &[String]) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for e in errors {
        if !seen.contains(&e.as_str()) {
            seen.push(e);
        }
    }
    if seen.len() == 1 {
        seen[0].to_owned()
    } else {
        format!("[{}]", seen.join(", "))
    }
}

/// Per-scope lists of one subject, sorted by scope name. Subjects are bound in few scopes, so a sorted
/// slice is smaller than a map and an update copies only this subject's entries.
type Scoped = Arc<[(Arc<str>, List)]>;

fn scoped_get<'a>(scoped: &'a Option<Scoped>, scope: &str) -> Option<&'a List> {
    let s = scoped.as_deref()?;
    s.binary_search_by(|(k, _)| (**k).cmp(scope))
        .ok()
        .map(|i| &s[i].1)
}

/// The bindings of one subject, by phase.
#[derive(Clone, Default)]
struct SubjectEntry {
    global: Option<List>,
    cluster: Option<List>,
    workspaces: Option<Scoped>,
    namespaces: Option<Scoped>,
}

impl SubjectEntry {
    fn is_empty(&self) -> bool {
        self.global.is_none()
            && self.cluster.is_none()
            && self.workspaces.is_none()
            && self.namespaces.is_none()
    }
}

fn list_with(list: &Option<List>, b: &Arc<CompiledBinding>) -> Option<List> {
    let mut v: Vec<Arc<CompiledBinding>> = list.as_deref().map(<[_]>::to_vec).unwrap_or_default();
    v.push(b.clone());
    Some(v.into())
}

fn list_without(list: &Option<List>, b: &Arc<CompiledBinding>) -> Option<List> {
    let v: Vec<Arc<CompiledBinding>> = list
        .as_deref()
        .unwrap_or_default()
        .iter()
        .filter(|x| !Arc::ptr_eq(x, b))
        .cloned()
        .collect();
    if v.is_empty() { None } else { Some(v.into()) }
}

/// The indexed policy. Cheap to clone; see the module docs.
#[derive(Clone)]
pub struct Snapshot {
    generation: u64,
    users: Map<Arc<str>, Arc<SubjectEntry>>,
    groups: Map<Arc<str>, Arc<SubjectEntry>>,
    binding_count: usize,
    global_roles: Map<Arc<str>, Arc<CompiledRole>>,
    workspace_roles: Map<Arc<str>, Arc<CompiledRole>>,
    cluster_roles: Map<Arc<str>, Arc<CompiledRole>>,
    roles: Map<Arc<str>, Map<Arc<str>, Arc<CompiledRole>>>,
    namespaces: Map<Arc<str>, Option<Arc<str>>>,
}

impl Default for Snapshot {
    fn default() -> Self {
        Self {
            generation: 0,
            users: new_map(),
            groups: new_map(),
            binding_count: 0,
            global_roles: new_map(),
            workspace_roles: new_map(),
            cluster_roles: new_map(),
            roles: new_map(),
            namespaces: new_map(),
        }
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Snapshot")
            .field("generation", &self.generation)
            .field("bindings", &self.binding_count)
            .field("subjects", &(self.users.len() + self.groups.len()))
            .field("namespaces", &self.namespaces.len())
            .finish()
    }
}

/// How many objects of each kind a snapshot holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Roles of all kinds.
    pub roles: usize,
    /// Bindings of all kinds.
    pub bindings: usize,
    /// Namespaces.
    pub namespaces: usize,
}

const MAX_INLINE_SUBJECTS: usize = 16;

impl Snapshot {
    /// Builds a snapshot from a whole policy (see [`PolicyIndex`] to keep updating it).
    pub fn build(policy: &Policy) -> Self {
        PolicyIndex::build(policy).snapshot
    }

    /// Bumped by [`PolicyStore`] on every published change.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Object counts.
    pub fn counts(&self) -> Counts {
        let namespaced_roles: usize = self.roles.values().map(|m| m.len()).sum();
        Counts {
            roles: self.global_roles.len()
                + self.workspace_roles.len()
                + self.cluster_roles.len()
                + namespaced_roles,
            bindings: self.binding_count,
            namespaces: self.namespaces.len(),
        }
    }

    // === updates ===

    /// Adds or replaces a role.
    fn upsert_role(&mut self, role: &Role) {
        let compiled = Arc::new(CompiledRole::compile(role));
        let name = compiled.name.clone();
        match role.kind {
            RoleKind::GlobalRole => drop(self.global_roles.insert(name, compiled)),
            RoleKind::WorkspaceRole => drop(self.workspace_roles.insert(name, compiled)),
            RoleKind::ClusterRole => drop(self.cluster_roles.insert(name, compiled)),
            RoleKind::Role => {
                let ns: Arc<str> = compiled.namespace.clone();
                let mut inner = self.roles.get(&*ns).cloned().unwrap_or_else(new_map);
                inner.insert(name, compiled);
                self.roles.insert(ns, inner);
            }
        }
    }

    /// Removes a role; bindings that refer to it then grant nothing.
    fn remove_role(&mut self, key: &RoleKey) {
        match key.kind {
            RoleKind::GlobalRole => drop(self.global_roles.remove(key.name.as_str())),
            RoleKind::WorkspaceRole => drop(self.workspace_roles.remove(key.name.as_str())),
            RoleKind::ClusterRole => drop(self.cluster_roles.remove(key.name.as_str())),
            RoleKind::Role => {
                if let Some(inner) = self.roles.get_mut(key.namespace.as_str()) {
                    inner.remove(key.name.as_str());
                    if inner.is_empty() {
                        self.roles.remove(key.namespace.as_str());
                    }
                }
            }
        }
    }

    fn upsert_namespace(&mut self, ns: &Namespace) {
        self.namespaces
            .insert(ns.name.as_str().into(), ns.workspace.as_deref().map(Arc::from));
    }

    fn remove_namespace(&mut self, name: &str) {
        self.namespaces.remove(name);
    }

    fn index(&mut self, b: &Arc<CompiledBinding>, add: bool) {
        for key in b.keys() {
            let (map, name) = match &key {
                SubjectKey::User(n) => (&mut self.users, n),
                SubjectKey::Group(n) => (&mut self.groups, n),
            };
            let mut entry: SubjectEntry = map.get(name.as_str()).map(|e| (**e).clone()).unwrap_or_default();
            let edit = |list: &Option<List>| {
                if add {
                    list_with(list, b)
                } else {
                    list_without(list, b)
                }
            };
            match b.kind {
                BindingKind::GlobalRoleBinding => entry.global = edit(&entry.global),
                BindingKind::ClusterRoleBinding => entry.cluster = edit(&entry.cluster),
                BindingKind::WorkspaceRoleBinding => {
                    let Some(ws) = &b.workspace else { continue };
                    entry.workspaces = edit_scoped(entry.workspaces.take(), ws, edit);
                }
                BindingKind::RoleBinding => {
                    entry.namespaces = edit_scoped(entry.namespaces.take(), &b.namespace, edit);
                }
            }
            if entry.is_empty() {
                map.remove(name.as_str());
            } else {
                map.insert(name.as_str().into(), Arc::new(entry));
            }
        }
    }

    // === decisions ===

    /// Decides a request. Allocation-free unless the policy has role-reference errors or rego overrides are
    /// evaluated.
    pub fn decide(&self, a: &Attributes<'_>) -> Decision {
        let mut found: [Option<&SubjectEntry>; MAX_INLINE_SUBJECTS] = [None; MAX_INLINE_SUBJECTS];
        let mut n = 0;
        let mut overflow = false;
        let lookups = std::iter::once(self.users.get(a.user))
            .chain(a.groups.iter().map(|g| self.groups.get(g.as_str())))
            .flatten()
            .map(|e| &**e);
        for entry in lookups {
            if n == MAX_INLINE_SUBJECTS {
                overflow = true;
                break;
            }
            found[n] = Some(entry);
            n += 1;
        }
        if overflow {
            // A user in more than 15 bound groups: gather on the heap instead.
            let all: Vec<&SubjectEntry> = std::iter::once(self.users.get(a.user))
                .chain(a.groups.iter().map(|g| self.groups.get(g.as_str())))
                .flatten()
                .map(|e| &**e)
                .collect();
            return self.decide_for(&all, a);
        }
        let entries: [&SubjectEntry; MAX_INLINE_SUBJECTS] =
            std::array::from_fn(|i| found[i].unwrap_or(&EMPTY));
        self.decide_for(&entries[..n], a)
    }

    /// Decides and explains: the binding, role and rule that allowed, or why nothing did, including the
    /// rego-override policies of the subject's roles that do not compile (they never allow).
    pub fn explain(&self, a: &Attributes<'_>) -> String {
        let decision = self.decide(a);
        let mut text = decision.explain(a);
        let mut broken: Vec<String> = Vec::new();
        let entries = std::iter::once(self.users.get(a.user))
            .chain(a.groups.iter().map(|g| self.groups.get(g.as_str())))
            .flatten();
        for e in entries {
            let scoped = |s: &Option<Scoped>| -> Vec<List> {
                s.as_deref()
                    .unwrap_or_default()
                    .iter()
                    .map(|(_, l)| l.clone())
                    .collect()
            };
            let lists = e
                .global
                .iter()
                .chain(e.cluster.iter())
                .cloned()
                .chain(scoped(&e.workspaces))
                .chain(scoped(&e.namespaces));
            for list in lists {
                for b in list.iter() {
                    let ns: &str = &b.namespace;
                    let Some(role) = b.role_kind.and_then(|k| self.role(k, ns, &b.role_ref.name)) else {
                        continue;
                    };
                    if let Some(err) = role.rego.as_ref().and_then(|r| r.error()) {
                        let line = format!(
                            "{} {}: rego-override does not compile: {err}",
                            role.kind.as_str(),
                            go_quote(&role.name)
                        );
                        if !broken.contains(&line) {
                            broken.push(line);
                        }
                    }
                }
            }
        }
        for line in broken {
            text.push_str("; ");
            text.push_str(&line);
        }
        text
    }

    fn decide_for(&self, entries: &[&SubjectEntry], a: &Attributes<'_>) -> Decision {
        let mut denial = Denial::default();

        // 1. GlobalRoleBindings: bad references are recorded and skipped.
        for e in entries {
            for b in e.global.as_deref().unwrap_or_default() {
                if let Some(err) = b.ref_error() {
                    denial.errors.push(err);
                    continue;
                }
                if let Some(g) = self.grant(b, "", a) {
                    return Decision::Allow(g);
                }
            }
        }
        if a.scope == Scope::Global {
            return Decision::Deny(denial);
        }

        // 2. The target workspace.
        let workspace: &str = match a.scope {
            Scope::Namespace => self
                .namespaces
                .get(a.namespace)
                .and_then(|w| w.as_deref())
                .unwrap_or(""),
            Scope::Workspace => a.workspace,
            _ => "",
        };

        // 3-5. A bad reference in these phases aborts (fail closed; see `naive`).
        if !workspace.is_empty() {
            let phase = entries
                .iter()
                .filter_map(|e| scoped_get(&e.workspaces, workspace));
            if let Some(d) = self.phase(phase, "", a, &mut denial) {
                return d;
            }
        }
        if a.scope == Scope::Namespace {
            let phase = entries
                .iter()
                .filter_map(|e| scoped_get(&e.namespaces, a.namespace));
            if let Some(d) = self.phase(phase, a.namespace, a, &mut denial) {
                return d;
            }
        }
        let phase = entries.iter().filter_map(|e| e.cluster.as_ref());
        if let Some(d) = self.phase(phase, "", a, &mut denial) {
            return d;
        }
        Decision::Deny(denial)
    }

    fn phase<'s>(
        &self,
        lists: impl Iterator<Item = &'s List> + Clone,
        namespace: &str,
        a: &Attributes<'_>,
        denial: &mut Denial,
    ) -> Option<Decision> {
        if let Some(err) = lists.clone().flat_map(|l| l.iter()).find_map(|b| b.ref_error()) {
            denial.errors.push(err);
            return Some(Decision::Deny(std::mem::take(denial)));
        }
        lists
            .flat_map(|l| l.iter())
            .find_map(|b| self.grant(b, namespace, a))
            .map(Decision::Allow)
    }

    fn grant(&self, b: &Arc<CompiledBinding>, namespace: &str, a: &Attributes<'_>) -> Option<Grant> {
        let role = self.role(b.role_kind?, namespace, &b.role_ref.name)?;
        let granted = role.grants(a)?;
        Some(Grant {
            binding: b.clone(),
            role: role.clone(),
            granted,
        })
    }

    /// The role of `kind` named `name` (`namespace` is read for [`RoleKind::Role`] only).
    pub fn role(&self, kind: RoleKind, namespace: &str, name: &str) -> Option<&Arc<CompiledRole>> {
        match kind {
            RoleKind::GlobalRole => self.global_roles.get(name),
            RoleKind::WorkspaceRole => self.workspace_roles.get(name),
            RoleKind::ClusterRole => self.cluster_roles.get(name),
            RoleKind::Role => self.roles.get(namespace)?.get(name),
        }
    }

    /// The workspace label of namespace `name`; `None` when the namespace is unknown or unlabelled.
    pub fn namespace_workspace(&self, name: &str) -> Option<&str> {
        self.namespaces.get(name)?.as_deref()
    }

    /// The bindings of `kind` that name the user or one of the groups, in the order a decision meets them
    /// (the user's, then each group's; a binding naming several of them appears once per name). `scope` is
    /// the workspace for WorkspaceRoleBindings and the namespace for RoleBindings, and is ignored otherwise.
    /// For reviews (`crate::review`); decisions do not use it.
    pub fn subject_bindings(
        &self,
        user: &str,
        groups: &[String],
        kind: BindingKind,
        scope: &str,
    ) -> Vec<Arc<CompiledBinding>> {
        let entries = std::iter::once(self.users.get(user))
            .chain(groups.iter().map(|g| self.groups.get(g.as_str())))
            .flatten();
        let mut out = Vec::new();
        for e in entries {
            let list = match kind {
                BindingKind::GlobalRoleBinding => e.global.as_ref(),
                BindingKind::ClusterRoleBinding => e.cluster.as_ref(),
                BindingKind::WorkspaceRoleBinding => scoped_get(&e.workspaces, scope),
                BindingKind::RoleBinding => scoped_get(&e.namespaces, scope),
            };
            out.extend(list.iter().flat_map(|l| l.iter()).cloned());
        }
        out
    }

    /// Every binding, once (for listing and reverse lookups; not used by decisions).
    pub fn bindings(&self) -> Vec<Arc<CompiledBinding>> {
        let mut seen = std::collections::HashSet::new();
        let mut out = Vec::with_capacity(self.binding_count);
        for e in self.users.values().chain(self.groups.values()) {
            let scoped = |s: &Option<Scoped>| {
                s.as_deref()
                    .unwrap_or_default()
                    .iter()
                    .map(|(_, l)| l.clone())
                    .collect::<Vec<_>>()
            };
            let lists = e
                .global
                .iter()
                .cloned()
                .chain(e.cluster.iter().cloned())
                .chain(scoped(&e.workspaces))
                .chain(scoped(&e.namespaces));
            for list in lists {
                for b in list.iter() {
                    if seen.insert(Arc::as_ptr(b)) {
                        out.push(b.clone());
                    }
                }
            }
        }
        out
    }
}

static EMPTY: SubjectEntry = SubjectEntry {
    global: None,
    cluster: None,
    workspaces: None,
    namespaces: None,
};

fn edit_scoped(
    scoped: Option<Scoped>,
    scope: &Arc<str>,
    edit: impl Fn(&Option<List>) -> Option<List>,
) -> Option<Scoped> {
    let mut v: Vec<(Arc<str>, List)> = scoped.as_deref().map(<[_]>::to_vec).unwrap_or_default();
    match v.binary_search_by(|(k, _)| (**k).cmp(&**scope)) {
        Ok(i) => match edit(&Some(v[i].1.clone())) {
            Some(list) => v[i].1 = list,
            None => drop(v.remove(i)),
        },
        Err(i) => {
            if let Some(list) = edit(&None) {
                v.insert(i, (scope.clone(), list));
            }
        }
    }
    if v.is_empty() { None } else { Some(v.into()) }
}

/// The writer's side of a snapshot: the snapshot itself plus the table of bindings by key, which only
/// updates need. The table is a plain map (not shared with readers), so an update path-copies only the
/// reader-visible maps it changes.
#[derive(Debug, Default)]
pub struct PolicyIndex {
    snapshot: Snapshot,
    bindings: std::collections::HashMap<BindingKey, Arc<CompiledBinding>>,
}

impl PolicyIndex {
    /// Indexes a whole policy.
    pub fn build(policy: &Policy) -> Self {
        let mut index = Self::default();
        for r in &policy.roles {
            index.upsert_role(r);
        }
        for b in &policy.bindings {
            index.upsert_binding(b);
        }
        for n in &policy.namespaces {
            index.upsert_namespace(n);
        }
        index
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Adds or replaces a role.
    pub fn upsert_role(&mut self, role: &Role) {
        self.snapshot.upsert_role(role);
    }

    /// Removes a role; bindings that refer to it then grant nothing.
    pub fn remove_role(&mut self, key: &RoleKey) {
        self.snapshot.remove_role(key);
    }

    /// Adds or replaces a binding.
    pub fn upsert_binding(&mut self, binding: &Binding) {
        let key = binding.key();
        self.remove_binding(&key);
        let compiled = Arc::new(CompiledBinding::compile(binding));
        self.snapshot.index(&compiled, true);
        self.snapshot.binding_count += 1;
        self.bindings.insert(key, compiled);
    }

    /// Removes a binding.
    pub fn remove_binding(&mut self, key: &BindingKey) {
        if let Some(old) = self.bindings.remove(key) {
            self.snapshot.index(&old, false);
            self.snapshot.binding_count -= 1;
        }
    }

    /// Adds or replaces a namespace (its workspace label).
    pub fn upsert_namespace(&mut self, ns: &Namespace) {
        self.snapshot.upsert_namespace(ns);
    }

    /// Removes a namespace.
    pub fn remove_namespace(&mut self, name: &str) {
        self.snapshot.remove_namespace(name);
    }

    /// A binding by key.
    pub fn binding(&self, key: &BindingKey) -> Option<&Arc<CompiledBinding>> {
        self.bindings.get(key)
    }
}

/// The shared, always-current snapshot: one writer, any number of lock-free readers.
pub struct PolicyStore {
    current: ArcSwap<Snapshot>,
    writer: Mutex<PolicyIndex>,
    ready: AtomicBool,
}

impl Default for PolicyStore {
    fn default() -> Self {
        Self::new(PolicyIndex::default())
    }
}

impl PolicyStore {
    /// A store starting from `index`, not ready until [`PolicyStore::set_ready`].
    pub fn new(index: PolicyIndex) -> Self {
        Self {
            current: ArcSwap::from_pointee(index.snapshot.clone()),
            writer: Mutex::new(index),
            ready: AtomicBool::new(false),
        }
    }

    /// The current snapshot (lock-free).
    pub fn load(&self) -> Guard<Arc<Snapshot>> {
        self.current.load()
    }

    /// Applies `f` to the writer's index and publishes the result under a new generation.
    pub fn update<R>(&self, f: impl FnOnce(&mut PolicyIndex) -> R) -> R {
        let mut w = self.writer.lock();
        let r = f(&mut w);
        w.snapshot.generation += 1;
        self.current.store(Arc::new(w.snapshot.clone()));
        r
    }

    /// Marks the store as synced: decisions are made from now on.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Release);
    }

    /// Whether the store is synced.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Decides on the current snapshot; denies with a "not ready" reason until the store is synced.
    pub fn decide(&self, a: &Attributes<'_>) -> (Decision, u64) {
        let snap = self.load();
        if !self.is_ready() {
            return (
                Decision::Deny(Denial {
                    not_ready: true,
                    errors: Vec::new(),
                }),
                snap.generation,
            );
        }
        (snap.decide(a), snap.generation)
    }
}
