//! Where the KubeSphere API server is and how to authenticate to it.
//!
//! [`in_cluster_config`] does what the Go SDK's `rest.InClusterConfig()` does, plus two documented
//! overrides (`KUBESPHERE_HOST`, `KUBESPHERE_TOKEN_FILE`); [`InClusterOptions`] is the same with the
//! inputs spelled out, and [`Config::from_parts`] takes everything explicitly.

use std::{
    fmt,
    path::{Path, PathBuf},
    time::Duration,
};

use http::Uri;

use crate::{Error, token::LoadedToken};

/// The directory where KubeSphere mounts a pod's ServiceAccount token (and `ca.crt` in TLS mode).
pub const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubesphere.io/serviceaccount";
/// The token file that [`in_cluster_config`] reads unless told otherwise.
pub const TOKEN_FILE: &str = "/var/run/secrets/kubesphere.io/serviceaccount/token";
/// The name of the CA file looked for beside the token file. Its presence selects TLS.
pub const CA_FILE_NAME: &str = "ca.crt";
/// The API server without TLS: the `ks-apiserver` Service, port 80.
pub const HTTP_HOST: &str = "http://ks-apiserver.kubesphere-system:80";
/// The API server with TLS (`internalTLS`): the `ks-apiserver` Service, port 443.
pub const HTTPS_HOST: &str = "https://ks-apiserver.kubesphere-system:443";
/// Environment variable overriding the API server URL (a full URL, for example `https://10.0.0.1:8443`).
pub const HOST_ENV: &str = "KUBESPHERE_HOST";
/// Environment variable overriding the token file path. `ca.crt` is then looked for beside it.
pub const TOKEN_FILE_ENV: &str = "KUBESPHERE_TOKEN_FILE";
/// How long a token is used without reading its file again when the file looks unchanged.
pub const DEFAULT_TOKEN_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// The pod's Kubernetes namespace, used as the default namespace of `kube::Api::default_namespaced`.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// How to reach and authenticate to the KubeSphere API server.
///
/// Turn it into a client with [`Client::try_from`](crate::Client) or `kube::Client::try_from`.
/// Every request then carries `Authorization: Bearer <token>`, with the token file read again whenever it
/// changes. `Debug` shows the token file path, never the token.
#[derive(Clone)]
pub struct Config {
    pub(crate) host: Uri,
    pub(crate) token_file: PathBuf,
    pub(crate) token: LoadedToken,
    pub(crate) token_reload_interval: Duration,
    pub(crate) ca_file: Option<PathBuf>,
    /// DER certificates from `ca_file`.
    pub(crate) ca_certs: Option<Vec<Vec<u8>>>,
    pub(crate) tls_server_name: Option<String>,
    pub(crate) user_agent: Option<String>,
    pub(crate) default_namespace: String,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("host", &self.host)
            .field("token_file", &self.token_file)
            .field("token", &"<redacted>")
            .field("token_reload_interval", &self.token_reload_interval)
            .field("ca_file", &self.ca_file)
            .field("tls_server_name", &self.tls_server_name)
            .field("user_agent", &self.user_agent)
            .field("default_namespace", &self.default_namespace)
            .finish()
    }
}

/// Loads the configuration of a pod that KubeSphere injected a ServiceAccount into.
///
/// Like the Go SDK's `rest.InClusterConfig()`:
/// - the token is read from [`TOKEN_FILE`] (a read error is returned, naming the path);
/// - if `ca.crt` exists beside the token file, the host is [`HTTPS_HOST`] and that CA is trusted;
///   otherwise the host is [`HTTP_HOST`].
///
/// Beyond the Go SDK, two environment variables override the defaults: [`HOST_ENV`] (`KUBESPHERE_HOST`,
/// a full URL) and [`TOKEN_FILE_ENV`] (`KUBESPHERE_TOKEN_FILE`). Use [`InClusterOptions`] to set them in
/// code instead. The default namespace is the pod's Kubernetes namespace when its file is mounted, else
/// `default`.
pub fn in_cluster_config() -> Result<Config, Error> {
    InClusterOptions::from_env().load()
}

/// Sets what the Go SDK's `rest.SetKubeSphereDefaults` sets: a User-Agent, only when none is set.
///
/// The value is [`default_user_agent`]. Like the Go function, it leaves everything else alone.
pub fn set_kubesphere_defaults(config: &mut Config) {
    if config.user_agent.as_deref().is_none_or(str::is_empty) {
        config.user_agent = Some(default_user_agent());
    }
}

/// `<binary name>/<crate version> (<os>/<arch>) kubesphere/<commit>`, the Go SDK's User-Agent format.
///
/// The binary name is the base name of `argv[0]`; the version is this crate's, without a `-suffix`;
/// `<os>/<arch>` use Go's names (`linux/amd64`, `darwin/arm64`) so the value reads like the Go SDK's;
/// the commit is the first 7 hex digits of the commit this crate was built from. A part that is not
/// known is `unknown`.
pub fn default_user_agent() -> String {
    let binary = std::env::args_os()
        .next()
        .and_then(|arg0| {
            Path::new(&arg0)
                .file_name()
                .map(|name| name.to_string_lossy().into_owned())
        })
        .filter(|name| !name.is_empty())
        .map(|name| header_safe(&name))
        .unwrap_or_else(|| "unknown".to_owned());
    user_agent_for(
        &binary,
        env!("CARGO_PKG_VERSION"),
        env!("KUBESPHERE_CLIENT_GIT_COMMIT"),
    )
}

