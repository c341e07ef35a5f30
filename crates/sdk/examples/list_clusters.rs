//! The Go program of KubeSphere's ServiceAccount guide ("Access the KubeSphere API using ServiceAccount"),
//! in Rust: in-cluster config, KubeSphere defaults, then `GET /kapis/tenant.kubesphere.io/v1beta1/clusters`.
//!
//! It prints the raw response body on success, or the error: for a 403 that is the server's `Status`
//! message, as the Go program's `fmt.Println(err)` prints it. Unlike the Go program, it exits with 1 after
//! an error. Outside a pod, point it somewhere with `KUBESPHERE_HOST` and `KUBESPHERE_TOKEN_FILE`:
//!
//! ```text
//! KUBESPHERE_HOST=http://127.0.0.1:9090 KUBESPHERE_TOKEN_FILE=./token \
//!     cargo run -p kubesphere-client --example list_clusters
//! ```

use std::process::ExitCode;

use kubesphere_client::{Client, in_cluster_config, set_kubesphere_defaults};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut config = match in_cluster_config() {
        Ok(config) => config,
        Err(err) => return fail(err),
    };
    set_kubesphere_defaults(&mut config);
    let client = match Client::try_from(config) {
        Ok(client) => client,
        Err(err) => return fail(err),
    };

    // Able to access the KubeSphere API; without a role binding the answer is 403.
    match client
        .get_raw("/kapis/tenant.kubesphere.io/v1beta1/clusters")
        .await
    {
        Ok(body) => {
            println!("{}", String::from_utf8_lossy(&body));
            ExitCode::SUCCESS
        }
        Err(err) => fail(err),
    }
}

fn fail(err: kubesphere_client::Error) -> ExitCode {
    println!("{err}");
    ExitCode::FAILURE
}
