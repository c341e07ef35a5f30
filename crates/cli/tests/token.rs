//! `ksiam token issue|decode` as a user runs them.

use std::process::Command;

const SEED_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwOi8va3MtY29uc29sZS5rdWJlc3BoZXJlLXN5c3RlbS5zdmM6MzA4ODAiLCJzdWIiOiJrdWJlc3BoZXJlOnNlcnZpY2VhY2NvdW50OmRlZmF1bHQ6c2FtcGxlIiwiaWF0IjoxNzIxMzI0MTY2LCJ0b2tlbl90eXBlIjoic3RhdGljX3Rva2VuIiwidXNlcm5hbWUiOiJrdWJlc3BoZXJlOnNlcnZpY2VhY2NvdW50OmRlZmF1bHQ6c2FtcGxlIn0.jmJq-va5mQGwtWnM8t8Z2aFsCG2yPCFhCzPu8YuGBss";

fn ksiam(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_ksiam"))
        .args(args)
        .env_remove("KSIAM_JWT_SECRET_FILE")
        .output()
        .unwrap()
}

fn secret_file(content: &str) -> (std::path::PathBuf, String) {
    let dir = std::env::temp_dir().join(format!("ksiam-cli-test-{}-{}", std::process::id(), content.len()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("jwt-secret");
    std::fs::write(&path, content).unwrap();
    let s = path.to_string_lossy().into_owned();
    (path, s)
}

#[test]
fn issue_reproduces_the_seed_token_header_and_claims() {
    let (_p, path) = secret_file("some-32-character-jwt-secret-xyz\n");
    let out = ksiam(&[
        "token",
        "issue",
        "--jwt-secret-file",
        &path,
        "--namespace",
        "default",
        "--name",
        "sample",
        "--iat",
        "1721324166",
        "--issuer",
        "http://ks-console.kubesphere-system.svc:30880",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let token = String::from_utf8(out.stdout).unwrap();
    let ours: Vec<&str> = token.trim_end().split('.').collect();
    let seed: Vec<&str> = SEED_TOKEN.split('.').collect();
    assert_eq!(ours.len(), 3);
    assert_eq!(ours[..2], seed[..2]);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("some-32"),
        "the secret is never printed"
    );
}

#[test]
fn decode_prints_header_and_claims_as_written() {
    let out = ksiam(&["token", "decode", SEED_TOKEN]);
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"alg\":\"HS256\",\"typ\":\"JWT\"}\n{\"iss\":\"http://ks-console.kubesphere-system.svc:30880\",\"sub\":\"kubesphere:serviceaccount:default:sample\",\"iat\":1721324166,\"token_type\":\"static_token\",\"username\":\"kubesphere:serviceaccount:default:sample\"}\n"
    );
}

#[test]
fn errors_are_clear_and_usage_errors_exit_64() {
    let out = ksiam(&["token", "decode", "not-a-token"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("token contains an invalid number of segments"));
    let out = ksiam(&["token", "issue", "--namespace", "default"]);
    assert_eq!(out.status.code(), Some(64));
    let out = ksiam(&[
        "token",
        "issue",
        "--jwt-secret-file",
        "/nonexistent/x",
        "--namespace",
        "a",
        "--name",
        "b",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read JWT secret file /nonexistent/x"));
    let (_p, empty) = secret_file("\n");
    let out = ksiam(&[
        "token",
        "issue",
        "--jwt-secret-file",
        &empty,
        "--namespace",
        "a",
        "--name",
        "b",
    ]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("JWT secret MUST not be empty"));
}
