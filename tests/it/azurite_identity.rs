//! The managed identity of Azure Container Apps, end to end: a local server speaks the platform's
//! token protocol (`IDENTITY_ENDPOINT`, `IDENTITY_HEADER`), Azurite runs with https and
//! `--oauth basic` (it checks every bearer token's issuer, audience and expiry), and the job's
//! blob traffic is signed with those tokens only. A stall in the middle of the run outlasts the
//! first token, so the run must refresh it. Token values never reach the logs (even at trace
//! level), the errors or the results.

use std::time::Duration;

use crate::azurite_nightly::{blob_config, daily_rows, days, streaming_tree};
use crate::azurite_support::{
    container_client, create_container, hunt, make_certificates, objects, text, upload, DedicatedAzurite,
    IdentityEndpoint, Proxy, TokenAnswer,
};

const CLIENT_ID: &str = "6f1c2a9e-3b7d-4e21-9a0c-5d8e7f6a1b2c";
/// azure_identity renews a token five minutes before it expires: a token that lives 302 s is
/// used for two seconds, then replaced.
const TOKEN_LIFETIME_SECS: i64 = 302;
const STALL: Duration = Duration::from_secs(3);
/// Early in the run (the lock and the first listings), well before its last request.
const STALL_AFTER_BYTES: u64 = 16 * 1024;

struct Scene {
    _folders: (tempfile::TempDir, tempfile::TempDir),
    _azurite: DedicatedAzurite,
    proxy: Proxy,
    ca: std::path::PathBuf,
    dir: tempfile::TempDir,
}

fn scene() -> Scene {
    let certificates = tempfile::tempdir().unwrap();
    let tls = make_certificates(certificates.path());
    let location = tempfile::tempdir().unwrap();
    let azurite = DedicatedAzurite::start(location.path(), Some((tls.cert.clone(), tls.key.clone())));
    let direct = azurite.url();
    assert!(direct.starts_with("https://"));
    create_container(&direct, "events", Some(&tls.ca));
    create_container(&direct, "results", Some(&tls.ca));
    upload(&container_client(&direct, "events", Some(&tls.ca)), &streaming_tree(&days()));
    let proxy = Proxy::start(azurite.port);
    let dir = tempfile::tempdir().unwrap();
    let config = blob_config(&proxy.url("https"), "events", "defender-streaming", "results", "")
        .replace("identity = \"emulator\"", &format!("identity = \"managed-identity\"\nclient_id = \"{CLIENT_ID}\""));
    std::fs::write(dir.path().join("run.toml"), config).unwrap();
    Scene { _folders: (certificates, location), _azurite: azurite, proxy, ca: tls.ca, dir }
}

fn run(scene: &Scene, identity: &IdentityEndpoint, command: &str, log: &str) -> std::process::Output {
    let ca = scene.ca.display().to_string();
    hunt(
        &["--log-format", "json", command, "--config", "run.toml"],
        scene.dir.path(),
        &[
            ("IDENTITY_ENDPOINT", &identity.url),
            ("IDENTITY_HEADER", &identity.secret),
            ("SSL_CERT_FILE", &ca),
            ("RUST_LOG", log),
        ],
    )
}

fn assert_no_token_in(tokens: &[String], what: &str, haystack: &str) {
    for token in tokens {
        assert!(!haystack.contains(token.as_str()), "a token value leaked into {what}");
        // the signature-less JWT's claims part alone would be a leak too
        let claims = token.split('.').nth(1).unwrap();
        assert!(!haystack.contains(claims), "a token's claims leaked into {what}");
    }
}

