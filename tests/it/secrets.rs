//! No secret in any output: every failing path — configuration mistakes that put a key, a SAS,
//! a connection string or a client secret where it does not belong, endpoints that cannot be
//! reached, 401 and 403 answers that quote the request's bearer token, a token endpoint that
//! quotes the platform's identity header — runs the binary with recognisable fake secrets, in
//! both log formats, and none of them may appear in stdout, stderr, the run record or any file
//! of the results store (the outbox included, decompressed).

use std::io::Read;
use std::path::Path;
use std::process::Output;

use crate::azure_fakes::identity::{Identity, TokenFault, TOKEN_MARK, TOKEN_PREFIX};
use crate::azure_fakes::log_analytics::events_from_dir;
use crate::azure_fakes::{sample_jsonl, AzureWorld, Fault, DCR, WORKSPACE};
use crate::azurite_support::{free_port, hunt, text};
use crate::faults::FAST_TOKENS;
use crate::support::files_under;

/// A storage account key (88 characters of base64, as the portal shows them).
const KEY: &str = "FAKEKEYe/pXgVdHpCkZDC9lHUE4zS2oQ5TD3LFPRlyPsukBMt+eyo07CXpCl+l856hv0T7mzqsfYl67P9cXWlg==";
/// The signature of a SAS token, URL-encoded as it appears in a SAS URL.
const SIG: &str = "FAKESIGq7RzvW0xK2mN9pL4tY8%2BbC1dE3fG5hJ6kQ%3D";
/// An app registration's client secret.
const CLIENT_SECRET: &str = "FAKESECRET~8Q~aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456";

fn connection_string() -> String {
    format!("DefaultEndpointsProtocol=https;AccountName=contoso;AccountKey={KEY};EndpointSuffix=core.windows.net")
}

fn sas_url(base: &str) -> String {
    format!("{base}?sv=2022-11-02&ss=b&srt=co&sp=rl&se=2030-01-01T00:00:00Z&sig={SIG}")
}

/// Every secret, and the recognisable part of each, to look for.
fn needles(identity: &Identity) -> Vec<String> {
    let mut all = vec![KEY.to_string(), SIG.to_string(), CLIENT_SECRET.to_string(), connection_string()];
    all.extend(["FAKEKEY", "FAKESIG", "FAKESECRET", TOKEN_MARK, TOKEN_PREFIX].map(String::from));
    all.push(identity.header.clone());
    all
}

