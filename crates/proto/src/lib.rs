//! Generated protobuf messages and tonic clients and servers for ksiam's gRPC APIs.
//!
//! - [`token::v1`]: `ksiam.token.v1.TokenService` (issue, verify, watch keys, watch revocations), from
//!   `proto/ksiam/token/v1/token.proto`.
//! - [`authz::v1`]: `ksiam.authz.v1.Authorizer` (authorize, batch, rules-for, who-can), from
//!   `proto/ksiam/authz/v1/authz.proto`.
//!
//! Everything under `src/gen/` is written by `cargo xtask codegen` and committed; a test in `xtask`
//! regenerates it and fails on any difference. The code is generated without tonic's transport
//! constructors (`connect`), so this crate needs only tonic's `codegen` feature: build a
//! `tonic::transport::Channel` and pass it to `…Client::new`.
//!
//! Each package also exports `FILE_DESCRIPTOR_SET`, the encoded `google.protobuf.FileDescriptorSet` to
//! register with `tonic-reflection`.

/// The `ksiam.token.v1` package.
pub mod token {
    /// `ksiam.token.v1`: `TokenService` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
    pub mod v1 {
        include!("gen/ksiam.token.v1.rs");

        /// The encoded `FileDescriptorSet` of `ksiam/token/v1/token.proto`, for gRPC reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/ksiam.token.v1.bin");
    }
}

/// The `ksiam.authz.v1` package.
pub mod authz {
    /// `ksiam.authz.v1`: `Authorizer` and its messages.
    #[allow(clippy::all, clippy::pedantic, missing_docs, rust_2018_idioms)]
    pub mod v1 {
        include!("gen/ksiam.authz.v1.rs");

        /// The encoded `FileDescriptorSet` of `ksiam/authz/v1/authz.proto`, for gRPC reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!("gen/ksiam.authz.v1.bin");
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    #[test]
    fn token_messages_round_trip() {
        let response = token::v1::VerifyTokenResponse {
            username: "kubesphere:serviceaccount:default:sample".to_owned(),
            token_type: "static_token".to_owned(),
            expires_at: None,
            extra: [(
                "scopes".to_owned(),
                token::v1::StringList {
                    values: vec!["a".to_owned(), "b".to_owned()],
                },
            )]
            .into(),
            service_account: Some(token::v1::ServiceAccountRef {
                namespace: "default".to_owned(),
                name: "sample".to_owned(),
            }),
            token_id: "id".to_owned(),
        };
        let bytes = response.encode_to_vec();
        assert_eq!(
            token::v1::VerifyTokenResponse::decode(bytes.as_slice()).unwrap(),
            response
        );
    }

    #[test]
    fn absent_optional_expiry_is_distinct_from_zero() {
        let absent = token::v1::IssueTokenRequest::default();
        let zero = token::v1::IssueTokenRequest {
            expires_in_seconds: Some(0),
            ..Default::default()
        };
        let decoded = token::v1::IssueTokenRequest::decode(zero.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.expires_in_seconds, Some(0));
        let decoded = token::v1::IssueTokenRequest::decode(absent.encode_to_vec().as_slice()).unwrap();
        assert_eq!(decoded.expires_in_seconds, None);
    }

    #[test]
    fn scope_zero_value_is_none_and_names_are_the_proto_names() {
        use authz::v1::Scope;
        assert_eq!(Scope::default(), Scope::None);
        assert_eq!(Scope::Namespace.as_str_name(), "SCOPE_NAMESPACE");
        assert_eq!(Scope::from_str_name("SCOPE_WORKSPACE"), Some(Scope::Workspace));
        assert_eq!(Scope::try_from(1), Ok(Scope::Global));
    }

    /// Field-level decode of the descriptor bytes without pulling in prost-types: a `FileDescriptorSet`
    /// is `repeated FileDescriptorProto file = 1`, and a `FileDescriptorProto` starts with
    /// `name = 1` and `package = 2`.
    #[derive(Clone, PartialEq, prost::Message)]
    struct FileSet {
        #[prost(message, repeated, tag = "1")]
        file: Vec<File>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    struct File {
        #[prost(string, optional, tag = "1")]
        name: Option<String>,
        #[prost(string, optional, tag = "2")]
        package: Option<String>,
    }

    #[test]
    fn descriptor_sets_describe_their_package() {
        for (bytes, name, package) in [
            (
                token::v1::FILE_DESCRIPTOR_SET,
                "ksiam/token/v1/token.proto",
                "ksiam.token.v1",
            ),
            (
                authz::v1::FILE_DESCRIPTOR_SET,
                "ksiam/authz/v1/authz.proto",
                "ksiam.authz.v1",
            ),
        ] {
            let set = FileSet::decode(bytes).unwrap();
            assert_eq!(set.file.len(), 1);
            assert_eq!(set.file[0].name.as_deref(), Some(name));
            assert_eq!(set.file[0].package.as_deref(), Some(package));
        }
    }

    #[test]
    fn service_names_are_fully_qualified() {
        use tonic::server::NamedService;
        assert_eq!(
            <token::v1::token_service_server::TokenServiceServer<()> as NamedService>::NAME,
            "ksiam.token.v1.TokenService"
        );
        assert_eq!(
            <authz::v1::authorizer_server::AuthorizerServer<()> as NamedService>::NAME,
            "ksiam.authz.v1.Authorizer"
        );
    }
}
