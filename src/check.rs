//! `telemetry-hunt check`: the configuration is valid, and every endpoint it names answers the
//! way a run needs: a token from the identity, a listing of the source, a listing of the
//! results container and a probe object written, read back and deleted. Each failure says what
//! to fix.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use crate::azure::identity::STORAGE_SCOPE;
use crate::azure::storage::explain;
use crate::azure::{Azure, BlobLocation, IdentityKind};
use crate::config::Settings;
use crate::sink::blob::BlobStore;
use crate::sink::local::LocalDir;
use crate::sink::lock::{LockBody, LOCK_PATH};
use crate::sink::store::Store;
use crate::time::format_micros;

/// One probe: what was tried on what, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub target: &'static str,
    pub what: String,
    /// What was seen, or what failed and how to fix it.
    pub outcome: Result<String, String>,
}

impl Probe {
    fn new(target: &'static str, what: impl Into<String>, outcome: Result<String, String>) -> Probe {
        Probe { target, what: what.into(), outcome }
    }
}

/// Runs every probe the configuration calls for, in order; never stops at the first failure.
pub fn run_checks(settings: &Settings, inputs: &[PathBuf], out: &Path) -> Vec<Probe> {
    let mut probes = Vec::new();
    let needs_azure = settings.source_blob.is_some() || settings.results_blob.is_some();
    let azure = if needs_azure {
        match Azure::start(&settings.identity, &settings.transport) {
            Ok(azure) => Some(azure),
            Err(e) => {
                probes.push(Probe::new("identity", settings.identity.kind.as_str(), Err(e.to_string())));
                None
            }
        }
    } else {
        None
    };
    if let Some(azure) = &azure {
        probes.push(probe_identity(azure));
    }
    match (&settings.source_blob, &azure) {
        (Some(source), Some(azure)) => probes.push(probe_source(azure, &source.location)),
        (Some(source), None) => {
            probes.push(Probe::new("source", source.location.url(), Err("not probed: no identity".into())))
        }
        // The workspace is the source: its probe is among the monitor lines below.
        (None, _) if settings.log_analytics.is_some() => {}
        (None, _) => probes.push(probe_local_inputs(inputs)),
    }
    match (&settings.results_blob, &azure) {
        (Some(location), Some(azure)) => probes.extend(probe_results(azure, location)),
        (Some(location), None) => {
            probes.push(Probe::new("results", location.url(), Err("not probed: no identity".into())))
        }
        (None, _) => probes.extend(probe_store("results", Arc::new(LocalDir::new(out)))),
    }
    // The workspace and the Sentinel streams: each probe line names its endpoint.
    for line in crate::job::probe_endpoints(settings, None) {
        probes.push(Probe::new("monitor", String::new(), line));
    }
    probes
}

fn probe_identity(azure: &Azure) -> Probe {
    let identity = &azure.identity;
    if identity.kind() == IdentityKind::Emulator {
        return Probe::new("identity", identity.describe(), Ok("signs with the emulator's shared key".into()));
    }
    let token = azure.handle().block_on(identity.bearer(STORAGE_SCOPE));
    Probe::new(
        "identity",
        identity.describe(),
        token.map(|_| format!("got a token for {STORAGE_SCOPE}")).map_err(|e| e.to_string()),
    )
}

fn probe_source(azure: &Azure, location: &BlobLocation) -> Probe {
    let what = format!("list {}", location.url());
    let container = match azure.container(location) {
        Ok(container) => container,
        Err(e) => return Probe::new("source", what, Err(e.to_string())),
    };
    let prefix = container.path("");
    let prefix = (!prefix.as_ref().is_empty()).then_some(prefix);
    let listing = container.block_on(container.store.list_with_delimiter(prefix.as_ref()));
    let outcome = match listing {
        // Empty is not yet wrong: the streaming export can take a day to write its first blob.
        Ok(listing) if listing.objects.is_empty() && listing.common_prefixes.is_empty() => Ok(format!(
            "nothing under {} yet; an export can take up to 24 hours to write its first blob. If it has been longer, check `source.blob.prefix` and the export's destination",
            location.url()
        )),
        Ok(listing) => Ok(format!(
            "{} folder(s) and {} blob(s) at the top, e.g. {}",
            listing.common_prefixes.len(),
            listing.objects.len(),
            listing
                .common_prefixes
                .first()
                .map(|p| p.as_ref().to_string())
                .or_else(|| listing.objects.first().map(|o| o.location.as_ref().to_string()))
                .unwrap_or_default()
        )),
        Err(e) => Err(explain(&e, location, &azure.identity, "Storage Blob Data Reader")),
    };
    Probe::new("source", what, outcome)
}