fn user_agent_for(binary: &str, version: &str, commit: &str) -> String {
    let version = version
        .split('-')
        .next()
        .filter(|v| !v.is_empty())
        .unwrap_or("unknown");
    let commit = if commit.is_empty() { "unknown" } else { commit };
    format!(
        "{binary}/{version} ({}/{}) kubesphere/{commit}",
        go_os(),
        go_arch()
    )
}

/// Replaces what an HTTP header value cannot carry, so an odd `argv[0]` cannot break every request.
fn header_safe(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_graphic() || c == ' ' { c } else { '_' })
        .collect()
}

fn go_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "darwin",
        other => other,
    }
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "loongarch64" => "loong64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        other => other,
    }
}

// === impl Config ===

impl Config {
    /// A configuration from explicit parts: the API server URL, the token file and optionally a PEM CA
    /// file to trust for `https`.
    ///
    /// The token file is read now (errors name the path) and again whenever it changes. Without a CA
    /// file an `https` host is verified against the platform's trust store.
    pub fn from_parts(
        host: &str,
        token_file: impl Into<PathBuf>,
        ca_file: Option<PathBuf>,
    ) -> Result<Self, Error> {
        let host = parse_host(host)?;
        let token_file = token_file.into();
        let token = LoadedToken::read(&token_file)?;
        let ca_certs = ca_file.as_deref().map(read_ca).transpose()?;
        Ok(Self {
            host,
            token_file,
            token,
            token_reload_interval: DEFAULT_TOKEN_RELOAD_INTERVAL,
            ca_file,
            ca_certs,
            tls_server_name: None,
            user_agent: None,
            default_namespace: "default".to_owned(),
        })
    }

    /// The API server URL.
    pub fn host(&self) -> &Uri {
        &self.host
    }

    /// The token file.
    pub fn token_file(&self) -> &Path {
        &self.token_file
    }

    /// The CA file trusted for `https`, if any.
    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The User-Agent sent with every request, if any.
    pub fn user_agent(&self) -> Option<&str> {
        self.user_agent.as_deref()
    }

    /// The namespace of `kube::Api::default_namespaced`.
    pub fn default_namespace(&self) -> &str {
        &self.default_namespace
    }

    /// The longest a token is used without reading its file again, when the file looks unchanged.
    pub fn token_reload_interval(&self) -> Duration {
        self.token_reload_interval
    }

    /// Sets the User-Agent. [`set_kubesphere_defaults`] then keeps it.
    pub fn with_user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = Some(user_agent.into());
        self
    }

    /// Sets the namespace of `kube::Api::default_namespaced`.
    pub fn with_default_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.default_namespace = namespace.into();
        self
    }

    /// Verifies the server certificate against this name instead of the host of the URL, for example
    /// `ks-apiserver.kubesphere-system` when `KUBESPHERE_HOST` is an IP address.
    pub fn with_tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.tls_server_name = Some(name.into());
        self
    }

    /// Sets the longest a token is used without reading its file again when the file looks unchanged
    /// (same inode, size and modification time). A changed file is read on the next request regardless.
    pub fn with_token_reload_interval(mut self, interval: Duration) -> Self {
        self.token_reload_interval = interval;
        self
    }
}

/// [`in_cluster_config`] with its inputs spelled out: explicit settings win over the environment, which
/// wins over the defaults.
///
/// ```no_run
/// use kubesphere_client::InClusterOptions;
///
/// // Environment overrides, then an explicit token path on top.
/// let config = InClusterOptions::from_env().token_file("/etc/ks/token").load()?;
/// // Exactly the Go SDK: no environment variables.
/// let config = InClusterOptions::new().load()?;
/// # Ok::<(), kubesphere_client::Error>(())
/// ```
#[derive(Debug, Clone, Default)]
pub struct InClusterOptions {
    host: Option<String>,
    token_file: Option<PathBuf>,
    default_namespace: Option<String>,
}

// === impl InClusterOptions ===

impl InClusterOptions {
    /// The Go SDK's behaviour: no overrides, the environment is not read.
    pub fn new() -> Self {
        Self::default()
    }

