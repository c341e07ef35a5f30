//! The one error type of this crate.

use std::path::PathBuf;

use kube::core::Status;

/// Errors from loading a [`Config`](crate::Config) and from the requests of a [`Client`](crate::Client).
///
/// No variant ever holds the token: token errors name the file only.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The token file could not be read.
    #[error("failed to read the ServiceAccount token file {}: {source}", path.display())]
    ReadToken {
        /// The token file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },

    /// The token file was read but holds no usable token.
    #[error("the ServiceAccount token file {} {problem}", path.display())]
    InvalidToken {
        /// The token file.
        path: PathBuf,
        /// What is wrong with it, for example `is empty`.
        problem: &'static str,
    },

    /// The CA file could not be read.
    #[error("failed to read the CA file {}: {source}", path.display())]
    ReadCa {
        /// The CA file.
        path: PathBuf,
        /// Why it could not be read.
        #[source]
        source: std::io::Error,
    },

    /// The CA file holds no PEM certificate, or a malformed one.
    #[error("the CA file {} holds no usable PEM certificate: {reason}", path.display())]
    InvalidCa {
        /// The CA file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The KubeSphere API server URL is not an absolute `http` or `https` URL.
    #[error("invalid KubeSphere host {host:?}: {reason}")]
    InvalidHost {
        /// The URL as given.
        host: String,
        /// What is wrong with it.
        reason: String,
    },

    /// The configured User-Agent is not a valid HTTP header value.
    #[error("invalid User-Agent {0:?}: only visible ASCII characters are allowed")]
    InvalidUserAgent(String),

    /// The server answered with an error status.
    ///
    /// The [`Status`] is the server's own when the body is a JSON `Status` (ks-apiserver's 401 and 403, and
    /// every Kubernetes API error): its `message` is exactly the server's. A plain-text error body, as
    /// ks-apiserver's handlers send, becomes the `message` without its trailing newline, with the HTTP
    /// status as `code` and the matching Kubernetes reason (`Forbidden`, `NotFound`, ...) as `reason`.
    /// `Display` shows the message only, as the Go SDK's `StatusError` does.
    #[error("{}", display_status(.0))]
    Api(Box<Status>),

    /// A successful response did not have the expected JSON shape.
    #[error("failed to decode the response of {path}: {source}")]
    Decode {
        /// The request path.
        path: String,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },

    /// A request could not be built.
    #[error("failed to build the request for {path}: {source}")]
    BuildRequest {
        /// The request path.
        path: String,
        /// Why it could not be built.
        #[source]
        source: http::Error,
    },

    /// Any other failure of the underlying kube client: connection, TLS, timeouts, setup.
    #[error("kube client error: {0}")]
    Kube(#[source] kube::Error),
}

fn display_status(status: &Status) -> String {
    if status.message.is_empty() {
        format!("the server responded with {} {}", status.code, status.reason)
    } else {
        status.message.clone()
    }
}

// === impl Error ===

impl Error {
    /// The server's `Status` when the server answered with an error.
    pub fn status(&self) -> Option<&Status> {
        match self {
            Self::Api(status) => Some(status),
            Self::Kube(kube::Error::Api(status)) => Some(status),
            _ => None,
        }
    }

    /// The HTTP status code when the server answered with an error.
    pub fn code(&self) -> Option<u16> {
        self.status().map(|status| status.code)
    }
}

impl From<kube::Error> for Error {
    /// Lifts kube's `Error::Api` into [`Error::Api`], so server errors look the same from every call.
    fn from(error: kube::Error) -> Self {
        match error {
            kube::Error::Api(status) => Self::Api(status),
            other => Self::Kube(other),
        }
    }
}
