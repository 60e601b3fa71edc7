//! The deployment's Sentinel side against the code: the committed table schema is what
//! `telemetry-hunt schema` prints, the workbook passes the checks Azure-Sentinel applies to
//! workbook templates, and every workbook and rule query names only tables and columns that
//! exist.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use telemetry_hunt::schema::CANONICAL_COLUMNS;
use telemetry_hunt::sink::schema::{table_name, TIME_GENERATED};
use telemetry_hunt::sink::tables::TABLES;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn workbook() -> Value {
    serde_json::from_str(&read("infra/workbook/telemetry-hunt.workbook.json")).expect("the workbook is JSON")
}

#[test]
fn committed_schema_is_what_the_binary_prints() {
    let out = Command::new(env!("CARGO_BIN_EXE_telemetry-hunt")).arg("schema").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).unwrap();
    assert!(
        printed == read("infra/schema/tables.json"),
        "infra/schema/tables.json is stale; regenerate it with\n  cargo run --release -- schema > infra/schema/tables.json"
    );
    let doc: Value = serde_json::from_str(&printed).unwrap();
    let names: Vec<&str> = doc["tables"].as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(
        names,
        [
            "MdeTelemetryDaily_CL",
            "MdeTelemetryHosts_CL",
            "MdeTelemetryProcesses_CL",
            "MdeTelemetryFindings_CL",
            "MdeTelemetryRuns_CL"
        ]
    );
}

/// `subscriptions/<GUID>` anywhere in the text: what Azure-Sentinel's `doesNotContainResourceInfo` rejects.
fn resource_id_at(text: &str) -> Option<usize> {
    let guid_shape = |s: &[u8]| {
        s.len() >= 36
            && s[..36].iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_hexdigit(),
            })
    };
    text.match_indices("subscriptions/")
        .map(|(at, m)| (at, at + m.len()))
        .find(|(_, rest)| guid_shape(&text.as_bytes()[*rest..]))
        .map(|(at, _)| at)
}

#[test]
fn workbook_passes_the_azure_sentinel_template_checks() {
    let text = read("infra/workbook/telemetry-hunt.workbook.json");
    let wb = workbook();
    assert_eq!(wb["version"], "Notebook/1.0");
    assert!(wb["$schema"].as_str().unwrap().contains("schema/workbook.json"));
    let template = wb["fromTemplateId"].as_str().unwrap();
    assert!(template.starts_with("sentinel-") && template != "sentinel-UserWorkbook", "{template}");
    assert_eq!(resource_id_at(&text), None, "a workbook template must not name a resource");
    assert_eq!(wb["fallbackResourceIds"], serde_json::json!([]));
    assert!(text.is_ascii(), "Azure-Sentinel rejects non-ASCII content");
    assert!(!text.contains("/en-us/"), "documentation links without a locale");

    let items = wb["items"].as_array().unwrap();
    let parameters: Vec<&Value> =
        items.iter().filter(|i| i["type"] == 9).flat_map(|i| i["content"]["parameters"].as_array().unwrap()).collect();
    let time = parameters.iter().find(|p| p["name"] == "TimeRange").expect("a TimeRange parameter");
    assert_eq!((&time["type"], &time["isRequired"], &time["isGlobal"]), (&4.into(), &true.into(), &true.into()));
    assert_eq!(time["value"]["durationMs"], 30 * 24 * 3600 * 1000_u64, "default: 30 days");
    for filter in ["FindingType", "Severity"] {
        assert!(parameters.iter().any(|p| p["name"] == filter && p["type"] == 2), "a {filter} drop-down");
    }
    let panels: Vec<&Value> = items.iter().filter(|i| i["type"] == 3).collect();
    assert!(panels.len() >= 5, "reference chart, hosts, processes, findings, runs");
    for panel in &panels {
        let content = &panel["content"];
        assert_eq!(content["timeContextFromParameter"], "TimeRange", "{}", panel["name"]);
        assert_eq!(
            (&content["queryType"], &content["resourceType"]),
            (&0.into(), &"microsoft.operationalinsights/workspaces".into())
        );
        assert!(!content["query"].as_str().unwrap().contains("ago(30d)"), "{}: time hard-coded", panel["name"]);
    }
    let chart = panels.iter().find(|p| p["name"] == "reference-chart").unwrap();
    assert_eq!(chart["content"]["visualization"], "linechart");
    assert!(chart["content"]["query"].as_str().unwrap().starts_with("MdeTelemetryDaily_CL"));
}

/// The KQL words our queries use that are neither tables nor columns.
const KQL_WORDS: &[&str] = &[
    "where",
    "summarize",
    "by",
    "project",
    "extend",
    "order",
    "asc",
    "desc",
    "and",
    "or",
    "not",
    "in",
    "let",
    "distinct",
    "contains",
    "true",
    "false",
    "ago",
    "bin",
    "case",
    "dynamic",
    "parse_url",
    "dcount",
    "isnotempty",
    "arg_max",
    "min",
    "max",
    "sum",
    "take_any",
    "make_set",
    "tostring",
    "datetime_diff",
];

