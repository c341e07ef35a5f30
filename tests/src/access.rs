//! Acting as somebody else: kubectl with nothing but a bearer token, raw requests to the gateway, and a
//! fresh KubeSphere ServiceAccount's token.

use std::{
    io::{Read as _, Write as _},
    net::TcpStream,
    time::Duration,
};

use crate::{e2e, kubectl_with_stdin, random_suffix, secret_token, token_secret_name};

/// Runs kubectl against kube-apiserver with nothing but `token` as credentials (no client certificate):
/// `(succeeded, stdout and stderr)`.
pub fn kubectl_with_token(token: &str, args: &[&str]) -> anyhow::Result<(bool, String)> {
    let dir = std::env::temp_dir().join(format!("ksiam-e2e-token-{}", random_suffix()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    let written = token_kubeconfig(token).and_then(|k| Ok(std::fs::write(&kubeconfig, k)?));
    let out = written.and_then(|()| {
        Ok(std::process::Command::new(&e2e().kubectl)
            .arg(format!("--kubeconfig={}", kubeconfig.display()))
            .args(args)
            .output()?)
    });
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

/// A kubeconfig for the test control plane whose only credential is `token`.
pub fn token_kubeconfig(token: &str) -> anyhow::Result<String> {
    let (server, ca_line) = api_server()?;
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: {server}\n    {ca_line}\n\
         users:\n- name: u\n  user:\n    token: {token}\ncontexts:\n- name: c\n  context: {{cluster: c, user: u}}\n\
         current-context: c\n"
    ))
}

/// kube-apiserver's URL and the kubeconfig line naming its CA, from the admin kubeconfig.
pub fn api_server() -> anyhow::Result<(String, String)> {
    let admin: serde_json::Value = serde_yaml::from_str(&std::fs::read_to_string(&e2e().kubeconfig)?)?;
    let cluster = &admin["clusters"][0]["cluster"];
    let server = cluster["server"].as_str().unwrap_or_default().to_owned();
    let ca_line = match (
        cluster["certificate-authority"].as_str(),
        cluster["certificate-authority-data"].as_str(),
    ) {
        (Some(path), _) => format!("certificate-authority: {path}"),
        (None, Some(data)) => format!("certificate-authority-data: {data}"),
        (None, None) => anyhow::bail!("the admin kubeconfig names no CA"),
    };
    Ok((server, ca_line))
}

/// `host:port` of the gateway (plain HTTP), from `KSIAM_GATEWAY`.
pub fn gateway_addr() -> String {
    e2e();
    let url = std::env::var("KSIAM_GATEWAY").expect("KSIAM_GATEWAY is not set: run via `cargo xtask e2e`");
    url.trim_start_matches("http://").trim_end_matches('/').to_owned()
}

/// One request to the gateway with `target` and `headers` written verbatim (and a bearer `token` when
/// given); returns the status and the raw body.
pub fn gateway_request(
    method: &str,
    target: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let mut tcp = TcpStream::connect(gateway_addr())?;
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = format!("{method} {target} HTTP/1.1\r\nHost: ks-apiserver\r\nConnection: close\r\n");
    if let Some(token) = token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    tcp.write_all(head.as_bytes())?;
    let mut out = Vec::new();
    let _ = tcp.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((status, body.to_owned()))
}

/// Creates (or keeps) the KubeSphere ServiceAccount `ns/name` and returns its token once the controller
/// has written it.
pub fn service_account_token(ns: &str, name: &str) -> anyhow::Result<String> {
    kubectl_with_stdin(
        &["apply", "-f", "-"],
        &format!(
            "apiVersion: kubesphere.io/v1alpha1\nkind: ServiceAccount\nmetadata:\n  name: {name}\n  namespace: {ns}\n"
        ),
    )?;
    secret_token(ns, &token_secret_name(ns, name)?)
}

/// Whether the gateway (`KSIAM_GATEWAY`) answers `GET /readyz` with 200 (every watch synced); false while it
/// is down or restarting.
pub fn gateway_ready() -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(gateway) = std::env::var("KSIAM_GATEWAY") else {
        return false;
    };
    let hostport = gateway.trim_start_matches("http://");
    let Some(addr) = std::net::ToSocketAddrs::to_socket_addrs(hostport)
        .ok()
        .and_then(|mut a| a.next())
    else {
        return false;
    };
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 12];
    write!(stream, "GET /readyz HTTP/1.0\r\nHost: {hostport}\r\n\r\n").is_ok()
        && stream.read_exact(&mut head).is_ok()
        && &head[9..12] == b"200"
}