    /// Overrides from [`HOST_ENV`] and [`TOKEN_FILE_ENV`] (empty values count as unset).
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Overrides from a lookup function in place of the environment: `lookup(HOST_ENV)`,
    /// `lookup(TOKEN_FILE_ENV)`. Handy in tests, which should not change the process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Self {
        let value = |name| lookup(name).filter(|value: &String| !value.is_empty());
        Self {
            host: value(HOST_ENV),
            token_file: value(TOKEN_FILE_ENV).map(PathBuf::from),
            default_namespace: None,
        }
    }

    /// Uses this API server URL instead of the default one (or [`HOST_ENV`]).
    pub fn host(mut self, url: impl Into<String>) -> Self {
        self.host = Some(url.into());
        self
    }

    /// Reads the token from this file instead of [`TOKEN_FILE`] (or [`TOKEN_FILE_ENV`]). `ca.crt` is then
    /// looked for beside it.
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_file = Some(path.into());
        self
    }

    /// Uses this default namespace instead of the pod's.
    pub fn default_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.default_namespace = Some(namespace.into());
        self
    }

    /// Reads the token (and the CA, for `https`) and returns the configuration.
    pub fn load(self) -> Result<Config, Error> {
        let token_file = self.token_file.unwrap_or_else(|| PathBuf::from(TOKEN_FILE));
        let ca_file = token_file.parent().unwrap_or(Path::new("")).join(CA_FILE_NAME);
        // Like the Go SDK's os.Stat check: anything but a successful stat means "no CA".
        let has_ca = std::fs::metadata(&ca_file).is_ok();
        let host = match self.host {
            Some(host) => host,
            None if has_ca => HTTPS_HOST.to_owned(),
            None => HTTP_HOST.to_owned(),
        };
        let https = parse_host(&host)?.scheme() == Some(&http::uri::Scheme::HTTPS);
        let mut config = Config::from_parts(&host, token_file, (https && has_ca).then_some(ca_file))?;
        config.default_namespace = match self.default_namespace {
            Some(namespace) => namespace,
            None => std::fs::read_to_string(POD_NAMESPACE_FILE)
                .ok()
                .map(|namespace| namespace.trim().to_owned())
                .filter(|namespace| !namespace.is_empty())
                .unwrap_or_else(|| "default".to_owned()),
        };
        Ok(config)
    }
}

fn parse_host(host: &str) -> Result<Uri, Error> {
    let invalid = |reason: &str| Error::InvalidHost {
        host: host.to_owned(),
        reason: reason.to_owned(),
    };
    let uri: Uri = host
        .parse()
        .map_err(|e: http::uri::InvalidUri| invalid(&e.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        Some(_) => return Err(invalid("the scheme must be http or https")),
        None => return Err(invalid("a full URL with http:// or https:// is needed")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("the URL has no host"));
    }
    if uri.query().is_some() {
        return Err(invalid("the URL must not have a query"));
    }
    Ok(uri)
}

/// Reads a PEM bundle into DER certificates.
fn read_ca(path: &Path) -> Result<Vec<Vec<u8>>, Error> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};

    let pem = std::fs::read(path).map_err(|source| Error::ReadCa {
        path: path.to_owned(),
        source,
    })?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .map(|cert| cert.map(|der| der.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::InvalidCa {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(Error::InvalidCa {
            path: path.to_owned(),
            reason: "no CERTIFICATE block".to_owned(),
        });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_has_the_go_sdk_shape() {
        let ua = user_agent_for("list_clusters", "0.1.0-alpha.1", "abc1234");
        let expected = format!(
            "list_clusters/0.1.0 ({}/{}) kubesphere/abc1234",
            go_os(),
            go_arch()
        );
        assert_eq!(ua, expected);
        assert_eq!(
            user_agent_for("app", "", ""),
            format!("app/unknown ({}/{}) kubesphere/unknown", go_os(), go_arch())
        );
        if cfg!(all(target_os = "linux", target_arch = "x86_64")) {
            assert!(expected.contains("(linux/amd64)"), "{expected}");
        }
    }

    #[test]
    fn default_user_agent_names_this_binary_and_a_commit() {
        let ua = default_user_agent();
        let binary = std::env::current_exe().unwrap();
        let binary = binary.file_name().unwrap().to_string_lossy();
        assert!(
            ua.starts_with(&format!("{binary}/{}", env!("CARGO_PKG_VERSION"))),
            "{ua}"
        );
        let commit = ua.rsplit_once("kubesphere/").unwrap().1;
        assert!(
            commit == "unknown" || (commit.len() == 7 && commit.chars().all(|c| c.is_ascii_hexdigit())),
            "{ua}"
        );
        assert!(http::HeaderValue::from_str(&ua).is_ok());
    }

    #[test]
    fn header_safe_replaces_control_and_non_ascii() {
        assert_eq!(header_safe("my app\u{7}é"), "my app__");
    }

    #[test]
    fn hosts_must_be_absolute_http_urls() {
        assert!(parse_host("https://10.0.0.1:8443").is_ok());
        assert!(parse_host("http://ks-apiserver.kubesphere-system:80").is_ok());
        for bad in ["ks-apiserver:80", "ftp://host", "http://host/?a=b", "not a url"] {
            let err = parse_host(bad).unwrap_err();
            assert!(
                matches!(err, Error::InvalidHost { ref host, .. } if host == bad),
                "{bad}: {err}"
            );
        }
    }
}