/// Checks one query: every table is ours or DeviceNetworkEvents, every other name is a column
/// of a table it reads, a name the query itself defines (`X =`, `let X =`), or a KQL word.
fn check_query(query: &str) -> Result<(), String> {
    let mut tables: Vec<(String, Vec<String>)> = TABLES
        .iter()
        .map(|t| {
            let columns = std::iter::once(TIME_GENERATED).chain(t.columns.iter().map(|(n, _)| *n));
            (table_name(t), columns.map(str::to_string).collect())
        })
        .collect();
    tables.push((
        "DeviceNetworkEvents".into(),
        CANONICAL_COLUMNS.iter().chain(&[TIME_GENERATED]).map(|c| c.to_string()).collect(),
    ));
    // Workbook parameters expand before the query runs: `{TimeRange}` to `> ago(...)`, the
    // drop-downs to quoted values.
    let mut text = String::new();
    let mut rest = query;
    while let Some(open) = rest.find('{') {
        let close = open + rest[open..].find('}').ok_or("unclosed `{`")?;
        text.push_str(&rest[..open]);
        text.push_str(if rest[open + 1..close].starts_with("TimeRange") { "> ago(7d)" } else { "'*'" });
        rest = &rest[close + 1..];
    }
    text.push_str(rest);

    let tokens = tokens(&text);
    let mut read = Vec::new();
    let mut defined = BTreeSet::new();
    for (i, token) in tokens.iter().enumerate() {
        let next = tokens.get(i + 1).map(String::as_str);
        if let Some((name, _)) = tables.iter().find(|(name, _)| name == token) {
            read.push(name.clone());
        } else if token.ends_with("_CL") {
            return Err(format!("unknown table `{token}`"));
        } else if next == Some("=") || (i > 0 && tokens[i - 1] == "let") {
            defined.insert(token.clone());
        }
    }
    if read.is_empty() {
        return Err("reads no known table".into());
    }
    let columns: BTreeSet<&String> =
        tables.iter().filter(|(name, _)| read.contains(name)).flat_map(|(_, columns)| columns).collect();
    for (i, token) in tokens.iter().enumerate() {
        let is_name = token.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
        let after_dot = i > 0 && tokens[i - 1] == ".";
        if !is_name || after_dot || read.contains(token) || defined.contains(token) || columns.contains(token) {
            continue;
        }
        if !KQL_WORDS.contains(&token.as_str()) {
            return Err(format!("`{token}` is no column of {read:?} and no KQL word this test knows"));
        }
    }
    Ok(())
}

/// Names, numbers (with their unit, `7d`), and one-character symbols; strings and `//` comments
/// dropped; `==` kept whole so that `=` marks a definition.
fn tokens(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' {
            i += 1;
            while i < chars.len() && chars[i] != c {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphanumeric() || c == '_' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(chars[start..i].iter().collect());
        } else if c == '=' && chars.get(i + 1) == Some(&'=') {
            out.push("==".into());
            i += 2;
        } else {
            if !c.is_whitespace() {
                out.push(c.to_string());
            }
            i += 1;
        }
    }
    out
}

fn workbook_queries() -> Vec<(String, String)> {
    let wb = workbook();
    let mut queries = Vec::new();
    for item in wb["items"].as_array().unwrap() {
        if item["type"] == 3 {
            queries
                .push((item["name"].as_str().unwrap().to_string(), item["content"]["query"].as_str().unwrap().into()));
        }
        for parameter in item["content"]["parameters"].as_array().into_iter().flatten() {
            if let Some(query) = parameter["query"].as_str() {
                queries.push((format!("parameter {}", parameter["name"]), query.to_string()));
            }
        }
    }
    queries
}

#[test]
fn workbook_and_rule_queries_name_only_known_tables_and_columns() {
    let mut queries = workbook_queries();
    queries.push(("analytics rule".into(), read("infra/sentinel/findings-rule.kql")));
    assert!(queries.len() >= 8);
    for (name, query) in &queries {
        if let Err(error) = check_query(query) {
            panic!("{name}: {error}\n{query}");
        }
    }
}

#[test]
fn the_query_check_catches_unknown_tables_and_columns() {
    assert_eq!(check_query("MdeTelemetryDaily_CL | where Day {TimeRange} | project Day, Connections"), Ok(()));
    assert_eq!(check_query("MdeTelemetryDaily_CL | extend X = Events * 2 | project X"), Ok(()));
    let typo = check_query("MdeTelemetryDaily_CL | project Day, Conections").unwrap_err();
    assert!(typo.contains("`Conections`"), "{typo}");
    let other_table = check_query("MdeTelemetryDaily_CL | project RemoteHost").unwrap_err();
    assert!(other_table.contains("`RemoteHost`"), "{other_table}");
    assert!(check_query("MdeTelemetryDialy_CL | take 1").unwrap_err().contains("unknown table"));
    assert!(check_query("DeviceNetworkEvents | project Timestamp, RemoteUrl").is_ok());
}

