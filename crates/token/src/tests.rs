use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};

use super::*;

const SECRET: &[u8] = b"kubesphere-jwt-secret-for-tests!";
const SEED_TOKEN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJpc3MiOiJodHRwOi8va3MtY29uc29sZS5rdWJlc3BoZXJlLXN5c3RlbS5zdmM6MzA4ODAiLCJzdWIiOiJrdWJlc3BoZXJlOnNlcnZpY2VhY2NvdW50OmRlZmF1bHQ6c2FtcGxlIiwiaWF0IjoxNzIxMzI0MTY2LCJ0b2tlbl90eXBlIjoic3RhdGljX3Rva2VuIiwidXNlcm5hbWUiOiJrdWJlc3BoZXJlOnNlcnZpY2VhY2NvdW50OmRlZmF1bHQ6c2FtcGxlIn0.jmJq-va5mQGwtWnM8t8Z2aFsCG2yPCFhCzPu8YuGBss";
const NOW: i64 = 1_721_324_200;

fn issuer() -> Issuer {
    Issuer::new(KeySet::legacy(SECRET), DEFAULT_ISSUER)
}

fn verifier() -> Verifier {
    Verifier::new(KeySet::legacy(SECRET))
}

#[test]
fn seed_token_header_and_claims_are_byte_identical() {
    let token = issuer()
        .issue_sa_token("default", "sample", 1721324166, None)
        .unwrap();
    let ours: Vec<&str> = token.split('.').collect();
    let seed: Vec<&str> = SEED_TOKEN.split('.').collect();
    assert_eq!(ours[..2], seed[..2]);
    // Issued twice in the same second: byte-identical.
    assert_eq!(
        token,
        issuer()
            .issue_sa_token("default", "sample", 1721324166, None)
            .unwrap()
    );
}

/// Known answers: the whole token, signature included, for fixed inputs. The expected strings were computed
/// outside this crate (Python's `hmac`/`hashlib`/`base64` over the header and claims as KubeSphere's Go code
/// writes them), so a change of any byte of header, claims, their order or the signature fails here.
#[test]
fn tokens_are_byte_identical_to_known_answers() {
    assert_eq!(
        issuer()
            .issue_sa_token("default", "sample", 1721324166, None)
            .unwrap(),
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
         eyJpc3MiOiJodHRwOi8va3MtY29uc29sZS5rdWJlc3BoZXJlLXN5c3RlbS5zdmM6MzA4ODAiLCJzdWIiOiJrdWJlc3BoZXJlOnNlcnZpY2VhY2NvdW50OmRlZmF1bHQ6c2FtcGxlIiwiaWF0IjoxNzIxMzI0MTY2LCJ0b2tlbl90eXBlIjoic3RhdGljX3Rva2VuIiwidXNlcm5hbWUiOiJrdWJlc3BoZXJlOnNlcnZpY2VhY2NvdW50OmRlZmF1bHQ6c2FtcGxlIn0.\
         n3FUDWthSqAbBzvTdHcsmkXXKp2cwr6BQsrnKdP-leA"
    );
    // Another issuer, namespace and name, with an expiry.
    assert_eq!(
        Issuer::new(KeySet::legacy(SECRET), "https://iam.example.com")
            .issue_sa_token("team-a", "robot", 1_700_000_000, Some(1_700_003_600))
            .unwrap(),
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.\
         eyJpc3MiOiJodHRwczovL2lhbS5leGFtcGxlLmNvbSIsInN1YiI6Imt1YmVzcGhlcmU6c2VydmljZWFjY291bnQ6dGVhbS1hOnJvYm90IiwiZXhwIjoxNzAwMDAzNjAwLCJpYXQiOjE3MDAwMDAwMDAsInRva2VuX3R5cGUiOiJzdGF0aWNfdG9rZW4iLCJ1c2VybmFtZSI6Imt1YmVzcGhlcmU6c2VydmljZWFjY291bnQ6dGVhbS1hOnJvYm90In0.\
         U7g2nccPisoGW9Vqe7tAbv1paCSxZdcWz5-lF1TUvFM"
    );
}

#[test]
fn round_trip() {
    let token = issuer().issue_sa_token("default", "sample", NOW, None).unwrap();
    let user = verifier().verify_at(&token, NOW).unwrap();
    assert_eq!(user.username, "kubesphere:serviceaccount:default:sample");
    assert_eq!(user.token_type, STATIC_TOKEN);
    assert_eq!(user.service_account(), Some(("default", "sample")));
    assert!(user.extra.is_empty());
}

fn segment(json: &str) -> String {
    URL_SAFE_NO_PAD.encode(json)
}

