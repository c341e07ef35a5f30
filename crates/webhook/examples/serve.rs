//! Runs the pod injector on loopback against the cluster of `KUBECONFIG` (or the in-cluster config), registers
//! it by URL with a self-signed certificate, and serves until Ctrl-C. For trying the webhook before the `ksiam`
//! binary wires it: `cargo run -p ksiam-webhook --example serve -- [port] [--tls-mode] [--fail]`.

use ksiam_webhook::{Config, FailurePolicy};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let mut config = Config::loopback(0);
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--tls-mode" => config.tls_mode = true,
            "--fail" => config.failure_policy = FailurePolicy::Fail,
            port => config.listen.set_port(port.parse()?),
        }
    }
    let client = kube::Client::try_default().await?;
    eprintln!("serving on {} (Ctrl-C stops)", config.listen);
    ksiam_webhook::run(config, client, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