#[test]
fn every_panel_and_the_rule_keep_the_newest_row_per_key() {
    let mut queries: Vec<(String, String)> =
        workbook_queries().into_iter().filter(|(name, _)| !name.starts_with("parameter")).collect();
    queries.push(("analytics rule".into(), read("infra/sentinel/findings-rule.kql")));
    for (name, query) in queries {
        let Some(table) = TABLES.iter().find(|t| query.contains(&table_name(t))) else {
            assert!(query.contains("DeviceNetworkEvents"), "{name}");
            continue;
        };
        let dedupe = query
            .lines()
            .find(|l| l.contains("arg_max(TimeGenerated, *)"))
            .unwrap_or_else(|| panic!("{name}: no dedupe"));
        let by = dedupe.rsplit(" by ").next().unwrap();
        assert_eq!(by.split(", ").collect::<Vec<_>>(), table.key, "{name}: dedupe by the table's key");
    }
}

/// The `TELEMETRY_HUNT_*` names a deployment file sets, in order of appearance.
fn deployed_env_names(path: &str) -> Vec<String> {
    let text = read(path);
    let mut names = Vec::new();
    for (at, _) in text.match_indices("TELEMETRY_HUNT_") {
        let name: String =
            text[at..].chars().take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_').collect();
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

#[test]
fn the_deployments_set_only_variables_the_job_reads_and_the_result_validates() {
    let known: BTreeSet<String> =
        ["src/cli.rs", "src/config.rs"].iter().flat_map(|path| deployed_env_names(path)).collect();
    for path in ["infra/bicep/main.bicep", "infra/terraform/main.tf"] {
        let names = deployed_env_names(path);
        for must in [
            "TELEMETRY_HUNT_IDENTITY",
            "TELEMETRY_HUNT_CLIENT_ID",
            "TELEMETRY_HUNT_RESULTS_ACCOUNT",
            "TELEMETRY_HUNT_RESULTS_CONTAINER",
            "TELEMETRY_HUNT_LA_WORKSPACE_ID",
            "TELEMETRY_HUNT_SOURCE_ACCOUNT",
            "TELEMETRY_HUNT_SOURCE_CONTAINER",
            "TELEMETRY_HUNT_SENTINEL_ENDPOINT",
            "TELEMETRY_HUNT_SENTINEL_DCR_IMMUTABLE_ID",
        ] {
            assert!(names.iter().any(|n| n == must), "{path} does not set {must}");
        }
        for name in &names {
            assert!(known.contains(name), "{path} sets {name}, which the job does not read");
        }
    }
    // What the deployment sets, with plausible values, is a valid configuration for both of its
    // sources (the workspace, or an export container instead).
    let common = [
        ("TELEMETRY_HUNT_IDENTITY", "managed-identity"),
        ("TELEMETRY_HUNT_CLIENT_ID", "11111111-2222-3333-4444-555555555555"),
        ("TELEMETRY_HUNT_RESULTS_ACCOUNT", "mdetelhuntabc123"),
        ("TELEMETRY_HUNT_RESULTS_CONTAINER", "telemetry-hunt"),
        ("TELEMETRY_HUNT_SENTINEL_ENDPOINT", "https://mdetelhunt-dce-abcd.westeurope-1.ingest.monitor.azure.com"),
        ("TELEMETRY_HUNT_SENTINEL_DCR_IMMUTABLE_ID", "dcr-00000000000000000000000000000000"),
    ];
    let workspace = [("TELEMETRY_HUNT_LA_WORKSPACE_ID", "66666666-7777-8888-9999-000000000000")];
    let export = [("TELEMETRY_HUNT_SOURCE_ACCOUNT", "exports"), ("TELEMETRY_HUNT_SOURCE_CONTAINER", "mde")];
    for source in [&workspace[..], &export[..]] {
        let env: std::collections::BTreeMap<&str, &str> = common.iter().chain(source).copied().collect();
        let mut config = telemetry_hunt::config::Config::default();
        config.apply_env(|name| env.get(name).map(|v| v.to_string())).expect("the environment applies");
        let settings = config.validate().unwrap_or_else(|e| panic!("{source:?}: {e}"));
        assert!(settings.results_blob.is_some() && settings.sentinel.is_some());
        assert_eq!(settings.log_analytics.is_some(), source.len() == 1);
        assert_eq!(settings.source_blob.is_some(), source.len() == 2);
    }
}
