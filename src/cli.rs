//! The command line: arguments, environment overrides, and the commands behind them.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::{Config, ConfigError};
use crate::hunt::host::MatchMode;
use crate::job::{self, RunError, RunRequest};
use crate::sample::{self, SampleFormat, SampleOptions};
use crate::time::Day;

/// Environment variables the container sets instead of flags.
pub mod env_vars {
    pub const CONFIG: &str = "TELEMETRY_HUNT_CONFIG";
    pub const INPUT: &str = "TELEMETRY_HUNT_INPUT";
    pub const OUT: &str = "TELEMETRY_HUNT_OUT";
    pub const MATCH_MODE: &str = "TELEMETRY_HUNT_MATCH_MODE";
    pub const LOG_FORMAT: &str = "TELEMETRY_HUNT_LOG_FORMAT";
    /// Blob source and results, identity, nightly window, workspace, Sentinel: applied to the
    /// configuration.
    pub use crate::config::env::*;
}

/// Takes the variables bound to flags as unset when they are empty, as the configuration's own
/// variables are: a deployment template that declares every variable sets the unused ones to
/// "", which would otherwise read as `--input ""` (clap: "a value is required"). Call before
/// parsing, while the process has one thread.
pub fn forget_empty_variables() {
    use env_vars::*;
    for name in [CONFIG, INPUT, OUT, MATCH_MODE, LOG_FORMAT] {
        if std::env::var_os(name).is_some_and(|value| value.to_string_lossy().trim().is_empty()) {
            std::env::remove_var(name);
        }
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "telemetry-hunt",
    version,
    about = "Hunts Defender DeviceNetworkEvents for connections to Defender for Endpoint's own telemetry hosts.",
    long_about = "Hunts Defender DeviceNetworkEvents for connections to Defender for Endpoint's own telemetry hosts.\n\n\
It reproduces Microsoft's \"Defender for Endpoint Telemetry\" hunting query exactly (distinct devices per \
ActionType per UTC day, counted exactly rather than estimated), catches the spellings that hide a host from \
that query, compares each day with the 30 before it (series anomalies, unexpected processes, new \
combinations, look-alike hosts, unusual ports, silent devices), and writes per-day tables, findings and an HTML report.",
    after_help = "Examples:\n  telemetry-hunt run                                   # the bundled sample, results and report.html in ./out\n  telemetry-hunt run --input exports/ --from 2026-11-01 --to 2026-11-30\n  telemetry-hunt run --config container.toml           # nightly: blob source, results in a container\n  telemetry-hunt check --config container.toml         # probe every configured endpoint\n  telemetry-hunt backfill --input exports/ --from 2026-10-01 --to 2026-11-30\n  telemetry-hunt report --out out/\n  telemetry-hunt sample --out data/ --rows 1000000 --days 7\n\nExit codes: 0 ok, 1 the run (or a check) failed (nothing half-written), 2 usage or configuration error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub global: GlobalArgs,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Log format on stderr: `text` for people, `json` for the container; `auto` picks text on a
    /// terminal and JSON otherwise.
    #[arg(long, global = true, value_enum, default_value = "auto", env = env_vars::LOG_FORMAT)]
    pub log_format: LogFormat,
    /// More log detail (-v debug, -vv trace). `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,
    /// Only warnings and errors, no progress bar.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// No progress bar (it is hidden anyway when stderr is not a terminal).
    #[arg(long, global = true)]
    pub no_progress: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Auto,
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Hunt over DeviceNetworkEvents and write the per-day result tables.
    #[command(
        after_help = "Examples:\n  telemetry-hunt run\n      the bundled sample (fixtures/sample), results in ./out\n  telemetry-hunt run --input exports/ --input extra.jsonl.gz --out results/\n  telemetry-hunt run --input events.parquet --from 2026-11-01 --to 2026-11-07 --match-mode normalized\n  telemetry-hunt run --config container.toml\n      nightly: a blob source ([source.blob]) without --from/--to hunts yesterday (UTC) and\n      source.reprocess_days days before it; the same with a workspace ([source.log_analytics])\n\nInputs: Parquet (any common writer), JSON lines (Defender streaming export, Log Analytics export, plain or .gz),\nDefender portal CSV exports. Folders are searched recursively. Or a blob container ([source.blob]).\n\nOutput: <out>/<Table>/day=YYYY-MM-DD/part-0.{parquet,jsonl} for MdeTelemetryDaily, MdeTelemetryHosts,\nMdeTelemetryProcesses, MdeTelemetryDeviceHosts and MdeTelemetryFindings, one run record per run in\n<out>/MdeTelemetryRuns/, and <out>/report.html, in a folder or a blob container ([output.blob]). A run takes the\nstore's lock (a second run is refused, exit 1) and commits all its days at once; re-running a day replaces it, and\nits findings come out the same. The detectors read the 30 days before each day from the store (earlier runs or\nbackfill), never the raw input again. With [sentinel], the committed tables then go to Sentinel custom tables;\nwhat Sentinel does not acknowledge waits in the store's _outbox/ and is sent first by the next run (the run\nexits 1 meanwhile)."
    )]
    Run(RunArgs),
    /// Validate the configuration and probe every endpoint it names: a token from the identity,
    /// a listing of the source, the results container listed and a probe object written, read
    /// and deleted, `print 1` on the Log Analytics workspace, an empty array posted to every
    /// Sentinel stream of the DCR.
    #[command(
        after_help = "Examples:\n  telemetry-hunt check --config container.toml\n  TELEMETRY_HUNT_IDENTITY=azure-cli telemetry-hunt check --config container.toml\n\nEach failure names the endpoint and what to fix, e.g. the role to grant (Storage Blob Data Reader on the\nsource container, Storage Blob Data Contributor on the results container, Log Analytics Reader on the\nworkspace, Monitoring Metrics Publisher on the DCR) and to which identity.\nExit codes: 0 every probe passed, 1 a probe failed, 2 the configuration is invalid."
    )]
    Check(CheckArgs),
    /// Write deterministic, realistic synthetic DeviceNetworkEvents (for trials, tests, benchmarks).
    #[command(
        after_help = "Examples:\n  telemetry-hunt sample --out data/\n  telemetry-hunt sample --out big/ --rows 5000000 --days 30 --devices 20000\n  telemetry-hunt sample --out json/ --format jsonl --seed 7\n\nOne file per UTC day, DeviceNetworkEvents_YYYY-MM-DD.{parquet,jsonl}. The same options give the same bytes."
    )]
    Sample(SampleArgs),
    /// Build history day by day over a range of days: hunt, detect, write; resumable.
    #[command(
        after_help = "Examples:\n  telemetry-hunt backfill --from 2026-10-01 --to 2026-11-30 --input exports/\n      hunt 61 days one at a time; run it again after an interruption and it goes on where it stopped\n  telemetry-hunt backfill --from 2026-11-20 --to 2026-11-20 --input exports/ --force\n      hunt a completed day again (new input, new configuration)\n\nEach day is a run of its own (one run record per day) over the input rows of that day, so memory stays at one day's aggregates. A day is complete once its tables and findings are written: the store then holds <out>/_complete/day=YYYY-MM-DD.json, and later backfills skip that day. A day without any input row is passed over (listed at the end, not written: a later backfill hunts it). A progress bar shows on a terminal, one log line per day otherwise."
    )]
    Backfill(BackfillArgs),
    /// Draw report.html again from the results store (no input is read).
    #[command(
        after_help = "Examples:\n  telemetry-hunt report --out out/\n      writes out/report.html: the last 30 days of connections per ActionType, the findings, hosts,\n      processes and the latest run, from the tables in out/\n\nThe page is one self-contained file (no scripts, fonts or network), safe to mail or attach."
    )]
    Report(ReportArgs),
    /// Print the effective configuration as TOML: the defaults, merged with `--config`.
    #[command(
        after_help = "Examples:\n  telemetry-hunt config > telemetry-hunt.toml     # every default, ready to edit\n  telemetry-hunt config --config mine.toml       # check a file and see what it resolves to"
    )]
    Config(ConfigArgs),
    /// Print the Sentinel schema of the result tables as JSON: the DCR stream declarations and
    /// the Log Analytics custom table definitions the infra deploys.
    #[command(
        after_help = "Examples:\n  telemetry-hunt schema > infra/schema/tables.json     # what Bicep and Terraform load\n  telemetry-hunt schema | jq '.tables[].name'\n\nEach table <T> becomes the custom table <T>_CL (TimeGenerated + its columns) fed by the DCR stream\nCustom-<T>_CL (EventTime + its columns); the DCR transform turns EventTime into TimeGenerated."
    )]
    Schema,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// TOML configuration file to check (with the TELEMETRY_HUNT_* overrides applied).
    #[arg(long, env = env_vars::CONFIG)]
    pub config: Option<PathBuf>,
    /// Local input to check when no blob source is configured; repeat for several.
    #[arg(long, env = env_vars::INPUT, value_delimiter = ',')]
    pub input: Vec<PathBuf>,
    /// Local results folder to check when no blob results store is configured.
    #[arg(long, env = env_vars::OUT)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// TOML configuration file to check and merge with the defaults.
    #[arg(long, env = env_vars::CONFIG)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// TOML configuration file; every setting is optional (see README).
    #[arg(long, env = env_vars::CONFIG)]
    pub config: Option<PathBuf>,
    /// Input file or folder; repeat for several. Default: the configuration's `source.inputs`,
    /// else the bundled sample.
    #[arg(long, env = env_vars::INPUT, value_delimiter = ',')]
    pub input: Vec<PathBuf>,
    /// Results folder. Default: the configuration's `output.dir`, else `out`.
    #[arg(long, env = env_vars::OUT)]
    pub out: Option<PathBuf>,
    /// First UTC day to hunt (YYYY-MM-DD, inclusive).
    #[arg(long, value_parser = parse_day)]
    pub from: Option<Day>,
    /// Last UTC day to hunt (YYYY-MM-DD, inclusive).
    #[arg(long, value_parser = parse_day)]
    pub to: Option<Day>,
    /// How MdeTelemetryDaily matches hosts: `kql` is the reference query exactly; `normalized`
    /// also counts `HOST:443`, `host.`, `tcp://host` and other spellings.
    #[arg(long, value_enum, env = env_vars::MATCH_MODE)]
    pub match_mode: Option<MatchMode>,
}