#[test]
fn the_managed_identity_signs_every_blob_request_and_a_long_run_refreshes_its_token() {
    let scene = scene();
    let identity = IdentityEndpoint::start(TokenAnswer::Token { lifetime_secs: TOKEN_LIFETIME_SECS });
    scene.proxy.stall_once(STALL_AFTER_BYTES, STALL);
    let out = run(&scene, &identity, "run", "trace");
    let stderr = text(&out.stderr);
    assert!(
        out.status.success(),
        "{}",
        stderr.lines().filter(|l| l.contains("ERROR") || l.contains("error")).collect::<Vec<_>>().join("\n")
    );
    assert!(scene.proxy.stalled(), "the run was stalled once");

    let requests = identity.requests.lock().unwrap().clone();
    assert!(requests.len() >= 2, "the token was refreshed after the stall: {} token request(s)", requests.len());
    for request in &requests {
        assert_eq!(request.identity_header.as_deref(), Some(identity.secret.as_str()), "X-IDENTITY-HEADER");
        assert_eq!(request.query.get("resource").map(String::as_str), Some("https://storage.azure.com"));
        assert_eq!(request.query.get("api-version").map(String::as_str), Some("2019-08-01"));
        assert_eq!(request.query.get("client_id").map(String::as_str), Some(CLIENT_ID), "the user-assigned identity");
    }
    let tokens = identity.tokens_issued();
    assert!(tokens.windows(2).all(|w| w[0] != w[1]), "each refresh is a new token");
    println!(
        "{} token request(s) over a run stalled {STALL:?}; {} bytes of trace logs checked",
        requests.len(),
        stderr.len()
    );

    // every blob request carried a token Azurite accepted: the results are all there
    let results = objects(&container_client(&scene._azurite.url(), "results", Some(&scene.ca)));
    let d = days();
    assert_eq!(
        daily_rows(&results),
        vec![
            (d.first.to_string(), "ConnectionFailed".into(), 1, 1),
            (d.first.to_string(), "ConnectionSuccess".into(), 2, 2),
            (d.last.to_string(), "ConnectionSuccess".into(), 3, 4),
        ]
    );
    assert_no_token_in(&tokens, "the trace logs", &stderr);
    assert_no_token_in(&tokens, "stdout", &text(&out.stdout));
    assert!(!stderr.contains(&identity.secret), "the identity header leaked into the logs");
    for (name, bytes) in &results {
        assert_no_token_in(&tokens, name, &text(bytes));
    }

    // `check` gets a token and probes both containers with it
    let out = run(&scene, &identity, "check", "warn");
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "ok    identity user-assigned managed identity (client id {CLIENT_ID}) at {}",
            identity.url
        )),
        "{stdout}"
    );
    assert!(stdout.contains("got a token for https://storage.azure.com/.default"), "{stdout}");
    assert!(stdout.contains("ok    results  write, read and delete"), "{stdout}");
    assert_no_token_in(&identity.tokens_issued(), "check's output", &stdout);
}

#[test]
fn expired_tokens_are_refused_by_the_storage_account_and_the_error_says_so() {
    let scene = scene();
    // the platform hands out tokens that expired a minute ago (a skewed clock, say)
    let identity = IdentityEndpoint::start(TokenAnswer::Token { lifetime_secs: -60 });
    let out = run(&scene, &identity, "run", "info");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("the storage account refused the credential"), "{stderr}");
    assert!(
        stderr.contains(&format!("client id {CLIENT_ID}")) && stderr.contains(&scene.proxy.url("https")),
        "{stderr}"
    );
    assert!(stderr.contains("expired"), "Azurite's reason is kept: {stderr}");
    assert_no_token_in(&identity.tokens_issued(), "the error", &stderr);
}

#[test]
fn an_identity_not_assigned_to_the_job_fails_with_what_to_fix() {
    let scene = scene();
    let identity = IdentityEndpoint::start(TokenAnswer::Error {
        status: 400,
        body: r#"{"statusCode":400,"message":"No User Assigned or Delegated Managed Identity found for specified ClientId/ResourceId/PrincipalId."}"#.into(),
    });
    let out = run(&scene, &identity, "run", "info");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("cannot get a token for https://storage.azure.com/.default"), "{stderr}");
    assert!(stderr.contains("azure.client_id") && stderr.contains(CLIENT_ID), "{stderr}");
    assert!(!stderr.contains(&identity.secret), "the identity header leaked: {stderr}");

    let out = run(&scene, &identity, "check", "warn");
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("FAIL  identity") && stdout.contains("has not been assigned"), "{stdout}");
}