/// The secrets a container's environment may hold; the job must never print them.
fn secret_environment() -> Vec<(String, String)> {
    vec![
        ("AZURE_STORAGE_KEY".into(), KEY.into()),
        ("AZURE_STORAGE_CONNECTION_STRING".into(), connection_string()),
        ("AZURE_STORAGE_SAS_TOKEN".into(), format!("sv=2022-11-02&sig={SIG}")),
        ("AZURE_CLIENT_SECRET".into(), CLIENT_SECRET.into()),
    ]
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

/// What a run left for anyone to read: its stdout, stderr, and every file of its results.
fn haystacks(out: &Output, results: &Path) -> Vec<(String, String)> {
    let mut all = vec![("stdout".to_string(), text(&out.stdout)), ("stderr".to_string(), text(&out.stderr))];
    for path in files_under(results) {
        let bytes = std::fs::read(&path).unwrap();
        let bytes = if path.to_string_lossy().ends_with(".gz") { gunzip(&bytes) } else { bytes };
        all.push((path.display().to_string(), text(&bytes)));
    }
    all
}

/// One failing path: its configuration (or environment), what to break in the fakes, the exit
/// code, and what the output must say (so the path failed where it was meant to).
struct LeakPath {
    name: &'static str,
    config: String,
    env: Vec<(String, String)>,
    command: &'static str,
    setup: fn(&World),
    code: i32,
    says: &'static str,
}

type World = AzureWorld;

fn workspace_config(world: &World) -> String {
    world.config("window_hours = 24", "max_attempts = 2") + FAST_TOKENS
}

/// The workspace refuses the job's identity (403), quoting the request's bearer token.
fn refuse_queries(world: &World) {
    let mut la = world.la.state.lock().unwrap();
    la.forbidden = true;
    la.echo_token = true;
}

/// The DCR refuses the job's identity (403), quoting the request's bearer token.
fn refuse_ingestion(world: &World) {
    let mut ingestion = world.ingestion.state.lock().unwrap();
    ingestion.forbidden = true;
    ingestion.echo_token = true;
}

fn paths(world: &World) -> Vec<LeakPath> {
    let workspace = workspace_config(world);
    let none: fn(&World) = |_| {};
    let config_error = |name, config: String, says| LeakPath {
        name,
        config,
        env: Vec::new(),
        command: "run",
        setup: none,
        code: 2,
        says,
    };
    let failing = |name, setup, code, says| LeakPath {
        name,
        config: workspace.clone(),
        env: Vec::new(),
        command: "run",
        setup,
        code,
        says,
    };
    let env = |pairs: &[(&str, String)]| pairs.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    vec![
        config_error(
            "an account key as a key of [output.blob]",
            format!("[output.blob]\naccount = \"contoso\"\ncontainer = \"results\"\naccess_key = \"{KEY}\"\n"),
            "access_key",
        ),
        config_error(
            "a connection string as the results endpoint",
            format!("[output.blob]\nendpoint = \"{}\"\ncontainer = \"results\"\n", connection_string()),
            "output.blob.endpoint",
        ),
        config_error(
            "an account key as the account name",
            format!("[source.blob]\naccount = \"{KEY}\"\ncontainer = \"events\"\n"),
            "source.blob.account",
        ),
        config_error(
            "a SAS URL as the source endpoint",
            format!("[source.blob]\nendpoint = \"{}\"\ncontainer = \"events\"\n", sas_url("https://contoso.blob.core.windows.net/")),
            "source.blob.endpoint",
        ),
        config_error(
            "a SAS URL as the container",
            format!("[output.blob]\naccount = \"contoso\"\ncontainer = \"{}\"\n", sas_url("results")),
            "output.blob.container",
        ),
        config_error(
            "a client secret as the client id",
            format!("[azure]\nclient_id = \"{CLIENT_SECRET}\"\n"),
            "azure.client_id",
        ),
        config_error(
            "a client secret as a key of [azure]",
            format!("[azure]\nclient_secret = \"{CLIENT_SECRET}\"\n"),
            "client_secret",
        ),
        config_error(
            "an account key where a number belongs",
            format!("[azure]\nmax_retries = \"{KEY}\"\n"),
            "max_retries",
        ),
        config_error(
            "a password in the Sentinel endpoint",
            format!(
                "[sentinel]\nendpoint = \"https://job:{CLIENT_SECRET}@dce-1.westeurope-1.ingest.monitor.azure.com\"\ndcr_immutable_id = \"{DCR}\"\n"
            ),
            "sentinel.endpoint",
        ),
        config_error(
            "a SAS in the workspace endpoint",
            format!(
                "[source.log_analytics]\nworkspace_id = \"{WORKSPACE}\"\nendpoint = \"{}\"\n",
                sas_url("https://api.loganalytics.azure.com/")
            ),
            "source.log_analytics.endpoint",
        ),
        LeakPath {
            env: env(&[
                ("TELEMETRY_HUNT_RESULTS_ENDPOINT", connection_string()),
                ("TELEMETRY_HUNT_RESULTS_CONTAINER", "results".into()),
            ]),
            ..config_error("a connection string in TELEMETRY_HUNT_RESULTS_ENDPOINT", String::new(), "output.blob.endpoint")
        },
        LeakPath {
            env: env(&[("TELEMETRY_HUNT_CLIENT_ID", CLIENT_SECRET.into())]),
            ..config_error("a client secret in TELEMETRY_HUNT_CLIENT_ID", String::new(), "azure.client_id")
        },
        LeakPath {
            command: "check",
            ..config_error(
                "check: a connection string as the results endpoint",
                format!("[output.blob]\nendpoint = \"{}\"\ncontainer = \"results\"\n", connection_string()),
                "output.blob.endpoint",
            )
        },
        LeakPath {
            config: format!(
                "[output.blob]\nendpoint = \"http://127.0.0.1:{}/devstoreaccount1\"\ncontainer = \"results\"\n[azure]\nidentity = \"emulator\"\nmax_retries = 0\n",
                free_port()
            ),
            ..failing("a results endpoint with nothing listening", none, 1, "cannot reach the storage endpoint")
        },
        failing(
            "the query API answers 401, quoting the bearer token",
            |w| {
                w.la.state.lock().unwrap().echo_token = true;
                (0..20).for_each(|_| w.la.push_fault(Fault::status(401)));
            },
            1,
            "HTTP 401",
        ),
        failing(
            "the query API answers 403, quoting the bearer token",
            refuse_queries,
            1,
            "Log Analytics Reader",
        ),
        failing(
            "the ingestion API answers 403, quoting the bearer token",
            refuse_ingestion,
            1,
            "wait in the outbox",
        ),
        failing(
            "the token endpoint answers 500, quoting the identity header",
            |w| w.identity.state.lock().unwrap().fault = Some(TokenFault::Status(500)),
            1,
            "cannot get an access token",
        ),
        failing(
            "the token endpoint answers garbage",
            |w| w.identity.state.lock().unwrap().fault = Some(TokenFault::Garbage),
            1,
            "cannot get an access token",
        ),
        LeakPath {
            command: "check",
            ..failing(
                "check: 403 from the workspace and the DCR, quoting the bearer token",
                |w| {
                    refuse_queries(w);
                    refuse_ingestion(w);
                },
                1,
                "FAIL",
            )
        },
        // and a run that succeeds: the tokens it used are nowhere either
        failing("a successful run", none, 0, "ConnectionSuccess"),
    ]
}

#[test]
fn no_failing_path_shows_a_secret_in_any_output() {
    let world = AzureWorld::start(events_from_dir(&sample_jsonl(2_000, 1, 40, "2026-11-01"), 0));
    let needles = needles(&world.identity);
    let mut leaks = Vec::new();
    // paths that did not fail as meant (wrong exit code, or not where they should)
    let mut wrong = Vec::new();
    let mut runs = 0;
    for (i, path) in paths(&world).into_iter().enumerate() {
        for format in ["text", "json"] {
            world.heal();
            (path.setup)(&world);
            let config = world.cwd.path().join(format!("config-{i}.toml"));
            std::fs::write(&config, &path.config).unwrap();
            let out_dir = format!("out-{i}-{format}");
            let mut args = vec!["--log-format", format, path.command, "--config", config.to_str().unwrap()];
            // a blob results store takes no `--out`
            if !path.config.contains("[output.blob]") {
                args.extend(["--out", &out_dir]);
            }
            if path.command == "run" {
                args.extend(["--from", "2026-11-01", "--to", "2026-11-01"]);
            }
            let mut env = world.identity.env();
            env.extend(secret_environment());
            env.extend(path.env.iter().cloned());
            let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let out = hunt(&args, world.cwd.path(), &env);
            runs += 1;
            let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
            if out.status.code() != Some(path.code) || !said.contains(path.says) {
                let code = out.status.code();
                wrong.push(format!(
                    "{} ({format}): exit {code:?}, want {}; `{}` must be in: {said}",
                    path.name, path.code, path.says
                ));
            }
            for (place, haystack) in haystacks(&out, &world.cwd.path().join(&out_dir)) {
                for needle in needles.iter().filter(|n| haystack.contains(n.as_str())) {
                    leaks.push(format!("{} ({format}): `{needle}` in {place}", path.name));
                }
            }
        }
    }
    world.heal();
    assert!(wrong.is_empty(), "{} path(s) did not fail as meant:\n{}", wrong.len(), wrong.join("\n"));
    assert!(leaks.is_empty(), "{} leak(s):\n{}", leaks.len(), leaks.join("\n"));
    assert_eq!(runs, 42);
    // the fakes really were asked with the job's tokens, and handed out recognisable ones
    let issued: usize = world.identity.state.lock().unwrap().issued.values().sum();
    assert!(issued > 0);
}