fn signed(header: &str, claims: &str, key: &[u8]) -> String {
    let input = format!("{}.{}", segment(header), segment(claims));
    let sig = HmacKey::new(key).sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
}

const H: &str = r#"{"alg":"HS256","typ":"JWT"}"#;
const C: &str = r#"{"sub":"kubesphere:serviceaccount:default:sample","iat":1721324166,"token_type":"static_token","username":"kubesphere:serviceaccount:default:sample"}"#;

#[test]
fn malformed_and_forged_tokens_are_rejected() {
    let good = signed(H, C, SECRET);
    let (h, rest) = good.split_once('.').unwrap();
    let (c, s) = rest.split_once('.').unwrap();
    let sa_claims = |u: &str| format!(r#"{{"sub":"{u}","iat":1721324166,"username":"{u}"}}"#);
    let cases: Vec<(&str, String, Error)> = vec![
        ("empty", String::new(), Error::Segments),
        ("one segment", "abc".into(), Error::Segments),
        ("two segments", format!("{h}.{c}"), Error::Segments),
        ("four segments", format!("{good}.x"), Error::Segments),
        (
            "alg none",
            format!("{}.{c}.", segment(r#"{"alg":"none","typ":"JWT"}"#)),
            Error::Algorithm("none".into()),
        ),
        (
            "alg none unsigned",
            format!("{}.{c}.", segment(r#"{"alg":"none"}"#)),
            Error::Algorithm("none".into()),
        ),
        (
            "alg confusion RS256",
            signed(r#"{"alg":"RS256","typ":"JWT"}"#, C, SECRET),
            Error::Algorithm("RS256".into()),
        ),
        (
            "alg HS512",
            signed(r#"{"alg":"HS512","typ":"JWT"}"#, C, SECRET),
            Error::Algorithm("HS512".into()),
        ),
        (
            "alg lowercase",
            signed(r#"{"alg":"hs256","typ":"JWT"}"#, C, SECRET),
            Error::Algorithm("hs256".into()),
        ),
        (
            "wrong key",
            signed(H, C, b"another secret"),
            Error::SignatureInvalid,
        ),
        (
            "tampered claims",
            format!("{h}.{}.{s}", segment(&C.replace("sample", "admin"))),
            Error::SignatureInvalid,
        ),
        (
            "truncated signature",
            format!("{h}.{c}.{}", &s[..s.len() - 4]),
            Error::SignatureInvalid,
        ),
        ("empty signature", format!("{h}.{c}."), Error::SignatureInvalid),
        (
            "bad base64 header",
            format!("!!.{c}.{s}"),
            Error::Base64("header"),
        ),
        (
            "bad base64 claims",
            format!("{h}.%%%.{s}"),
            Error::Base64("claims"),
        ),
        (
            "bad base64 signature",
            format!("{h}.{c}.***"),
            Error::Base64("signature"),
        ),
        (
            "non-JSON claims",
            signed(H, "not json", SECRET),
            Error::Json("claims", String::new()),
        ),
        (
            "claims not an object",
            signed(H, "[1,2]", SECRET),
            Error::Json("claims", String::new()),
        ),
        (
            "header not JSON",
            format!("{}.{c}.{s}", segment("{alg")),
            Error::Json("header", String::new()),
        ),
        (
            "huge header",
            format!("{}.{c}.{s}", "A".repeat(20_000)),
            Error::TooLarge(jws::MAX_TOKEN_BYTES),
        ),
        (
            "wrong kid",
            signed(r#"{"alg":"HS256","kid":"k9","typ":"JWT"}"#, C, SECRET),
            Error::UnknownKeyId("k9".into()),
        ),
        (
            "expired",
            signed(H, &C.replace(r#""iat""#, r#""exp":1721324100,"iat""#), SECRET),
            Error::Expired("1m40s".into()),
        ),
        (
            "iat in the future",
            signed(H, &C.replace("1721324166", "1721324300"), SECRET),
            Error::UsedBeforeIssued {
                iat: 1721324300,
                now: NOW,
            },
        ),
        (
            "no username",
            signed(H, r#"{"sub":"x","iat":1}"#, SECRET),
            Error::NoUsername,
        ),
        (
            "SA username with 3 parts",
            signed(H, &sa_claims("kubesphere:serviceaccount:default"), SECRET),
            Error::ServiceAccountName("kubesphere:serviceaccount:default".into()),
        ),
        (
            "SA username with 5 parts",
            signed(H, &sa_claims("kubesphere:serviceaccount:a:b:c"), SECRET),
            Error::ServiceAccountName("kubesphere:serviceaccount:a:b:c".into()),
        ),
        (
            "iat as a string",
            signed(H, r#"{"iat":"1","username":"u"}"#, SECRET),
            Error::Json("claims", String::new()),
        ),
    ];
    assert!(cases.len() >= 15);
    for (name, token, want) in cases {
        let got = verifier().verify_at(&token, NOW).expect_err(name);
        match (&got, &want) {
            // The serde message is an implementation detail; the part is not.
            (Error::Json(a, _), Error::Json(b, _)) => assert_eq!(a, b, "{name}: {got}"),
            _ => assert_eq!(got, want, "{name}"),
        }
        assert!(
            token.len() < 8 || !got.to_string().contains(&token),
            "{name}: the token leaks into the error"
        );
    }
}

#[test]
fn error_texts_match_kubesphere() {
    assert_eq!(
        Error::Segments.to_string(),
        "token contains an invalid number of segments"
    );
    assert_eq!(Error::SignatureInvalid.to_string(), "signature is invalid");
    assert_eq!(
        Error::Algorithm("none".into()).to_string(),
        "unexpect signature algorithm none"
    );
    assert_eq!(
        Error::Expired("1h0m5s".into()).to_string(),
        "jwt: token is expired by 1h0m5s"
    );
    assert_eq!(go_duration(3605), "1h0m5s");
    assert_eq!(go_duration(0), "0s");
}

#[test]
fn clock_skew_is_tolerated_up_to_the_limit() {
    let token = issuer()
        .issue_sa_token("default", "sample", NOW + 10, None)
        .unwrap();
    assert!(verifier().verify_at(&token, NOW).is_ok());
    let token = issuer()
        .issue_sa_token("default", "sample", NOW + 11, None)
        .unwrap();
    assert!(verifier().verify_at(&token, NOW).is_err());
    assert!(verifier().with_max_clock_skew(30).verify_at(&token, NOW).is_ok());
}

#[test]
fn expiring_tokens_carry_exp_in_kubesphere_claim_order() {
    let token = issuer()
        .issue_sa_token("default", "sample", NOW, Some(NOW + 60))
        .unwrap();
    let (_, text) = decode_unverified(&token).unwrap();
    let order: Vec<usize> = [
        "\"iss\"",
        "\"sub\"",
        "\"exp\"",
        "\"iat\"",
        "\"token_type\"",
        "\"username\"",
    ]
    .iter()
    .map(|k| text.find(k).unwrap())
    .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert!(verifier().verify_at(&token, NOW + 59).is_ok());
    assert_eq!(
        verifier().verify_at(&token, NOW + 60),
        Err(Error::Expired("0s".into()))
    );
}

#[test]
fn rotation_keeps_old_tokens_until_the_old_key_is_removed() {
    let mut keys = KeySet::default();
    keys.add("k1", b"first key");
    keys.activate(Some("k1")).unwrap();
    let old = Issuer::new(keys.clone(), DEFAULT_ISSUER)
        .issue_sa_token("ns", "sa", NOW, None)
        .unwrap();
    keys.add("k2", b"second key");
    keys.activate(Some("k2")).unwrap();
    let new = Issuer::new(keys.clone(), DEFAULT_ISSUER)
        .issue_sa_token("ns", "sa", NOW, None)
        .unwrap();
    assert_ne!(old, new);
    let (header, _) = decode_unverified(&new).unwrap();
    assert_eq!(header, r#"{"alg":"HS256","kid":"k2","typ":"JWT"}"#);
    assert!(Verifier::new(keys.clone()).verify_at(&old, NOW).is_ok());
    assert!(Verifier::new(keys.clone()).verify_at(&new, NOW).is_ok());
    keys.remove("k1");
    assert_eq!(
        Verifier::new(keys.clone()).verify_at(&old, NOW),
        Err(Error::UnknownKeyId("k1".into()))
    );
    assert!(Verifier::new(keys.clone()).verify_at(&new, NOW).is_ok());
    // Legacy (no kid) tokens need the legacy secret.
    let legacy = issuer().issue_sa_token("ns", "sa", NOW, None).unwrap();
    assert_eq!(
        Verifier::new(keys).verify_at(&legacy, NOW),
        Err(Error::SignatureInvalid)
    );
    assert!(KeySet::default().activate(Some("nope")).is_err());
}

#[test]
fn live_tokens_are_an_allow_list() {
    let live = LiveTokens::default();
    let t1 = issuer().issue_sa_token("default", "sample", NOW, None).unwrap();
    let t2 = issuer()
        .issue_sa_token("default", "sample", NOW + 1, None)
        .unwrap();
    assert!(!live.is_live(&token_id(&t1)));
    live.hold("default/sample-abcde", &t1);
    live.hold("default/copy", &t1);
    assert!(live.is_live(&token_id(&t1)));
    live.release("default/sample-abcde");
    assert!(live.is_live(&token_id(&t1)), "still held by another Secret");
    live.release("default/copy");
    assert!(!live.is_live(&token_id(&t1)));
    live.hold("default/sample-abcde", &t2);
    let g = live.generation();
    live.hold("default/sample-abcde", &t2);
    assert_eq!(g, live.generation(), "no-op holds do not bump the generation");
    assert_eq!(live.len(), 1);
}

#[test]
fn cache_returns_verified_users_and_never_caches_failures() {
    let cache = VerifyCache::new(100, std::time::Duration::from_secs(10));
    let token = issuer()
        .issue_sa_token("default", "sample", now_unix(), None)
        .unwrap();
    let mut calls = 0;
    for _ in 0..3 {
        let user = cache
            .get_or_verify(&token, |t| {
                calls += 1;
                verifier().verify(t)
            })
            .unwrap();
        assert_eq!(user.username, "kubesphere:serviceaccount:default:sample");
    }
    assert_eq!(calls, 1);
    let mut calls = 0;
    for _ in 0..2 {
        assert!(
            cache
                .get_or_verify("a.b.c", |t| {
                    calls += 1;
                    verifier().verify(t)
                })
                .is_err()
        );
    }
    assert_eq!(calls, 2);
    assert_eq!(cache.len(), 1);
    cache.clear();
    assert!(cache.is_empty());
}

#[test]
fn debug_output_hides_keys() {
    assert_eq!(format!("{:?}", HmacKey::new(SECRET)), "HmacKey(<redacted>)");
    assert!(!format!("{:?}", KeySet::legacy(SECRET)).contains("kubesphere-jwt"));
}

#[test]
fn es256_keys_sign_verify_and_publish_a_jwks() {
    let mut keys = KeySet::legacy(SECRET);
    keys.add_key("ec1", Key::Ec(EcKey::generate().unwrap()));
    keys.activate(Some("ec1")).unwrap();
    let token = Issuer::new(keys.clone(), DEFAULT_ISSUER)
        .issue_sa_token("ns", "sa", NOW, None)
        .unwrap();
    let (header, _) = decode_unverified(&token).unwrap();
    assert_eq!(header, r#"{"alg":"ES256","kid":"ec1","typ":"JWT"}"#);
    assert!(Verifier::new(keys.clone()).verify_at(&token, NOW).is_ok());
    // Legacy HS256 tokens still verify next to it.
    let legacy = issuer().issue_sa_token("ns", "sa", NOW, None).unwrap();
    assert!(Verifier::new(keys.clone()).verify_at(&legacy, NOW).is_ok());
    // Algorithm confusion: an HS256 token naming the EC key id, signed with the public key bytes.
    let jwks = keys.jwks();
    let jwk = &jwks["keys"][0];
    assert_eq!(
        (jwk["kty"].as_str(), jwk["crv"].as_str(), jwk["kid"].as_str()),
        (Some("EC"), Some("P-256"), Some("ec1"))
    );
    assert_eq!(
        URL_SAFE_NO_PAD.decode(jwk["x"].as_str().unwrap()).unwrap().len(),
        32
    );
    let forged = signed(
        r#"{"alg":"HS256","kid":"ec1","typ":"JWT"}"#,
        C,
        jwk["x"].as_str().unwrap().as_bytes(),
    );
    assert_eq!(
        Verifier::new(keys.clone()).verify_at(&forged, NOW),
        Err(Error::Algorithm("HS256".into()))
    );
    // HMAC keys are never published.
    keys.add("h1", b"secret");
    assert_eq!(keys.jwks()["keys"].as_array().unwrap().len(), 1);
    let doc = openid_configuration(DEFAULT_ISSUER, "https://gw/.well-known/jwks.json");
    assert_eq!(doc["issuer"], DEFAULT_ISSUER);
    assert!(EcKey::from_pkcs8(b"garbage").is_err());
}

#[test]
fn concurrent_misses_run_one_verification() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let cache = std::sync::Arc::new(VerifyCache::new(100, std::time::Duration::from_secs(10)));
    let token = issuer()
        .issue_sa_token("default", "sample", now_unix(), None)
        .unwrap();
    let calls = std::sync::Arc::new(AtomicUsize::new(0));
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (cache, token, calls, barrier) =
                (cache.clone(), token.clone(), calls.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                cache
                    .get_or_verify(&token, |t| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        // Slow enough that the other threads arrive while this one is in flight.
                        std::thread::sleep(std::time::Duration::from_millis(200));
                        verifier().verify(t)
                    })
                    .map(|u| u.username.clone())
            })
        })
        .collect();
    for t in threads {
        assert_eq!(
            t.join().unwrap().unwrap(),
            "kubesphere:serviceaccount:default:sample"
        );
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}