fn probe_results(azure: &Azure, location: &BlobLocation) -> Vec<Probe> {
    match azure.container(location) {
        Ok(container) => probe_store("results", Arc::new(BlobStore::new(container, azure.identity.clone()))),
        Err(e) => vec![Probe::new("results", location.url(), Err(e.to_string()))],
    }
}

fn probe_local_inputs(inputs: &[PathBuf]) -> Probe {
    let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
    let missing: Vec<&String> = inputs.iter().zip(&names).filter(|(p, _)| !p.exists()).map(|(_, n)| n).collect();
    let outcome = if inputs.is_empty() {
        Err("no input: set `source.inputs`, `[source.blob]`, or pass `--input`".into())
    } else if missing.is_empty() {
        Ok(format!("{} input(s) exist", inputs.len()))
    } else {
        Err(format!(
            "missing: {}; pass existing files or folders",
            missing.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
        ))
    };
    Probe::new("source", format!("local {}", names.join(", ")), outcome)
}

/// Lists the store, writes a probe object, reads it back, deletes it; and says who holds the lock.
fn probe_store(target: &'static str, store: Arc<dyn Store>) -> Vec<Probe> {
    let where_ = store.location();
    let mut probes = Vec::new();
    let listed = store.list("MdeTelemetryDaily/");
    let listing_ok = listed.is_ok();
    probes.push(Probe::new(
        target,
        format!("list {where_}"),
        listed.map(|names| format!("{} daily table object(s)", names.len())).map_err(|e| e.message),
    ));
    if !listing_ok {
        return probes;
    }
    let path = format!("_probe/check-{}.txt", std::process::id());
    let body = Bytes::from(format!("telemetry-hunt check {}", crate::job::now_micros()));
    let round_trip = store.put(&path, body.clone()).and_then(|()| store.get(&path)).and_then(|read| {
        store.delete(&path)?;
        Ok(read)
    });
    let outcome = match round_trip {
        Ok(Some(read)) if read == body => Ok("wrote, read back and deleted a probe object".into()),
        Ok(_) => Err(format!("the probe object `{path}` did not read back as written")),
        Err(e) => Err(e.message),
    };
    probes.push(Probe::new(target, format!("write, read and delete {path}"), outcome));
    let lock = match store.get(LOCK_PATH) {
        Ok(None) => Ok("no run holds the lock".to_string()),
        Ok(Some(bytes)) => match serde_json::from_slice::<LockBody>(&bytes) {
            Ok(body) if body.expires_at > crate::job::now_micros() => Ok(format!(
                "run {} on {} holds the lock until {}; a run started now is refused",
                body.run_id,
                body.host,
                format_micros(body.expires_at)
            )),
            Ok(body) => Ok(format!(
                "a stale lock of run {} (expired {}); the next run takes it over",
                body.run_id,
                format_micros(body.expires_at)
            )),
            Err(_) => Err(format!("`{LOCK_PATH}` is not a lock this job wrote; delete it if no run is active")),
        },
        Err(e) => Err(e.message),
    };
    probes.push(Probe::new(target, format!("read {LOCK_PATH}"), lock));
    probes
}

/// The checklist as printed: one line per probe.
pub fn render(probes: &[Probe]) -> String {
    let mut text = String::new();
    for probe in probes {
        let (mark, detail) = match &probe.outcome {
            Ok(detail) => ("ok  ", detail),
            Err(detail) => ("FAIL", detail),
        };
        match probe.what.as_str() {
            "" => text.push_str(&format!("{mark}  {:<8} {detail}\n", probe.target)),
            what => text.push_str(&format!("{mark}  {:<8} {what}: {detail}\n", probe.target)),
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn a_local_configuration_probes_the_folder_and_the_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let settings = Config::default().validate().unwrap();
        let probes = run_checks(&settings, &[dir.path().join("missing")], &dir.path().join("out"));
        let text = render(&probes);
        assert!(text.contains("FAIL  source") && text.contains("missing"), "{text}");
        assert!(text.contains("ok    results  write, read and delete"), "{text}");
        assert!(text.contains("no run holds the lock"), "{text}");
        assert_eq!(probes.iter().filter(|p| p.outcome.is_err()).count(), 1, "{text}");
        assert!(!dir.path().join("out/_probe").exists(), "the probe object is deleted");
    }
}