#[derive(Debug, Args)]
pub struct BackfillArgs {
    #[command(flatten)]
    pub run: RunArgs,
    /// Hunt days that are already complete again.
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Results folder to draw the report from (and write report.html into). Default: the
    /// configuration's `output.dir`, else `out`.
    #[arg(long, env = env_vars::OUT)]
    pub out: Option<PathBuf>,
    /// TOML configuration file (for the report's settings, e.g. `detect.max_listed_devices`).
    #[arg(long, env = env_vars::CONFIG)]
    pub config: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SampleArgs {
    /// Folder to write into (created if missing).
    #[arg(long)]
    pub out: PathBuf,
    /// Number of devices.
    #[arg(long, default_value_t = SampleOptions::default().devices)]
    pub devices: u32,
    /// Number of UTC days.
    #[arg(long, default_value_t = SampleOptions::default().days)]
    pub days: u32,
    /// Total rows over all days.
    #[arg(long, default_value_t = SampleOptions::default().rows)]
    pub rows: u64,
    /// Random seed: the same seed gives the same files.
    #[arg(long, default_value_t = SampleOptions::default().seed)]
    pub seed: u64,
    /// First UTC day (YYYY-MM-DD).
    #[arg(long, value_parser = parse_day)]
    pub start: Option<Day>,
    #[arg(long, value_enum, default_value = "parquet")]
    pub format: SampleFormatArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SampleFormatArg {
    Parquet,
    Jsonl,
}

fn parse_day(text: &str) -> Result<Day, String> {
    Day::parse(text).ok_or_else(|| format!("`{text}` is not a UTC day; write it as YYYY-MM-DD, e.g. 2026-11-30"))
}

/// Why a command failed, which decides the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Run(#[from] RunError),
    #[error(transparent)]
    Sample(#[from] sample::SampleError),
    #[error("cannot draw the report: {0}")]
    Report(#[from] crate::sink::SinkError),
    #[error("{0} of the checks failed; fix what each FAIL line says and run `telemetry-hunt check` again")]
    Check(usize),
}

impl CliError {
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Usage(_) | CliError::Config(_) | CliError::Sample(sample::SampleError::Invalid(_)) => 2,
            CliError::Run(_) | CliError::Sample(_) | CliError::Report(_) | CliError::Check(_) => 1,
        }
    }
}

/// The bundled sample: `fixtures/sample` under the working folder, else under the source tree
/// the binary was built from.
fn bundled_sample() -> Option<PathBuf> {
    [PathBuf::from("fixtures/sample"), Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/sample")]
        .into_iter()
        .find(|p| p.is_dir())
}

pub fn show_progress(global: &GlobalArgs) -> bool {
    !global.quiet && !global.no_progress && std::io::stderr().is_terminal()
}

/// The configuration file (or the defaults) with the `TELEMETRY_HUNT_*` overrides applied.
pub fn load_config(path: Option<&Path>) -> Result<Config, CliError> {
    let mut config = match path {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    config.apply_env(|name| std::env::var(name).ok())?;
    Ok(config)
}

/// The nightly window: yesterday (UTC), and `reprocess_days` days before it for late events.
pub fn nightly_window(today: Day, reprocess_days: u32) -> (Day, Day) {
    let yesterday = today.prev();
    (Day(yesterday.0 - reprocess_days as i32), yesterday)
}

/// Resolves `run`'s arguments and configuration into a request. No I/O beyond reading the
/// configuration file.
pub fn resolve_run(args: &RunArgs, progress: bool) -> Result<RunRequest, CliError> {
    let mut config = load_config(args.config.as_deref())?;
    if let Some(mode) = args.match_mode {
        config.match_mode = mode;
    }
    let settings = config.validate()?;
    if (settings.source_blob.is_some() || settings.log_analytics.is_some()) && !args.input.is_empty() {
        return Err(CliError::Usage(
            "`--input` (or TELEMETRY_HUNT_INPUT) and a blob or workspace source (`[source.blob]`, `[source.log_analytics]` or their TELEMETRY_HUNT_* variables) are both set; keep one".into(),
        ));
    }
    if settings.results_blob.is_some() && args.out.is_some() {
        return Err(CliError::Usage(
            "`--out` (or TELEMETRY_HUNT_OUT) and a blob results store (`[output.blob]` or TELEMETRY_HUNT_RESULTS_*) are both set; keep one".into(),
        ));
    }
    let inputs = if settings.source_blob.is_some() || settings.log_analytics.is_some() {
        Vec::new()
    } else if !args.input.is_empty() {
        args.input.clone()
    } else if !config.source.inputs.is_empty() {
        config.source.inputs.clone()
    } else {
        vec![bundled_sample().ok_or_else(|| {
            CliError::Usage(
                "no input: pass `--input FILE_OR_FOLDER`, set `source.inputs`, or configure `[source.blob]`".into(),
            )
        })?]
    };
    if let Some(missing) = inputs.iter().find(|p| !p.exists()) {
        return Err(CliError::Usage(format!(
            "input `{}` does not exist; pass an existing file or folder to `--input`",
            missing.display()
        )));
    }
    let window = match (args.from, args.to) {
        (Some(from), Some(to)) if from > to => {
            return Err(CliError::Usage(format!("`--from {from}` is after `--to {to}`; swap them")))
        }
        // A typo such as 0001 or 9999 would stage empty days for years: a backfill of more
        // than two years is split by hand.
        (Some(from), Some(to)) if to.0 - from.0 >= 2 * 366 => {
            return Err(CliError::Usage(format!(
                "`--from {from} --to {to}` spans {} days; at most 731 (two years) at once, so split the range",
                to.0 - from.0 + 1
            )))
        }
        (Some(from), Some(to)) => Some((from, to)),
        (Some(_), None) | (None, Some(_)) => {
            return Err(CliError::Usage(
                "give both `--from` and `--to` (inclusive UTC days), or neither to hunt every day in the input".into(),
            ))
        }
        (None, None) if settings.source_blob.is_some() || settings.log_analytics.is_some() => {
            Some(nightly_window(Day::of_micros(job::now_micros()), settings.reprocess_days))
        }
        (None, None) => None,
    };
    Ok(RunRequest {
        inputs,
        out: args.out.clone().unwrap_or_else(|| config.output.dir.clone()),
        window,
        settings,
        progress,
        credential: None,
    })
}

/// Runs a parsed command line; what it prints for people goes to stdout.
pub fn execute(cli: &Cli) -> Result<(), CliError> {
    match &cli.command {
        Command::Run(args) => {
            let request = resolve_run(args, show_progress(&cli.global))?;
            let mode = request.settings.match_mode;
            match job::run(&request) {
                Ok(outcome) => {
                    tracing::info!(run_id = %outcome.record.run_id, days = outcome.days.len(), rows_scanned = outcome.record.stats.rows_scanned, rows_matched = outcome.record.rows_matched(), "Run succeeded.");
                    print!("{}", crate::sink::summary::render(&outcome, mode, &outcome.results));
                    Ok(())
                }
                Err((error, record)) => {
                    tracing::error!(run_id = %record.run_id, stage = record.failed_stage.as_deref().unwrap_or(""), "Run failed.");
                    Err(error.into())
                }
            }
        }
        Command::Backfill(args) => {
            let (Some(from), Some(to)) = (args.run.from, args.run.to) else {
                return Err(CliError::Usage(
                    "backfill needs `--from DAY --to DAY` (inclusive UTC days, YYYY-MM-DD)".into(),
                ));
            };
            let request = resolve_run(&args.run, false)?;
            match job::backfill(&request, from, to, args.force, show_progress(&cli.global)) {
                Ok(outcome) => {
                    let findings: usize = outcome.done.iter().map(|(_, n)| n).sum();
                    let without_input = match outcome.without_input.as_slice() {
                        [] => String::new(),
                        days => format!(
                            ", {} without any input row and not written ({})",
                            days.len(),
                            days.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(", ")
                        ),
                    };
                    println!(
                        "Backfilled {} day(s) from {from} to {to}, {} already complete and skipped{without_input}; \
                         {findings} finding(s). Report: {}",
                        outcome.done.len(),
                        outcome.skipped.len(),
                        outcome.report
                    );
                    Ok(())
                }
                Err((error, record)) => {
                    tracing::error!(run_id = %record.run_id, stage = record.failed_stage.as_deref().unwrap_or(""), "Backfill stopped; run it again to resume.");
                    Err(error.into())
                }
            }
        }
        Command::Report(args) => {
            let config = load_config(args.config.as_deref())?;
            let settings = config.validate()?;
            let out = args.out.clone().unwrap_or_else(|| config.output.dir.clone());
            let drawn = job::with_results(&settings, &out, |results| {
                if results.days(crate::sink::tables::DAILY)?.is_empty() {
                    return Ok(Err(results.store.location()));
                }
                crate::sink::report::write(results, &settings)?;
                Ok(Ok(results.store.locate(crate::sink::report::REPORT)))
            })?;
            match drawn {
                Ok(location) => {
                    println!("Wrote {location}");
                    Ok(())
                }
                Err(location) => Err(CliError::Usage(match &settings.results_blob {
                    Some(_) => format!(
                        "{location} holds no result tables; run `telemetry-hunt run` with the same configuration first"
                    ),
                    None => format!(
                        "`{}` holds no result tables; run `telemetry-hunt run --out {}` first",
                        out.display(),
                        out.display()
                    ),
                })),
            }
        }
        Command::Check(args) => {
            let config = load_config(args.config.as_deref())?;
            let settings = config.validate()?;
            let inputs = if !args.input.is_empty() {
                args.input.clone()
            } else if !config.source.inputs.is_empty() {
                config.source.inputs.clone()
            } else {
                bundled_sample().into_iter().collect()
            };
            let out = args.out.clone().unwrap_or_else(|| config.output.dir.clone());
            let probes = crate::check::run_checks(&settings, &inputs, &out);
            print!("{}", crate::redact::redact(&crate::check::render(&probes)));
            match probes.iter().filter(|p| p.outcome.is_err()).count() {
                0 => Ok(()),
                failed => Err(CliError::Check(failed)),
            }
        }
        Command::Config(args) => {
            let config = load_config(args.config.as_deref())?;
            config.validate()?;
            let text = toml::to_string_pretty(&config)
                .map_err(|e| CliError::Usage(format!("the configuration cannot be printed as TOML: {e}")))?;
            print!("{text}");
            Ok(())
        }
        Command::Schema => {
            print!("{}", crate::sink::schema::render().map_err(CliError::Usage)?);
            Ok(())
        }
        Command::Sample(args) => {
            let mut options = SampleOptions {
                devices: args.devices,
                days: args.days,
                rows: args.rows,
                seed: args.seed,
                format: match args.format {
                    SampleFormatArg::Parquet => SampleFormat::Parquet,
                    SampleFormatArg::Jsonl => SampleFormat::Jsonl,
                },
                ..SampleOptions::default()
            };
            if let Some(start) = args.start {
                options.start = start;
            }
            let summary = sample::generate(&options, &args.out)?;
            println!("Wrote {} rows in {} file(s) to {}", summary.rows, summary.files.len(), args.out.display());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nightly_window_is_yesterday_and_the_days_it_reprocesses() {
        let today = Day::parse("2026-12-03").unwrap();
        let day = |text| Day::parse(text).unwrap();
        assert_eq!(nightly_window(today, 0), (day("2026-12-02"), day("2026-12-02")));
        assert_eq!(nightly_window(today, 1), (day("2026-12-01"), day("2026-12-02")));
        assert_eq!(nightly_window(Day::parse("2027-01-01").unwrap(), 2), (day("2026-12-29"), day("2026-12-31")));
    }
}
