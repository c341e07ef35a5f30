//! The clients of the split topology: the gateway's authorizer and the controller's token issuer, each a
//! gRPC service in another process, each failing closed.

use std::time::Duration;

use anyhow::Context as _;
use futures::future::BoxFuture;
use ksiam_rbac::Attributes;

use crate::args::GrpcClientArgs;

/// How long the gateway waits for a remote authorizer before answering 500.
const REMOTE_AUTHORIZE_TIMEOUT: Duration = Duration::from_secs(2);

/// The gateway's authorizer in the split topology: `ksiam authz` over gRPC, through the client's
/// generation-invalidated decision cache. An unreachable or stalled authorizer is an error (a 500 after at
/// most [`REMOTE_AUTHORIZE_TIMEOUT`]), never an allow.
pub struct RemoteAuthorize {
    client: ksiam_authz::AuthzClient,
}

impl RemoteAuthorize {
    pub fn connect(addr: &str, grpc: &GrpcClientArgs) -> anyhow::Result<Self> {
        let tls = grpc.tls_for(addr)?;
        let channel = ksiam_token::grpc_auth::connect_lazy(addr.to_owned(), tls.as_ref())
            .with_context(|| format!("invalid authorizer address {addr:?}"))?;
        Ok(Self {
            client: ksiam_authz::AuthzClient::new(channel, ksiam_authz::CacheConfig::default()),
        })
    }
}

impl ksiam_gateway::Authorize for RemoteAuthorize {
    fn authorize<'a>(
        &'a self,
        a: Attributes<'a>,
    ) -> BoxFuture<'a, Result<ksiam_gateway::AuthzDecision, ksiam_gateway::AuthorizeError>> {
        Box::pin(async move {
            let unavailable = || {
                Err(ksiam_gateway::AuthorizeError(
                    "the authorizer is unavailable".to_owned(),
                ))
            };
            match tokio::time::timeout(REMOTE_AUTHORIZE_TIMEOUT, self.client.authorize(&a)).await {
                Ok(Ok(r)) => Ok(ksiam_gateway::AuthzDecision {
                    allowed: r.allowed,
                    denied: false,
                    reason: r.reason,
                }),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "the authorizer did not answer; failing closed");
                    unavailable()
                }
                Err(_) => {
                    tracing::warn!(timeout = ?REMOTE_AUTHORIZE_TIMEOUT, "the authorizer did not answer in time; failing closed");
                    unavailable()
                }
            }
        })
    }
}

/// How long the controller waits for the token service to issue a token (the reconcile is retried).
const REMOTE_ISSUE_TIMEOUT: Duration = Duration::from_secs(5);

/// The controller's issuer in the split topology: `IssueToken` of `ksiam token serve` (only the
/// `ksiam-controller` identity may call it), so the controller's process holds no signing key.
pub struct RemoteIssuer {
    client: ksiam_token::grpc::TokenClient,
}

impl RemoteIssuer {
    pub fn connect(addr: &str, grpc: &GrpcClientArgs) -> anyhow::Result<Self> {
        let tls = grpc.tls_for(addr)?;
        let channel = ksiam_token::grpc_auth::connect_lazy(addr.to_owned(), tls.as_ref())
            .with_context(|| format!("invalid token service address {addr:?}"))?;
        Ok(Self {
            client: ksiam_token::grpc::TokenClient::new(channel),
        })
    }
}

impl ksiam_controller::TokenIssuer for RemoteIssuer {
    fn issue<'a>(
        &'a self,
        namespace: &'a str,
        name: &'a str,
        ttl_seconds: Option<i64>,
    ) -> BoxFuture<'a, Result<String, ksiam_controller::Error>> {
        Box::pin(async move {
            match tokio::time::timeout(
                REMOTE_ISSUE_TIMEOUT,
                self.client.issue(namespace, name, ttl_seconds),
            )
            .await
            {
                Ok(Ok(issued)) => Ok(issued.token),
                // The error names the service's answer, never a token.
                Ok(Err(e)) => Err(ksiam_controller::Error::Internal(format!("token service: {e}"))),
                Err(_) => Err(ksiam_controller::Error::Internal(
                    "token service: no answer in time".to_owned(),
                )),
            }
        })
    }
}
