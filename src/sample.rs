//! A deterministic generator of realistic Defender `DeviceNetworkEvents` day files.
//!
//! The hunt cannot be developed, tested or benchmarked on customer data, so this module writes
//! look-alike exports: one file per UTC day (`DeviceNetworkEvents_YYYY-MM-DD.parquet` or
//! `.jsonl`), with the real column names and types, a device fleet that sleeps at weekends
//! (every device enrolled for the whole period), late arrivals from the previous day, and a `RemoteUrl` column that
//! holds every shape the telemetry rules must cope with: bare hosts, URLs, `host:port`, upper
//! case, trailing dots, padding, userinfo, and look-alikes that must never count as telemetry.
//!
//! The telemetry is what a quiet fleet sends: every device has a fixed profile of channels (the
//! sensor to its regional gateway, DiagTrack to the cyber-data hosts, CryptSvc to the CRL and
//! trust-list hosts, Defender Antivirus, and on some devices the benign management agents the
//! exclusion rules name: the MECM client, Intune, Windows Update, Task Scheduler's Defender
//! tasks, the sensor's own self-health collector), and uses each of them on every day it is
//! online; one device in ten sits behind a proxy that always logs the telemetry hosts in one
//! spelling the reference query misses (`host:443`, upper case, a trailing dot, …). On that
//! background, where the detectors stay quiet, [`SCENARIOS`] puts what they must find on known
//! days. Telemetry is at least 4 % of the rows (more on small samples, where every device's
//! channels need a row a day); when the channels would need more than half of a day's rows, the
//! profiles are thinned to about 4 % instead, which suits benchmarks but not the detectors.
//!
//! It ports the ideas of `bench/gen_events.py` rather than its bytes. Same options give
//! byte-identical files: the generator has its own PRNG (xoshiro256**) seeded from the options,
//! and nothing depends on the clock, on threads' timing or on hash-map iteration order.
//! Days stream one at a time, so memory stays at about one day of rows however many days run.

use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;

use arrow_array::builder::{Int32Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder};
use arrow_array::TimestampMicrosecondArray;
use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;
use rustc_hash::FxHashSet;

use crate::time::{civil_from_days, Day, MICROS_PER_DAY};

/// Output file format of [`generate`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SampleFormat {
    /// Snappy Parquet, `Timestamp` as `timestamp[us, UTC]`.
    Parquet,
    /// One flat JSON object per line, as a Log Analytics export writes it.
    Jsonl,
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct SampleOptions {
    /// Devices in the fleet (not all are active every day).
    pub devices: u32,
    /// UTC days, one file each.
    pub days: u32,
    /// Total rows over all days.
    pub rows: u64,
    pub seed: u64,
    /// First UTC day.
    pub start: Day,
    pub format: SampleFormat,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            devices: 250,
            days: 35,
            rows: 150_000,
            seed: 42,
            start: Day::parse("2026-10-27").expect("literal default start day is valid"),
            format: SampleFormat::Parquet,
        }
    }
}

/// What [`generate`] wrote: the day files in day order and the total row count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SampleSummary {
    pub files: Vec<PathBuf>,
    pub rows: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write Parquet file {}: {source}", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("invalid sample options: {0}")]
    Invalid(String),
}

/// Row groups are capped so readers can parallelise over a single day file.
const ROW_GROUP_ROWS: usize = 65_536;
/// Share of a day file's rows stamped in the previous UTC day (ingestion lag).
const LATE_FRACTION: f64 = 0.005;
/// Share of rows that go to Defender telemetry hosts at least (reference list and newer MDE
/// hosts).
const TELEMETRY_SHARE: f64 = 0.040;
/// The channels of every online device get a row each day when they fit in this share of the
/// day's rows.
const DENSE_TELEMETRY_LIMIT: f64 = 0.5;
/// Share of rows whose RemoteUrl contains a telemetry host but is not one.
const LOOKALIKE_SHARE: f64 = 0.004;
/// Distinct ordinary hosts; the Zipf tail makes most of them rare, as in real proxies' logs.
const HOST_POOL: usize = 20_000;
const ORG_DOMAIN: &str = "contoso";

/// Writes one file per day into `out_dir` (created if missing) and returns their paths.
///
/// Each file is written under a temporary name in `out_dir` and renamed when complete, so a
/// reader never sees half a file.
pub fn generate(opts: &SampleOptions, out_dir: &Path) -> Result<SampleSummary, SampleError> {
    validate(opts)?;
    fs::create_dir_all(out_dir).map_err(|source| SampleError::Io { path: out_dir.to_path_buf(), source })?;
    let world = World::new(opts);
    let per_day = split_rows(opts);
    let schema = events_schema();

    // Generation and encoding overlap on two threads; the bounded channel keeps at most a few
    // row groups in flight, and a single producer keeps the output order deterministic.
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::sync_channel::<Msg>(2);
        let producer_schema = schema.clone();
        let world = &world;
        let per_day = &per_day;
        scope.spawn(move || produce(world, opts, per_day, &producer_schema, tx));
        consume(rx, opts, out_dir, &schema)
    })
}

fn validate(opts: &SampleOptions) -> Result<(), SampleError> {
    if opts.days == 0 {
        return Err(SampleError::Invalid("days must be at least 1".into()));
    }
    if opts.days > 3_660 {
        return Err(SampleError::Invalid(format!("days = {} is more than ten years", opts.days)));
    }
    if opts.devices == 0 {
        return Err(SampleError::Invalid("devices must be at least 1".into()));
    }
    if opts.devices > 10_000_000 {
        return Err(SampleError::Invalid(format!("devices = {} is more than any tenant", opts.devices)));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// PRNG

fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// xoshiro256**: fast, tiny, and fixed forever, unlike an external crate's default generator.
#[derive(Clone)]
struct Rng {
    s: [u64; 4],
}

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            mix64(x)
        };
        Rng { s: [next(), next(), next(), next()] }
    }

    /// An independent stream for one purpose (`salt`) and one item (`index`), so that e.g.
    /// day 7 is the same whatever the number of days generated.
    fn stream(seed: u64, salt: u64, index: u64) -> Rng {
        Rng::new(mix64(seed ^ mix64(salt.wrapping_mul(0xD6E8_FEB8_6659_FD93) ^ mix64(index))))
    }

    fn next_u64(&mut self) -> u64 {
        let result = self.s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is far below anything visible).
    fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }

    fn index(&mut self, n: usize) -> usize {
        self.below(n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// Uniform in `[0, 1)`.
    fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    fn chance(&mut self, p: f64) -> bool {
        self.f64() < p
    }

    fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.f64();
        let u2 = self.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn hex(&mut self, out: &mut String, bytes: usize) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        for _ in 0..bytes {
            let b = self.next_u64() as u8;
            out.push(DIGITS[(b >> 4) as usize] as char);
            out.push(DIGITS[(b & 15) as usize] as char);
        }
    }
}

/// Cumulative weights for sampling an index proportionally to its weight.
struct Weighted {
    cum: Vec<f64>,
}

impl Weighted {
    fn new(weights: impl IntoIterator<Item = f64>) -> Weighted {
        let mut total = 0.0;
        let cum: Vec<f64> = weights
            .into_iter()
            .map(|w| {
                total += w;
                total
            })
            .collect();
        assert!(total > 0.0, "weighted table needs a positive weight");
        Weighted { cum }
    }

    fn sample(&self, rng: &mut Rng) -> usize {
        let total = *self.cum.last().expect("non-empty table");
        let x = rng.f64() * total;
        self.cum.partition_point(|&c| c <= x).min(self.cum.len() - 1)
    }
}

/// A small weighted choice among constants.
fn choose<T: Copy>(rng: &mut Rng, table: &[(T, f64)]) -> T {
    let total: f64 = table.iter().map(|(_, w)| w).sum();
    let mut x = rng.f64() * total;
    for &(item, w) in table {
        if x < w {
            return item;
        }
        x -= w;
    }
    table[table.len() - 1].0
}

// ---------------------------------------------------------------------------------------------
// Reference data

/// The telemetry hosts the reference hunt lists.
pub(crate) const REFERENCE_HOSTS: [&str; 19] = [
    "winatp-gw-cus.microsoft.com",
    "winatp-gw-eus.microsoft.com",
    "winatp-gw-weu.microsoft.com",
    "winatp-gw-neu.microsoft.com",
    "winatp-gw-uks.microsoft.com",
    "winatp-gw-ukw.microsoft.com",
    "winatp-gw-usgv.microsoft.com",
    "winatp-gw-usgt.microsoft.com",
    "eu.vortex-win.data.microsoft.com",
    "us.vortex-win.data.microsoft.com",
    "uk.vortex-win.data.microsoft.com",
    "events.data.microsoft.com",
    "settings-win.data.microsoft.com",
    "eu-v20.events.data.microsoft.com",
    "uk-v20.events.data.microsoft.com",
    "us-v20.events.data.microsoft.com",
    "us4-v20.events.data.microsoft.com",
    "us5-v20.events.data.microsoft.com",
    "ctldl.windowsupdate.com",
];

/// A device's MDE home: the gateway and the hosts that go with its geography.
struct Region {
    code: &'static str,
    geo: &'static str,
    gateway: &'static str,
    vortex: &'static str,
    v20: &'static str,
    weight: f64,
}

const REGIONS: [Region; 8] = [
    Region {
        code: "cus",
        geo: "us",
        gateway: "winatp-gw-cus.microsoft.com",
        vortex: "us.vortex-win.data.microsoft.com",
        v20: "us-v20.events.data.microsoft.com",
        weight: 0.24,
    },
    Region {
        code: "eus",
        geo: "us",
        gateway: "winatp-gw-eus.microsoft.com",
        vortex: "us.vortex-win.data.microsoft.com",
        v20: "us4-v20.events.data.microsoft.com",
        weight: 0.24,
    },
    Region {
        code: "weu",
        geo: "eu",
        gateway: "winatp-gw-weu.microsoft.com",
        vortex: "eu.vortex-win.data.microsoft.com",
        v20: "eu-v20.events.data.microsoft.com",
        weight: 0.20,
    },
    Region {
        code: "neu",
        geo: "eu",
        gateway: "winatp-gw-neu.microsoft.com",
        vortex: "eu.vortex-win.data.microsoft.com",
        v20: "eu-v20.events.data.microsoft.com",
        weight: 0.10,
    },
    Region {
        code: "uks",
        geo: "uk",
        gateway: "winatp-gw-uks.microsoft.com",
        vortex: "uk.vortex-win.data.microsoft.com",
        v20: "uk-v20.events.data.microsoft.com",
        weight: 0.08,
    },
    Region {
        code: "ukw",
        geo: "uk",
        gateway: "winatp-gw-ukw.microsoft.com",
        vortex: "uk.vortex-win.data.microsoft.com",
        v20: "uk-v20.events.data.microsoft.com",
        weight: 0.06,
    },
    Region {
        code: "usgv",
        geo: "us",
        gateway: "winatp-gw-usgv.microsoft.com",
        vortex: "us.vortex-win.data.microsoft.com",
        v20: "us5-v20.events.data.microsoft.com",
        weight: 0.05,
    },
    Region {
        code: "usgt",
        geo: "us",
        gateway: "winatp-gw-usgt.microsoft.com",
        vortex: "us.vortex-win.data.microsoft.com",
        v20: "us5-v20.events.data.microsoft.com",
        weight: 0.03,
    },
];

const ACTION_TYPES: [(&str, f64); 14] = [
    ("ConnectionSuccess", 0.700),
    ("ConnectionFailed", 0.090),
    ("ConnectionAttempt", 0.050),
    ("InboundConnectionAccepted", 0.050),
    ("ListeningConnectionCreated", 0.040),
    ("ConnectionFound", 0.040),
    ("ConnectionRequest", 0.010),
    ("HttpConnectionInspected", 0.008),
    ("DnsConnectionInspected", 0.006),
    ("SslConnectionInspected", 0.004),
    ("NetworkSignatureInspected", 0.0015),
    ("IcmpConnectionInspected", 0.0003),
    ("SshConnectionInspected", 0.0002),
    ("ConnectionAcknowledged", 0.0005),
];

/// Popular destinations. None is on the telemetry lists (those are reached by the devices'
/// channels only), and none is within two edits of a listed name.
const POPULAR_HOSTS: &[&str] = &[
    "www.google.com",
    "login.microsoftonline.com",
    "outlook.office365.com",
    "www.bing.com",
    "graph.microsoft.com",
    "teams.microsoft.com",
    "officeclient.microsoft.com",
    "clients.config.office.net",
    "ecs.office.com",
    "substrate.office.com",
    "www.office.com",
    "login.live.com",
    "g.live.com",
    "onedriveclucprodbn20002.blob.core.windows.net",
    "edge.microsoft.com",
    "config.edge.skype.com",
    "nav.smartscreen.microsoft.com",
    "wdcp.microsoft.com",
    "wdcpalt.microsoft.com",
    "europe.smartscreen-prod.microsoft.com",
    "go.microsoft.com",
    "fe3cr.delivery.mp.microsoft.com",
    "tsfe.trafficshaping.dsp.mp.microsoft.com",
    "dl.delivery.mp.microsoft.com",
    "slscr.update.microsoft.com",
    "sls.update.microsoft.com",
    "www.msftconnecttest.com",
    "ocsp.digicert.com",
    "crl3.digicert.com",
    "ctldl.windowsupdate.com.edgesuite.net",
    "ocsp.pki.goog",
    "update.googleapis.com",
    "clients2.google.com",
    "accounts.google.com",
    "www.gstatic.com",
    "fonts.googleapis.com",
    "ajax.googleapis.com",
    "www.youtube.com",
    "i.ytimg.com",
    "api.github.com",
    "github.com",
    "objects.githubusercontent.com",
    "registry.npmjs.org",
    "pypi.org",
    "files.pythonhosted.org",
    "aws.amazon.com",
    "s3.amazonaws.com",
    "d1.awsstatic.com",
    "cdn.jsdelivr.net",
    "zoom.us",
    "us05web.zoom.us",
    "slack.com",
    "edgeapi.slack.com",
    "app.slack.com",
    "www.linkedin.com",
    "static.licdn.com",
    "www.facebook.com",
    "connect.facebook.net",
    "settings-win.data.microsoft.com.akadns.net",
    "watson.telemetry.microsoft.com",
    "array611.prod.do.dsp.mp.microsoft.com",
    "geo.prod.do.dsp.mp.microsoft.com",
    "kv601.prod.do.dsp.mp.microsoft.com",
    "displaycatalog.mp.microsoft.com",
    "arc.msn.com",
    "ris.api.iris.microsoft.com",
    "img-s-msn-com.akamaized.net",
    "api.msn.com",
    "assets.msn.com",
    "c.msn.com",
    "ntp.msn.com",
    "time.windows.com",
    "dns.msftncsi.com",
    "www.msftncsi.com",
    "ipv6.msftconnecttest.com",
];

const WORDS: &[&str] = &[
    "alpha",
    "bravo",
    "cdn",
    "edge",
    "api",
    "static",
    "img",
    "media",
    "auth",
    "login",
    "sso",
    "portal",
    "app",
    "web",
    "mail",
    "files",
    "data",
    "sync",
    "update",
    "dl",
    "download",
    "secure",
    "gw",
    "proxy",
    "relay",
    "vpn",
    "cloud",
    "net",
    "stats",
    "metrics",
    "track",
    "ads",
    "beacon",
    "collector",
    "ingest",
    "push",
    "notify",
    "ws",
    "socket",
    "content",
    "assets",
    "fonts",
    "video",
    "audio",
    "stream",
    "live",
    "prod",
    "stage",
    "eu",
    "us",
    "ap",
];
const TLDS: &[&str] = &["com", "net", "org", "io", "co", "de", "fr", "co.uk", "cloud", "app", "ms", "info"];
const ORGS: &[&str] = &[
    "contoso",
    "fabrikam",
    "northwind",
    "adventure-works",
    "tailspin",
    "wingtip",
    "litware",
    "proseware",
    "fourthcoffee",
    "wideworld",
    "lucerne",
    "margie",
    "treyresearch",
    "woodgrove",
    "blueyonder",
    "humongous",
    "alpine",
    "cohovineyard",
    "datum",
    "graphicdesign",
];
const FIRST_NAMES: &[&str] =
    &["john", "maria", "li", "ahmed", "olga", "pierre", "sven", "yuki", "ana", "raj", "tom", "eva", "kofi", "nina"];
const LAST_NAMES: &[&str] =
    &["smith", "garcia", "wang", "khan", "ivanova", "martin", "berg", "tanaka", "silva", "patel", "lee", "novak"];

/// Internal services workstations talk to: (host, last octet of its 10.0.0.0/24 address, ports).
const INTERNAL_HOSTS: &[(&str, u8, &[i32])] = &[
    ("dc01.contoso.local", 10, &[389, 88, 445, 135]),
    ("dc02.contoso.local", 11, &[389, 88, 445]),
    ("fs01.contoso.local", 20, &[445]),
    ("sccm01.contoso.local", 30, &[443, 80, 10123]),
    ("wsus01.contoso.local", 31, &[8530, 8531]),
    ("proxy.contoso.local", 40, &[8080]),
    ("print01.contoso.local", 50, &[445, 9100]),
    ("sql01.contoso.local", 60, &[1433]),
    ("intranet.contoso.local", 70, &[443]),
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Account {
    System,
    NetworkService,
    User,
}

/// An initiating process as Defender reports it: file name in the image's case, folder path
/// lower case and including the file name.
struct ProcSpec {
    file: &'static str,
    /// `{user}` stands for the device's user profile name.
    path: &'static str,
    parent: &'static str,
    integrity: &'static str,
    company: Option<&'static str>,
    account: Account,
    /// Command-line templates; `{n}`, `{k}` and `{guid}` get random values once per world.
    cmds: &'static [&'static str],
    /// Weight among ordinary outbound connections.
    w_out: f64,
}

const MS: Option<&str> = Some("Microsoft Corporation");

mod p {
    pub const SVCHOST: usize = 0;
    pub const MSEDGE: usize = 1;
    pub const CHROME: usize = 2;
    pub const MSSENSE: usize = 3;
    pub const CNCPROXY: usize = 4;
    pub const SENSEIR: usize = 5;
    pub const SENSENDR: usize = 6;
    pub const MSMPENG: usize = 7;
    pub const SENSECM: usize = 8;
    pub const COMPATTEL: usize = 10;
    pub const CCMEXEC: usize = 11;
    pub const TASKHOSTW: usize = 12;
    pub const INTUNE: usize = 13;
    pub const SYSTEM: usize = 18;
    pub const LSASS: usize = 19;
    pub const FIREFOX: usize = 21;
    pub const JAVA: usize = 23;
    pub const SQLSERVR: usize = 24;
    pub const W3WP: usize = 25;
    pub const ODD_RUNDLL: usize = 32;
    pub const ODD_MSSENSE: usize = 33;
    pub const WUAUCLT: usize = 34;
    pub const SENSE_IMDS: usize = 35;
    pub const SENSEIR_BLOB: usize = SENSEIR;
}

const PROCS: [ProcSpec; 36] = [
    ProcSpec { file: "svchost.exe", path: r"c:\windows\system32\svchost.exe", parent: "services.exe", integrity: "System", company: MS, account: Account::System,
        cmds: &["svchost.exe -k netsvcs -p -s BITS", "svchost.exe -k NetworkService -p -s Dnscache", "svchost.exe -k LocalServiceNetworkRestricted -p -s Dhcp", "svchost.exe -k wusvcs -p -s WaaSMedicSvc", "svchost.exe -k netsvcs -p -s Schedule"], w_out: 0.20 },
    ProcSpec { file: "msedge.exe", path: r"c:\program files (x86)\microsoft\edge\application\msedge.exe", parent: "explorer.exe", integrity: "Medium", company: MS, account: Account::User,
        cmds: &["\"msedge.exe\" --type=utility --utility-sub-type=network.mojom.NetworkService --lang=en-US --service-sandbox-type=none --mojo-platform-channel-handle={n} --field-trial-handle=1960,i,{k},{k},262144 /prefetch:3"], w_out: 0.18 },
    ProcSpec { file: "chrome.exe", path: r"c:\program files\google\chrome\application\chrome.exe", parent: "explorer.exe", integrity: "Medium", company: Some("Google LLC"), account: Account::User,
        cmds: &["\"chrome.exe\" --type=utility --utility-sub-type=network.mojom.NetworkService --lang=en-US --service-sandbox-type=none --mojo-platform-channel-handle={n} --field-trial-handle=2012,i,{k},{k},262144 /prefetch:8"], w_out: 0.10 },
    ProcSpec { file: "MsSense.exe", path: r"c:\program files\windows defender advanced threat protection\mssense.exe", parent: "services.exe", integrity: "System", company: MS, account: Account::System,
        cmds: &["\"MsSense.exe\""], w_out: 0.004 },
    ProcSpec { file: "SenseCncProxy.exe", path: r"c:\program files\windows defender advanced threat protection\sensecncproxy.exe", parent: "MsSense.exe", integrity: "System", company: MS, account: Account::System,
        cmds: &["\"SenseCncProxy.exe\" {n}", "\"SenseCncProxy.exe\" -NoDrop"], w_out: 0.002 },
    ProcSpec { file: "SenseIR.exe", path: r"c:\program files\windows defender advanced threat protection\senseir.exe", parent: "MsSense.exe", integrity: "System", company: MS, account: Account::System,
        cmds: &["\"SenseIR.exe\" \"OnlineSenseIR\" \"{guid}\""], w_out: 0.001 },
    ProcSpec { file: "SenseNdr.exe", path: r"c:\program files\windows defender advanced threat protection\sensendr.exe", parent: "MsSense.exe", integrity: "System", company: MS, account: Account::System,
        cmds: &["\"SenseNdr.exe\""], w_out: 0.001 },
    ProcSpec { file: "MsMpEng.exe", path: r"c:\programdata\microsoft\windows defender\platform\4.18.25070.5-0\msmpeng.exe", parent: "services.exe", integrity: "System", company: MS, account: Account::System,
        cmds: &["\"MsMpEng.exe\""], w_out: 0.02 },
    ProcSpec { file: "SenseCM.exe", path: r"c:\program files\windows defender advanced threat protection\sensecm.exe", parent: "MsSense.exe", integrity: "System", company: MS, account: Account::System,
        cmds: &["\"SenseCM.exe\" -SelfHealth"], w_out: 0.0 },
    ProcSpec { file: "SenseTVM.exe", path: r"c:\program files\windows defender advanced threat protection\sensetvm.exe", parent: "MsSense.exe", integrity: "System", company: MS, account: Account::System,
        cmds: &["\"SenseTVM.exe\" {guid}"], w_out: 0.0 },
    ProcSpec { file: "CompatTelRunner.exe", path: r"c:\windows\system32\compattelrunner.exe", parent: "svchost.exe", integrity: "System", company: MS, account: Account::System,
        cmds: &["CompatTelRunner.exe -m:appraiser.dll -f:DoScheduledTelemetryRun -cv:{k}.2", "CompatTelRunner.exe -m:invagent.dll -f:RunUpdate -cv:{k}.1"], w_out: 0.004 },
    ProcSpec { file: "CcmExec.exe", path: r"c:\windows\ccm\ccmexec.exe", parent: "services.exe", integrity: "System", company: MS, account: Account::System,
        cmds: &["C:\\Windows\\CCM\\CcmExec.exe"], w_out: 0.01 },
    ProcSpec { file: "taskhostw.exe", path: r"c:\windows\system32\taskhostw.exe", parent: "svchost.exe", integrity: "Medium", company: MS, account: Account::User,
        cmds: &["taskhostw.exe {guid}", "taskhostw.exe Install $(Arg0)"], w_out: 0.005 },
    ProcSpec { file: "Microsoft.Management.Services.IntuneWindowsAgent.exe", path: r"c:\program files (x86)\microsoft intune management extension\microsoft.management.services.intunewindowsagent.exe", parent: "services.exe", integrity: "System", company: MS, account: Account::System,
        cmds: &["\"C:\\Program Files (x86)\\Microsoft Intune Management Extension\\Microsoft.Management.Services.IntuneWindowsAgent.exe\""], w_out: 0.008 },
    ProcSpec { file: "OneDrive.exe", path: r"c:\program files\microsoft onedrive\onedrive.exe", parent: "explorer.exe", integrity: "Medium", company: MS, account: Account::User,
        cmds: &["\"OneDrive.exe\" /background"], w_out: 0.06 },
    ProcSpec { file: "ms-teams.exe", path: r"c:\program files\windowsapps\msteams_25122.1415.3698.6812_x64__8wekyb3d8bbwe\ms-teams.exe", parent: "explorer.exe", integrity: "Medium", company: MS, account: Account::User,
        cmds: &["\"ms-teams.exe\""], w_out: 0.06 },
    ProcSpec { file: "OUTLOOK.EXE", path: r"c:\program files\microsoft office\root\office16\outlook.exe", parent: "explorer.exe", integrity: "Medium", company: MS, account: Account::User,
        cmds: &["\"OUTLOOK.EXE\" ", "\"OUTLOOK.EXE\" /recycle"], w_out: 0.06 },
    ProcSpec { file: "powershell.exe", path: r"c:\windows\system32\windowspowershell\v1.0\powershell.exe", parent: "cmd.exe", integrity: "High", company: MS, account: Account::User,
        cmds: &["powershell.exe -NoProfile -ExecutionPolicy Bypass -File C:\\ProgramData\\scripts\\inv{n}.ps1", "\"powershell.exe\" -nop -c \"Invoke-WebRequest -Uri https://contoso.com/f{n}.zip -OutFile $env:TEMP\\f.zip\""], w_out: 0.015 },
    ProcSpec { file: "System", path: "", parent: "", integrity: "System", company: None, account: Account::System,
        cmds: &[""], w_out: 0.03 },
    ProcSpec { file: "lsass.exe", path: r"c:\windows\system32\lsass.exe", parent: "wininit.exe", integrity: "System", company: MS, account: Account::System,
        cmds: &["C:\\Windows\\system32\\lsass.exe"], w_out: 0.02 },
    ProcSpec { file: "SearchApp.exe", path: r"c:\windows\systemapps\microsoft.windows.search_cw5n1h2txyewy\searchapp.exe", parent: "svchost.exe", integrity: "Low", company: MS, account: Account::User,
        cmds: &["\"SearchApp.exe\" -ServerName:CortanaUI.AppX8z9r6jm96hw4bsbneegw0kyxx296wr9t.mca"], w_out: 0.03 },
    ProcSpec { file: "firefox.exe", path: r"c:\program files\mozilla firefox\firefox.exe", parent: "explorer.exe", integrity: "Medium", company: Some("Mozilla Corporation"), account: Account::User,
        cmds: &["\"firefox.exe\" -contentproc -isForBrowser -prefsHandle {n} -prefMapHandle {n} -parentBuildID 20251006 tab"], w_out: 0.03 },
    ProcSpec { file: "WmiPrvSE.exe", path: r"c:\windows\system32\wbem\wmiprvse.exe", parent: "svchost.exe", integrity: "System", company: MS, account: Account::NetworkService,
        cmds: &["C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding"], w_out: 0.01 },
    ProcSpec { file: "java.exe", path: r"c:\program files\java\jre1.8.0_421\bin\java.exe", parent: "cmd.exe", integrity: "Medium", company: Some("Oracle Corporation"), account: Account::User,
        cmds: &["java.exe -jar C:\\apps\\agent{n}.jar"], w_out: 0.02 },
    ProcSpec { file: "sqlservr.exe", path: r"c:\program files\microsoft sql server\mssql15.mssqlserver\mssql\binn\sqlservr.exe", parent: "services.exe", integrity: "System", company: MS, account: Account::NetworkService,
        cmds: &["\"C:\\Program Files\\Microsoft SQL Server\\MSSQL15.MSSQLSERVER\\MSSQL\\Binn\\sqlservr.exe\" -sMSSQLSERVER"], w_out: 0.01 },
    ProcSpec { file: "w3wp.exe", path: r"c:\windows\system32\inetsrv\w3wp.exe", parent: "svchost.exe", integrity: "Medium", company: MS, account: Account::NetworkService,
        cmds: &["c:\\windows\\system32\\inetsrv\\w3wp.exe -ap \"DefaultAppPool\" -v \"v4.0\" -l \"webengine4.dll\" -a \\\\.\\pipe\\iisipm{guid} -h \"C:\\inetpub\\temp\\apppools\\DefaultAppPool\\DefaultAppPool.config\" -w \"\" -m 0"], w_out: 0.01 },
    ProcSpec { file: "Code.exe", path: r"c:\users\{user}\appdata\local\programs\microsoft vs code\code.exe", parent: "explorer.exe", integrity: "Medium", company: MS, account: Account::User,
        cmds: &["\"Code.exe\" --type=utility --utility-sub-type=network.mojom.NetworkService --lang=en-US --mojo-platform-channel-handle={n}"], w_out: 0.02 },
    ProcSpec { file: "Zoom.exe", path: r"c:\users\{user}\appdata\roaming\zoom\bin\zoom.exe", parent: "explorer.exe", integrity: "Medium", company: Some("Zoom Video Communications, Inc."), account: Account::User,
        cmds: &["\"Zoom.exe\" --action=preprocess"], w_out: 0.01 },
    ProcSpec { file: "slack.exe", path: r"c:\users\{user}\appdata\local\slack\app-4.41.97\slack.exe", parent: "explorer.exe", integrity: "Medium", company: Some("Slack Technologies, LLC"), account: Account::User,
        cmds: &["\"slack.exe\" --process-start-args --startup"], w_out: 0.01 },
    ProcSpec { file: "backgroundTaskHost.exe", path: r"c:\windows\system32\backgroundtaskhost.exe", parent: "svchost.exe", integrity: "Low", company: MS, account: Account::User,
        cmds: &["\"backgroundTaskHost.exe\" -ServerName:BackgroundTaskHost.WebAccountProvider"], w_out: 0.02 },
    ProcSpec { file: "python.exe", path: r"c:\users\{user}\appdata\local\programs\python\python312\python.exe", parent: "cmd.exe", integrity: "Medium", company: Some("Python Software Foundation"), account: Account::User,
        cmds: &["python.exe sync_{n}.py"], w_out: 0.005 },
    ProcSpec { file: "curl.exe", path: r"c:\windows\system32\curl.exe", parent: "cmd.exe", integrity: "Medium", company: Some("curl, https://curl.se/"), account: Account::User,
        cmds: &["curl.exe -sS -o NUL https://intranet.contoso.local/health/{n}"], w_out: 0.002 },
    // The injected ones (see `scenario`): only scenario devices, only on scenario days.
    ProcSpec { file: "rundll32.exe", path: r"c:\programdata\intel\rundll32.exe", parent: "svchost.exe", integrity: "System", company: None, account: Account::System,
        cmds: &["rundll32.exe C:\\ProgramData\\Intel\\igfx{n}.dll,DllRegisterServer"], w_out: 0.0 },
    ProcSpec { file: "MsSense.exe", path: r"c:\users\public\libraries\mssense.exe", parent: "explorer.exe", integrity: "High", company: None, account: Account::User,
        cmds: &["\"C:\\Users\\Public\\Libraries\\MsSense.exe\" -k {n}"], w_out: 0.0 },
    // Benign agents of the exclusion rules, in device profiles only.
    ProcSpec { file: "wuauclt.exe", path: r"c:\windows\system32\wuauclt.exe", parent: "svchost.exe", integrity: "System", company: MS, account: Account::System,
        cmds: &["wuauclt.exe /RunHandlerComServer"], w_out: 0.0 },
    ProcSpec { file: "SenseImdsCollector.exe", path: r"c:\program files\windows defender advanced threat protection\senseimdscollector.exe", parent: "MsSense.exe", integrity: "System", company: MS, account: Account::System,
        cmds: &["\"SenseImdsCollector.exe\""], w_out: 0.0 },
];

const SVCHOST_DIAGTRACK: &str = "svchost.exe -k utcsvc -p";
const SVCHOST_CRYPTSVC: &str = "svchost.exe -k NetworkService -p -s CryptSvc";
const SVCHOST_WUAUSERV: &str = "svchost.exe -k netsvcs -p -s wuauserv";
const TASKHOSTW_DEFENDER: &str =
    r"taskhostw.exe \Microsoft\Windows\Windows Defender\Windows Defender Cache Maintenance";

/// What the generated sample injects on known days (index from the first day; days beyond the
/// sample are simply not generated), for the detectors to find. Everything else is background
/// on which they must stay quiet. `tests/it/detect.rs` asserts the findings of the bundled
/// sample one by one; [`scenarios`] names the devices.
pub mod scenario {
    /// A copy of the sensor's binary in `c:\users\public\libraries\` (no company, started from
    /// explorer) talks to this gateway from `C2_DEVICES` servers, `C2_ROWS` connections each per
    /// day, spelling the host so the reference query misses it: an unexpected process, a new
    /// combination and an evasive spelling on the first day, the unexpected process again on the
    /// second.
    pub const C2_DAYS: [u32; 2] = [24, 25];
    pub const C2_HOST: &str = "winatp-gw-neu.microsoft.com";
    pub const C2_URL: &str = "WINATP-GW-NEU.MICROSOFT.COM:443";
    pub const C2_DEVICES: usize = 3;
    pub const C2_ROWS: usize = 6;
    /// `c:\programdata\intel\rundll32.exe` on `LOOKALIKE_DEVICES` servers connects to a host two
    /// edits from the western-Europe gateway.
    pub const LOOKALIKE_DAY: u32 = 26;
    pub const LOOKALIKE_HOST: &str = "winatp-gw-weu.rnicrosoft.com";
    pub const LOOKALIKE_DEVICES: usize = 2;
    pub const LOOKALIKE_ROWS: usize = 5;
    /// The sensor's communication module on `PORT_DEVICES` devices of the central-US region
    /// reaches its gateway on port 8080 (a new proxy, or a tunnel), `PORT_ROWS` times each.
    pub const PORT_DAY: u32 = 28;
    pub const PORT_HOST: &str = "winatp-gw-cus.microsoft.com";
    pub const PORT: i32 = 8080;
    pub const PORT_DEVICES: usize = 6;
    pub const PORT_ROWS: usize = 10;
    /// `GROUP_DEVICES` devices first fail every connection that would have succeeded (a
    /// blocking tool's first, too-broad rules: failing devices, a spike of ConnectionFailed and a
    /// drop of ConnectionSuccess devices), then from `SILENT_FROM` on their sensor processes
    /// send nothing while svchost and the agents still do (the rules narrowed to the sensor).
    pub const FAILING_DAY: u32 = 29;
    pub const SILENT_FROM: u32 = 30;
    pub const GROUP_DEVICES: usize = 40;
    /// Each blocked connection of the failing day is retried this many times, failing again.
    pub const RETRIES: usize = 2;
}

/// The devices of each scenario of a generated sample: `(name, DeviceIds)`, the ids sorted.
pub fn scenarios(opts: &SampleOptions) -> Vec<(&'static str, Vec<String>)> {
    let world = World::new(opts);
    let ids = |devices: &[usize]| {
        let mut ids: Vec<String> = devices.iter().map(|&d| world.devices[d].id.clone()).collect();
        ids.sort();
        ids
    };
    let s = &world.scenario;
    vec![("c2", ids(&s.c2)), ("lookalike", ids(&s.lookalike)), ("port", ids(&s.port)), ("group", ids(&s.group))]
}

// ---------------------------------------------------------------------------------------------
// The world: everything fixed across days

struct Device {
    id: String,
    name: String,
    server: bool,
    region: usize,
    /// Relative share of the day's rows while online.
    weight: f64,
    user: String,
    ip4: String,
    ip6: String,
    group: &'static str,
    /// What it sends to the telemetry hosts on every day it is online.
    profile: Vec<Channel>,
    /// The one spelling a proxy logs its telemetry hosts in, if it sits behind one.
    proxy_spelling: Option<Spelling>,
}

/// A process that talks to one telemetry host of the device's region, every day.
#[derive(Clone, Copy)]
struct Channel {
    proc: usize,
    target: TelTarget,
    /// A command line that must go with the channel (svchost's service, the Defender task).
    cmd: Option<&'static str>,
}

impl Channel {
    const fn new(proc: usize, target: TelTarget, cmd: Option<&'static str>) -> Channel {
        Channel { proc, target, cmd }
    }
}

/// A device's channels: the sensor, Windows telemetry and Defender Antivirus everywhere; the
/// streamlined and optional hosts on some; the benign agents of the exclusion rules on some.
fn profile(rng: &mut Rng, server: bool) -> Vec<Channel> {
    use TelTarget as T;
    let mut channels = vec![
        Channel::new(p::MSSENSE, T::Gateway, None),
        Channel::new(p::CNCPROXY, T::Gateway, None),
        Channel::new(p::SVCHOST, T::V20, Some(SVCHOST_DIAGTRACK)),
        Channel::new(p::SVCHOST, T::Ctldl, Some(SVCHOST_CRYPTSVC)),
        Channel::new(p::MSMPENG, T::Mdav, None),
    ];
    let optional: [(Channel, f64); 13] = [
        (Channel::new(p::MSSENSE, T::Edr, None), 0.6),
        (Channel::new(p::SVCHOST, T::Vortex, Some(SVCHOST_DIAGTRACK)), 0.5),
        (Channel::new(p::SVCHOST, T::Crl, Some(SVCHOST_CRYPTSVC)), 0.4),
        (Channel::new(p::COMPATTEL, T::SettingsWin, None), 0.3),
        (Channel::new(p::SENSENDR, T::Gateway, None), 0.3),
        (Channel::new(p::SENSEIR_BLOB, T::IrBlob, None), 0.15),
        (Channel::new(p::SENSECM, T::Gateway, None), 0.15),
        (Channel::new(p::CCMEXEC, T::Gateway, None), 0.3),
        (Channel::new(p::INTUNE, T::Events, None), 0.2),
        (Channel::new(p::TASKHOSTW, T::SettingsWin, Some(TASKHOSTW_DEFENDER)), 0.15),
        (Channel::new(p::SVCHOST, T::Gateway, Some(SVCHOST_WUAUSERV)), 0.1),
        (Channel::new(p::WUAUCLT, T::Ctldl, None), 0.1),
        (Channel::new(p::SENSE_IMDS, T::Gateway, None), if server { 0.5 } else { 0.0 }),
    ];
    for (channel, share) in optional {
        if rng.chance(share) {
            channels.push(channel);
        }
    }
    channels
}

/// The devices the scenarios happen on.
#[derive(Default)]
struct ScenarioDevices {
    c2: Vec<usize>,
    lookalike: Vec<usize>,
    port: Vec<usize>,
    group: Vec<usize>,
}

impl ScenarioDevices {
    /// Devices logging plainly, so each scenario stands out from a known history; servers where
    /// being online matters.
    fn pick(devices: &[Device], rng: &mut Rng) -> ScenarioDevices {
        let mut order: Vec<usize> = (0..devices.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.index(i + 1));
        }
        let mut used = vec![false; devices.len()];
        let mut take = |n: usize, ok: &dyn Fn(&Device) -> bool| -> Vec<usize> {
            let mut chosen = Vec::new();
            for &d in &order {
                if chosen.len() == n {
                    break;
                }
                let dev = &devices[d];
                if !used[d] && dev.proxy_spelling.is_none() && ok(dev) {
                    used[d] = true;
                    chosen.push(d);
                }
            }
            chosen
        };
        ScenarioDevices {
            c2: take(scenario::C2_DEVICES, &|d| d.server),
            lookalike: take(scenario::LOOKALIKE_DEVICES, &|d| d.server),
            port: take(scenario::PORT_DEVICES, &|d| REGIONS[d.region].gateway == scenario::PORT_HOST),
            group: take(scenario::GROUP_DEVICES, &|_| true),
        }
    }

    /// Scenario devices are online on their scenario's days, whatever their habits.
    fn forced_online(&self, device: usize, index: u32) -> bool {
        use scenario as s;
        (s::C2_DAYS.contains(&index) && self.c2.contains(&device))
            || (index == s::LOOKALIKE_DAY && self.lookalike.contains(&device))
            || (index == s::PORT_DAY && self.port.contains(&device))
            || ((index == s::FAILING_DAY || index == s::SILENT_FROM) && self.group.contains(&device))
    }
}

struct World {
    seed: u64,
    devices: Vec<Device>,
    scenario: ScenarioDevices,
    hosts: Vec<String>,
    host_ips: Vec<String>,
    host_pick: Weighted,
    /// Per region: EDR, MDAV and automated-IR blob hosts (the newer MDE endpoints).
    edr: Vec<String>,
    mdav: Vec<String>,
    ir_blob: Vec<String>,
    proc_sha1: Vec<String>,
    proc_cmds: Vec<Vec<String>>,
    /// Folder paths under a user profile, split around `{user}` once rather than per row.
    proc_user_path: Vec<Option<(&'static str, &'static str)>>,
    proc_out: Weighted,
}

impl World {
    fn new(opts: &SampleOptions) -> World {
        let mut rng = Rng::stream(opts.seed, 1, 0);
        let region_pick = Weighted::new(REGIONS.iter().map(|r| r.weight));
        let group_pick: [(&str, f64); 3] = [("Workstations", 0.80), ("Developers", 0.08), ("UnassignedGroup", 0.12)];
        let mut devices = Vec::with_capacity(opts.devices as usize);
        let (mut ws, mut srv) = (0u32, 0u32);
        for _ in 0..opts.devices {
            let server = rng.chance(0.12);
            let mut id = String::with_capacity(40);
            rng.hex(&mut id, 20);
            let name = if server {
                srv += 1;
                format!("srv-{srv:04}.{ORG_DOMAIN}.local")
            } else {
                ws += 1;
                format!("ws-{ws:04}.{ORG_DOMAIN}.local")
            };
            let mut weight = (0.9 * rng.normal()).exp();
            if server {
                weight *= 4.0;
            }
            let user = if server {
                format!("adm-{}", rng.pick(LAST_NAMES))
            } else {
                let k = rng.index(5_000);
                let (f, l) =
                    (FIRST_NAMES[k % FIRST_NAMES.len()], LAST_NAMES[(k / FIRST_NAMES.len()) % LAST_NAMES.len()]);
                let clash = k / (FIRST_NAMES.len() * LAST_NAMES.len());
                if clash == 0 {
                    format!("{f}.{l}")
                } else {
                    format!("{f}.{l}{clash}")
                }
            };
            let ip4 = format!("10.{}.{}.{}", 1 + rng.below(254), 1 + rng.below(254), 1 + rng.below(254));
            let ip6 = format!(
                "fe80::{:x}:{:x}:{:x}:{:x}",
                rng.below(65_536),
                rng.below(65_536),
                rng.below(65_536),
                rng.below(65_536)
            );
            let group = if server {
                if rng.chance(0.95) {
                    "Servers"
                } else {
                    "UnassignedGroup"
                }
            } else {
                choose(&mut rng, &group_pick)
            };
            let profile = profile(&mut rng, server);
            let proxy_spelling = rng.chance(0.10).then(|| *rng.pick(&PROXY_SPELLINGS));
            devices.push(Device {
                id,
                name,
                server,
                region: region_pick.sample(&mut rng),
                weight,
                user,
                ip4,
                ip6,
                group,
                profile,
                proxy_spelling,
            });
        }
        let scenario = ScenarioDevices::pick(&devices, &mut Rng::stream(opts.seed, 9, 0));

        let mut hosts: Vec<String> = POPULAR_HOSTS.iter().map(|h| h.to_string()).collect();
        let mut seen: FxHashSet<String> = hosts.iter().cloned().collect();
        while hosts.len() < HOST_POOL {
            let mut host = String::with_capacity(40);
            for i in 0..1 + rng.below(3) {
                let _ = write!(host, "{}", rng.pick(WORDS));
                if i == 0 && rng.chance(0.5) {
                    let _ = write!(host, "{}", 1 + rng.below(998));
                }
                host.push('.');
            }
            let _ = write!(host, "{}{}.{}", rng.pick(ORGS), rng.below(400), rng.pick(TLDS));
            if seen.insert(host.clone()) {
                hosts.push(host);
            }
        }
        let host_ips = (0..hosts.len())
            .map(|_| {
                format!("{}.{}.{}.{}", 13 + rng.below(200), 1 + rng.below(254), 1 + rng.below(254), 1 + rng.below(254))
            })
            .collect();
        let host_pick = Weighted::new((1..=hosts.len()).map(|r| 1.0 / (r as f64).powf(1.05)));

        let edr = REGIONS.iter().map(|r| format!("edr-{}.{}.endpoint.security.microsoft.com", r.code, r.geo)).collect();
        let mdav = REGIONS.iter().map(|r| format!("mdav.{}.endpoint.security.microsoft.com", r.geo)).collect();
        // US Government tenants have their own sample storage (not on the commercial lists);
        // their devices here use the commercial US accounts.
        let ir_blob = REGIONS
            .iter()
            .map(|r| {
                let account = match r.code {
                    "usgv" => "cus",
                    "usgt" => "eus",
                    code => code,
                };
                format!("automatedirstrprd{account}.blob.core.windows.net")
            })
            .collect();

        let proc_sha1 = PROCS
            .iter()
            .map(|_| {
                let mut s = String::with_capacity(40);
                rng.hex(&mut s, 20);
                s
            })
            .collect();
        let proc_cmds = PROCS
            .iter()
            .map(|spec| {
                let mut pool = Vec::new();
                for tmpl in spec.cmds {
                    let variants = if tmpl.contains('{') { 12 } else { 1 };
                    for _ in 0..variants {
                        pool.push(expand_cmd(tmpl, &mut rng));
                    }
                }
                pool
            })
            .collect();
        let proc_out = Weighted::new(PROCS.iter().map(|p| p.w_out));
        World {
            seed: opts.seed,
            devices,
            scenario,
            hosts,
            host_ips,
            host_pick,
            edr,
            mdav,
            ir_blob,
            proc_sha1,
            proc_cmds,
            proc_user_path: PROCS.iter().map(|p| p.path.split_once("{user}")).collect(),
            proc_out,
        }
    }
}

fn expand_cmd(tmpl: &str, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(tmpl.len() + 32);
    let mut rest = tmpl;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        match &rest[open + 1..open + close] {
            "n" => {
                let _ = write!(out, "{}", 1_000 + rng.below(99_000));
            }
            "k" => {
                let _ = write!(out, "{}", 100_000_000 + rng.below(9_900_000_000));
            }
            "guid" => {
                let mut h = String::with_capacity(32);
                rng.hex(&mut h, 16);
                let _ = write!(out, "{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]);
            }
            "host" => {
                let gateway: &&str = rng.pick(&REFERENCE_HOSTS[..8]);
                out.push_str(gateway);
            }
            other => {
                out.push('{');
                out.push_str(other);
                out.push('}');
            }
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    out
}

/// The devices online on day `index`, sorted (servers nearly always, workstations on most
/// weekdays and some weekend days), plus the scenario devices of the day.
fn online_devices(world: &World, rng: &mut Rng, index: u32, weekend: bool) -> Vec<usize> {
    let mut active: Vec<usize> = world
        .devices
        .iter()
        .enumerate()
        .filter(|(_, d)| {
            let online = match (d.server, weekend) {
                (true, _) => 0.995,
                (false, false) => 0.95,
                (false, true) => 0.30,
            };
            // Draw for every device so one device's window does not shift the others.
            let up = rng.chance(online);
            up
        })
        .map(|(i, _)| i)
        .collect();
    for d in 0..world.devices.len() {
        if world.scenario.forced_online(d, index) && !active.contains(&d) {
            active.push(d);
        }
    }
    active.sort_unstable();
    if active.is_empty() {
        active = (0..world.devices.len()).collect();
    }
    active
}

/// Rows per day: weekdays equal, weekends ~30 % lower, ±10 % noise, summing exactly to `rows`.
fn split_rows(opts: &SampleOptions) -> Vec<u64> {
    let mut rng = Rng::stream(opts.seed, 2, 0);
    let weights: Vec<f64> = (0..opts.days)
        .map(|i| {
            let day = Day(opts.start.0 + i as i32);
            let base = if is_weekend(day) { 0.7 } else { 1.0 };
            base * (1.0 + 0.1 * (2.0 * rng.f64() - 1.0))
        })
        .collect();
    let total: f64 = weights.iter().sum();
    let exact: Vec<f64> = weights.iter().map(|w| opts.rows as f64 * w / total).collect();
    let mut counts: Vec<u64> = exact.iter().map(|x| x.floor() as u64).collect();
    let assigned: u64 = counts.iter().sum();
    // Largest remainders get the leftover rows; ties go to the earlier day.
    let mut order: Vec<usize> = (0..counts.len()).collect();
    order.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let mut left = opts.rows.saturating_sub(assigned);
    for &i in order.iter().cycle() {
        if left == 0 {
            break;
        }
        counts[i] += 1;
        left -= 1;
    }
    // Float rounding can only overshoot by a handful of rows; take them back from the largest day.
    let mut sum: u64 = counts.iter().sum();
    while sum > opts.rows {
        let i = (0..counts.len()).max_by_key(|&i| (counts[i], usize::MAX - i)).expect("days >= 1");
        counts[i] -= 1;
        sum -= 1;
    }
    counts
}

fn is_weekend(day: Day) -> bool {
    // 1970-01-01 was a Thursday; Monday = 0.
    (day.0 + 3).rem_euclid(7) >= 5
}

// ---------------------------------------------------------------------------------------------
// Schema and column builders

fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn events_schema() -> SchemaRef {
    let s = |name: &str| Field::new(name, DataType::Utf8, true);
    Arc::new(Schema::new(vec![
        Field::new("Timestamp", timestamp_type(), false),
        s("DeviceId"),
        s("DeviceName"),
        s("ActionType"),
        s("RemoteIP"),
        Field::new("RemotePort", DataType::Int32, true),
        s("RemoteUrl"),
        s("LocalIP"),
        Field::new("LocalPort", DataType::Int32, true),
        s("Protocol"),
        s("LocalIPType"),
        s("RemoteIPType"),
        s("InitiatingProcessSHA1"),
        s("InitiatingProcessFileName"),
        s("InitiatingProcessFolderPath"),
        s("InitiatingProcessCommandLine"),
        s("InitiatingProcessVersionInfoCompanyName"),
        Field::new("InitiatingProcessCreationTime", timestamp_type(), true),
        Field::new("InitiatingProcessId", DataType::Int64, true),
        s("InitiatingProcessParentFileName"),
        s("InitiatingProcessAccountDomain"),
        s("InitiatingProcessAccountName"),
        s("InitiatingProcessIntegrityLevel"),
        Field::new("ReportId", DataType::Int64, true),
        s("AdditionalFields"),
        s("MachineGroup"),
    ]))
}

struct Cols {
    ts: TimestampMicrosecondBuilder,
    device_id: StringBuilder,
    device_name: StringBuilder,
    action_type: StringBuilder,
    remote_ip: StringBuilder,
    remote_port: Int32Builder,
    remote_url: StringBuilder,
    local_ip: StringBuilder,
    local_port: Int32Builder,
    protocol: StringBuilder,
    local_ip_type: StringBuilder,
    remote_ip_type: StringBuilder,
    sha1: StringBuilder,
    file_name: StringBuilder,
    folder_path: StringBuilder,
    command_line: StringBuilder,
    company: StringBuilder,
    creation: TimestampMicrosecondBuilder,
    pid: Int64Builder,
    parent: StringBuilder,
    account_domain: StringBuilder,
    account_name: StringBuilder,
    integrity: StringBuilder,
    report_id: Int64Builder,
    additional: StringBuilder,
    machine_group: StringBuilder,
}

impl Cols {
    fn new(rows: usize) -> Cols {
        let s = |bytes_per_row: usize| StringBuilder::with_capacity(rows, rows * bytes_per_row);
        Cols {
            ts: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            device_id: s(40),
            device_name: s(24),
            action_type: s(18),
            remote_ip: s(14),
            remote_port: Int32Builder::with_capacity(rows),
            remote_url: s(32),
            local_ip: s(14),
            local_port: Int32Builder::with_capacity(rows),
            protocol: s(3),
            local_ip_type: s(7),
            remote_ip_type: s(6),
            sha1: s(40),
            file_name: s(12),
            folder_path: s(64),
            command_line: s(128),
            company: s(21),
            creation: TimestampMicrosecondBuilder::with_capacity(rows).with_timezone("UTC"),
            pid: Int64Builder::with_capacity(rows),
            parent: s(12),
            account_domain: s(12),
            account_name: s(10),
            integrity: s(6),
            report_id: Int64Builder::with_capacity(rows),
            additional: s(16),
            machine_group: s(12),
        }
    }

    fn finish(mut self, schema: &SchemaRef) -> RecordBatch {
        let columns: Vec<ArrayRef> = vec![
            Arc::new(self.ts.finish()),
            Arc::new(self.device_id.finish()),
            Arc::new(self.device_name.finish()),
            Arc::new(self.action_type.finish()),
            Arc::new(self.remote_ip.finish()),
            Arc::new(self.remote_port.finish()),
            Arc::new(self.remote_url.finish()),
            Arc::new(self.local_ip.finish()),
            Arc::new(self.local_port.finish()),
            Arc::new(self.protocol.finish()),
            Arc::new(self.local_ip_type.finish()),
            Arc::new(self.remote_ip_type.finish()),
            Arc::new(self.sha1.finish()),
            Arc::new(self.file_name.finish()),
            Arc::new(self.folder_path.finish()),
            Arc::new(self.command_line.finish()),
            Arc::new(self.company.finish()),
            Arc::new(self.creation.finish()),
            Arc::new(self.pid.finish()),
            Arc::new(self.parent.finish()),
            Arc::new(self.account_domain.finish()),
            Arc::new(self.account_name.finish()),
            Arc::new(self.integrity.finish()),
            Arc::new(self.report_id.finish()),
            Arc::new(self.additional.finish()),
            Arc::new(self.machine_group.finish()),
        ];
        RecordBatch::try_new(schema.clone(), columns).expect("generated columns match the events schema")
    }
}

// ---------------------------------------------------------------------------------------------
// One day's rows

#[derive(Clone, Copy, PartialEq, Eq)]
enum UrlKind {
    Null,
    Empty,
    Text,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum LocalKind {
    V4,
    V6,
    Loopback,
}

/// The per-row choices that are not plain strings; strings go to `DayGen`'s scratch buffers.
struct Event {
    action: &'static str,
    proc: usize,
    /// A command line that must go with the destination (svchost's service differs).
    cmd: Option<&'static str>,
    url: UrlKind,
    remote_port: i32,
    local_port: i32,
    protocol: &'static str,
    local: LocalKind,
    remote_ip_type: &'static str,
    additional: bool,
    /// The process was started moments ago rather than at boot.
    fresh_process: bool,
}

#[derive(Clone, Copy)]
enum TelTarget {
    Gateway,
    Vortex,
    V20,
    Events,
    SettingsWin,
    Ctldl,
    Edr,
    Mdav,
    IrBlob,
    Crl,
}

#[derive(Clone, Copy)]
enum Spelling {
    Bare,
    SchemePath,
    SchemePortPath,
    TcpPort,
    BarePort,
    Upper,
    MixedCaseUrl,
    TrailingDot,
    TrailingDotUrl,
    Padded,
    UserInfo,
}

/// How telemetry hosts are written in RemoteUrl on a direct connection: mostly bare lower case,
/// as the sensor reports, and URL forms whose host the reference query's `parse_url` finds.
const PLAIN_SPELLINGS: [(Spelling, f64); 5] = [
    (Spelling::Bare, 0.85),
    (Spelling::SchemePath, 0.09),
    (Spelling::SchemePortPath, 0.03),
    (Spelling::TcpPort, 0.015),
    (Spelling::UserInfo, 0.015),
];

/// What a proxy in between logs instead, always the same one per device: spellings that only a
/// normalising comparison matches.
const PROXY_SPELLINGS: [Spelling; 6] = [
    Spelling::BarePort,
    Spelling::Upper,
    Spelling::TrailingDot,
    Spelling::Padded,
    Spelling::MixedCaseUrl,
    Spelling::TrailingDotUrl,
];

/// The sensor processes the silenced devices lose (what EDR-silencing tools block).
const SENSOR_PROCS: [usize; 5] = [p::MSSENSE, p::CNCPROXY, p::SENSEIR, p::SENSENDR, p::MSMPENG];

/// What one row of the day is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Ordinary,
    /// A connection of a device's channel (an index into its profile).
    Channel {
        device: u32,
        channel: u16,
    },
    /// A retry of a channel's blocked connection (the failing scenario).
    Retry {
        device: u32,
        channel: u16,
    },
    Injected {
        device: u32,
        kind: Injected,
    },
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Injected {
    C2,
    Lookalike,
    Port,
}

#[derive(Clone, Copy)]
enum OrdUrl {
    Empty,
    Bare,
    SchemePath,
    BarePort,
    SchemePort,
    Upper,
    IpUrl,
    Odd,
}

/// RemoteUrl shapes of ordinary outbound rows; with inbound and listening rows (always empty)
/// about 40 % of all RemoteUrl values end up null or "".
const ORD_URLS: [(OrdUrl, f64); 8] = [
    (OrdUrl::Empty, 0.34),
    (OrdUrl::Bare, 0.525),
    (OrdUrl::SchemePath, 0.08),
    (OrdUrl::BarePort, 0.015),
    (OrdUrl::SchemePort, 0.01),
    (OrdUrl::Upper, 0.01),
    (OrdUrl::IpUrl, 0.01),
    (OrdUrl::Odd, 0.01),
];

/// Services a device listens on or accepts: (local port, process, protocol).
const SERVICES: [((i32, usize, &str), f64); 10] = [
    ((445, p::SYSTEM, "Tcp"), 0.30),
    ((139, p::SYSTEM, "Tcp"), 0.05),
    ((3389, p::SVCHOST, "Tcp"), 0.15),
    ((135, p::SVCHOST, "Tcp"), 0.12),
    ((5985, p::SYSTEM, "Tcp"), 0.08),
    ((5353, p::SVCHOST, "Udp"), 0.10),
    ((88, p::LSASS, "Tcp"), 0.04),
    ((1433, p::SQLSERVR, "Tcp"), 0.05),
    ((443, p::W3WP, "Tcp"), 0.06),
    ((8080, p::JAVA, "Tcp"), 0.05),
];

struct DayGen<'w> {
    world: &'w World,
    rng: Rng,
    index: u32,
    start: i64,
    active: Vec<usize>,
    /// The devices online the day before, which the late arrivals come from.
    previously: Vec<usize>,
    pick: Weighted,
    /// What each row of the day is, in timestamp order.
    plan: Vec<Slot>,
    next: usize,
    url: String,
    remote_ip: String,
    folder: String,
    additional: String,
}

impl<'w> DayGen<'w> {
    fn new(world: &'w World, opts: &SampleOptions, index: u32) -> DayGen<'w> {
        let mut rng = Rng::stream(world.seed, 3, u64::from(index));
        let day = Day(opts.start.0 + index as i32);
        let active = online_devices(world, &mut rng, index, is_weekend(day));
        let previously = if index == 0 {
            Vec::new()
        } else {
            online_devices(
                world,
                &mut Rng::stream(world.seed, 3, u64::from(index - 1)),
                index - 1,
                is_weekend(day.prev()),
            )
        };
        let pick = Weighted::new(active.iter().map(|&i| world.devices[i].weight));
        DayGen {
            world,
            rng,
            index,
            start: day.start_micros(),
            active,
            previously,
            pick,
            plan: Vec::new(),
            next: 0,
            url: String::with_capacity(128),
            remote_ip: String::with_capacity(48),
            folder: String::with_capacity(128),
            additional: String::with_capacity(256),
        }
    }

    /// Lays out the day: every online device's channels once (or, when they would take more
    /// than [`DENSE_TELEMETRY_LIMIT`] of the rows, a sample of them of [`TELEMETRY_SHARE`]), more
    /// channel rows up to [`TELEMETRY_SHARE`], the scenario rows of the day, ordinary rows for
    /// the rest; shuffled, with the rows that make a scenario kept out of the first `late`
    /// positions (stamped the day before).
    fn lay_out(&mut self, rows: u64, late: u64) {
        let world = self.world;
        let rows = rows as usize;
        let scenarios = &world.scenario;
        let silenced = |d: usize, c: &Channel| {
            self.index >= scenario::SILENT_FROM && scenarios.group.contains(&d) && SENSOR_PROCS.contains(&c.proc)
        };
        let mut channels: Vec<Slot> = Vec::new();
        for &d in &self.active {
            for (c, channel) in world.devices[d].profile.iter().enumerate() {
                if !silenced(d, channel) {
                    channels.push(Slot::Channel { device: d as u32, channel: c as u16 });
                }
            }
        }
        let share = (rows as f64 * TELEMETRY_SHARE).round() as usize;
        let rng = &mut self.rng;
        let shuffle = |slots: &mut Vec<Slot>, rng: &mut Rng| {
            for i in (1..slots.len()).rev() {
                slots.swap(i, rng.index(i + 1));
            }
        };
        let mut plan = channels;
        if plan.len() as f64 > rows as f64 * DENSE_TELEMETRY_LIMIT {
            shuffle(&mut plan, rng);
            plan.truncate(share);
        }
        let mut attempts = 0;
        while plan.len() < share && attempts < 4 * share {
            attempts += 1;
            let d = self.active[self.pick.sample(rng)];
            let profile = &world.devices[d].profile;
            let c = rng.index(profile.len());
            if !silenced(d, &profile[c]) {
                plan.push(Slot::Channel { device: d as u32, channel: c as u16 });
            }
        }
        let mut pinned: Vec<Slot> = Vec::new();
        let mut inject = |devices: &[usize], kind: Injected, n: usize| {
            for &d in devices {
                pinned.extend(std::iter::repeat_n(Slot::Injected { device: d as u32, kind }, n));
            }
        };
        if scenario::C2_DAYS.contains(&self.index) {
            inject(&scenarios.c2, Injected::C2, scenario::C2_ROWS);
        }
        if self.index == scenario::LOOKALIKE_DAY {
            inject(&scenarios.lookalike, Injected::Lookalike, scenario::LOOKALIKE_ROWS);
        }
        if self.index == scenario::PORT_DAY {
            inject(&scenarios.port, Injected::Port, scenario::PORT_ROWS);
        }
        if self.index == scenario::FAILING_DAY {
            // Blocked connections are retried.
            for &d in &scenarios.group {
                for c in 0..world.devices[d].profile.len() {
                    let retry = Slot::Retry { device: d as u32, channel: c as u16 };
                    pinned.extend(std::iter::repeat_n(retry, scenario::RETRIES));
                }
            }
        }
        pinned.truncate(rows);
        if plan.len() + pinned.len() > rows {
            shuffle(&mut plan, rng);
            plan.truncate(rows - pinned.len());
        }
        plan.extend(pinned);
        plan.resize(rows, Slot::Ordinary);
        shuffle(&mut plan, rng);
        // The late arrivals are the day before's: telemetry only from devices online then, and
        // no scenario row (those belong to their day).
        let failing = self.index == scenario::FAILING_DAY;
        let previously = &self.previously;
        let is_pinned = |slot: &Slot| match *slot {
            Slot::Injected { .. } | Slot::Retry { .. } => true,
            Slot::Channel { device, .. } => {
                let d = device as usize;
                (failing && scenarios.group.contains(&d)) || previously.binary_search(&d).is_err()
            }
            Slot::Ordinary => false,
        };
        let late = (late as usize).min(rows);
        let mut free = late;
        for i in 0..late {
            if is_pinned(&plan[i]) {
                while free < rows && is_pinned(&plan[free]) {
                    free += 1;
                }
                if free < rows {
                    plan.swap(i, free);
                    free += 1;
                }
            }
        }
        self.plan = plan;
        self.next = 0;
    }

    /// The day's timestamps in ascending order and how many of them, first, are late arrivals
    /// stamped the previous day.
    fn timestamps(&mut self, rows: u64) -> (Vec<i64>, u64) {
        let rng = &mut self.rng;
        let late = if self.index == 0 {
            0
        } else {
            ((rows as f64 * LATE_FRACTION * (0.8 + 0.4 * rng.f64())).round() as u64).min(rows)
        };
        let mut ts = Vec::with_capacity(rows as usize);
        for i in 0..rows {
            let within = if i < late {
                // Ingestion lag: the last six hours of the previous day.
                -1 - rng.below(6 * 3_600_000_000) as i64
            } else if rng.chance(0.35) {
                rng.below(MICROS_PER_DAY as u64) as i64
            } else {
                let hours = 13.5 + 3.5 * rng.normal();
                ((hours * 3_600_000_000.0) as i64).rem_euclid(MICROS_PER_DAY)
            };
            ts.push(self.start + within);
        }
        ts.sort_unstable();
        (ts, late)
    }

    fn push_row(&mut self, ts: i64, c: &mut Cols) {
        let world = self.world;
        let slot = self.plan.get(self.next).copied().unwrap_or(Slot::Ordinary);
        self.next += 1;
        self.url.clear();
        self.remote_ip.clear();
        self.additional.clear();
        let (d, ev) = match slot {
            Slot::Channel { device, channel } => {
                let d = device as usize;
                let channel = world.devices[d].profile[channel as usize];
                (d, self.channel_event(&world.devices[d], d, channel))
            }
            Slot::Retry { device, channel } => {
                let d = device as usize;
                let channel = world.devices[d].profile[channel as usize];
                let mut ev = self.channel_event(&world.devices[d], d, channel);
                ev.action = "ConnectionFailed";
                self.additional.clear();
                ev.additional = false;
                (d, ev)
            }
            Slot::Injected { device, kind } => (device as usize, self.injected(kind)),
            Slot::Ordinary => {
                let d = self.active[self.pick.sample(&mut self.rng)];
                let dev = &world.devices[d];
                // A silenced sensor's own processes reach nothing at all.
                let silenced = self.index >= scenario::SILENT_FROM && world.scenario.group.contains(&d);
                let ev = if self.rng.chance(LOOKALIKE_SHARE) {
                    self.lookalike(dev, silenced)
                } else {
                    self.ordinary(dev, silenced)
                };
                (d, ev)
            }
        };
        let dev = &world.devices[d];
        let rng = &mut self.rng;
        let spec = &PROCS[ev.proc];

        c.ts.append_value(ts);
        c.device_id.append_value(&dev.id);
        c.device_name.append_value(&dev.name);
        c.action_type.append_value(ev.action);
        c.remote_ip.append_value(&self.remote_ip);
        c.remote_port.append_value(ev.remote_port);
        match ev.url {
            UrlKind::Null => c.remote_url.append_null(),
            UrlKind::Empty => c.remote_url.append_value(""),
            UrlKind::Text => c.remote_url.append_value(&self.url),
        }
        let (local_ip, local_type) = match ev.local {
            LocalKind::V4 => (dev.ip4.as_str(), "Private"),
            LocalKind::V6 => (dev.ip6.as_str(), "LinkLocal"),
            LocalKind::Loopback => ("127.0.0.1", "Loopback"),
        };
        c.local_ip.append_value(local_ip);
        c.local_port.append_value(ev.local_port);
        c.protocol.append_value(ev.protocol);
        c.local_ip_type.append_value(local_type);
        c.remote_ip_type.append_value(ev.remote_ip_type);
        c.sha1.append_value(&world.proc_sha1[ev.proc]);
        c.file_name.append_value(spec.file);
        match world.proc_user_path[ev.proc] {
            Some((head, tail)) => {
                self.folder.clear();
                self.folder.push_str(head);
                self.folder.push_str(&dev.user);
                self.folder.push_str(tail);
                c.folder_path.append_value(&self.folder);
            }
            None => c.folder_path.append_value(spec.path),
        }
        match ev.cmd {
            Some(cmd) => c.command_line.append_value(cmd),
            None => c.command_line.append_value(rng.pick(&world.proc_cmds[ev.proc])),
        }
        c.company.append_option(spec.company);
        // Long-running processes keep one pid and start time per device and day, like a boot.
        let h = mix64(world.seed ^ ((d as u64) << 24) ^ ((ev.proc as u64) << 12) ^ u64::from(self.index));
        let created = if ev.fresh_process {
            ts - 1_000_000 - rng.below(600_000_000) as i64
        } else {
            self.start - 6 * 3_600_000_000 - (h % (3 * MICROS_PER_DAY as u64)) as i64
        };
        c.creation.append_value(created);
        let pid = if ev.proc == p::SYSTEM {
            4
        } else if ev.fresh_process {
            (300 + rng.below(40_000) as i64) & !3
        } else {
            (300 + (h >> 40) as i64 % 40_000) & !3
        };
        c.pid.append_value(pid);
        c.parent.append_value(spec.parent);
        let (domain, account) = match spec.account {
            Account::System => ("nt authority", "system"),
            Account::NetworkService => ("nt authority", "network service"),
            Account::User => (ORG_DOMAIN, dev.user.as_str()),
        };
        c.account_domain.append_value(domain);
        c.account_name.append_value(account);
        c.integrity.append_value(spec.integrity);
        c.report_id.append_value(1 + rng.below(1 << 40) as i64);
        if ev.additional {
            c.additional.append_value(&self.additional);
        } else {
            c.additional.append_null();
        }
        c.machine_group.append_value(dev.group);
    }

    fn outbound(proc: usize, action: &'static str, port: i32) -> Event {
        Event {
            action,
            proc,
            cmd: None,
            url: UrlKind::Text,
            remote_port: port,
            local_port: 0,
            protocol: "Tcp",
            local: LocalKind::V4,
            remote_ip_type: "Public",
            additional: false,
            fresh_process: false,
        }
    }

    fn finish_outbound(&mut self, ev: &mut Event) {
        let rng = &mut self.rng;
        ev.local_port = 49_152 + rng.below(16_383) as i32;
        if rng.chance(0.08) {
            ev.local = LocalKind::V6;
        }
    }

    /// One connection of a device's channel.
    fn channel_event(&mut self, dev: &Device, device: usize, channel: Channel) -> Event {
        let world = self.world;
        let rng = &mut self.rng;
        let region = &REGIONS[dev.region];
        let host: &str = match channel.target {
            TelTarget::Gateway => region.gateway,
            TelTarget::Vortex => region.vortex,
            TelTarget::V20 => region.v20,
            TelTarget::Events => "events.data.microsoft.com",
            TelTarget::SettingsWin => "settings-win.data.microsoft.com",
            TelTarget::Ctldl => "ctldl.windowsupdate.com",
            TelTarget::Edr => &world.edr[dev.region],
            TelTarget::Mdav => &world.mdav[dev.region],
            TelTarget::IrBlob => &world.ir_blob[dev.region],
            TelTarget::Crl => "crl.microsoft.com",
        };
        let port = match channel.target {
            TelTarget::Ctldl | TelTarget::Crl => 80,
            _ => 443,
        };
        let mut action = choose(
            rng,
            &[
                ("ConnectionSuccess", 0.93),
                ("ConnectionFailed", 0.02),
                ("ConnectionAttempt", 0.03),
                ("SslConnectionInspected", 0.015),
                ("ConnectionRequest", 0.005),
            ],
        );
        if action == "ConnectionSuccess"
            && self.index == scenario::FAILING_DAY
            && world.scenario.group.contains(&device)
        {
            action = "ConnectionFailed";
        }
        let mut ev = Self::outbound(channel.proc, action, port);
        ev.cmd = channel.cmd;
        let spelling = dev.proxy_spelling.unwrap_or_else(|| choose(rng, &PLAIN_SPELLINGS));
        self.spell(host, port, spelling);
        self.front_door_ip(host);
        if action == "SslConnectionInspected" {
            let _ = write!(
                self.additional,
                r#"{{"direction":"Out","server_name":"{host}","version":"TLSv13","established":true}}"#
            );
            ev.additional = true;
        }
        self.finish_outbound(&mut ev);
        ev
    }

    /// Microsoft front doors: one stable address per host.
    fn front_door_ip(&mut self, host: &str) {
        let h = fx_hash(host.as_bytes());
        let _ = write!(self.remote_ip, "20.{}.{}.{}", 40 + h % 150, (h >> 8) % 254 + 1, (h >> 16) % 254 + 1);
    }

    /// Writes `host` into the RemoteUrl buffer in `spelling`.
    fn spell(&mut self, host: &str, port: i32, spelling: Spelling) {
        let rng = &mut self.rng;
        let scheme = if port == 80 { "http" } else { "https" };
        let url = &mut self.url;
        match spelling {
            Spelling::Bare => url.push_str(host),
            Spelling::SchemePath => {
                let _ = write!(url, "{scheme}://{host}/{}/{}", rng.pick(WORDS), rng.below(1_000_000));
            }
            Spelling::SchemePortPath => {
                let _ = write!(url, "{scheme}://{host}:{port}/{}/{}", rng.pick(WORDS), rng.below(1_000_000));
            }
            Spelling::TcpPort => {
                let _ = write!(url, "tcp://{host}:{port}");
            }
            Spelling::BarePort => {
                let _ = write!(url, "{host}:{port}");
            }
            Spelling::Upper => url.extend(host.chars().map(|ch| ch.to_ascii_uppercase())),
            Spelling::MixedCaseUrl => {
                let _ = write!(url, "{}://", scheme.to_ascii_uppercase());
                let mut cap = true;
                for ch in host.chars() {
                    url.push(if cap { ch.to_ascii_uppercase() } else { ch });
                    cap = ch == '.';
                }
                let _ = write!(url, "/{}", rng.pick(WORDS));
            }
            Spelling::TrailingDot => {
                let _ = write!(url, "{host}.");
            }
            Spelling::TrailingDotUrl => {
                let _ = write!(url, "{scheme}://{host}.:{port}/{}", rng.pick(WORDS));
            }
            Spelling::Padded => {
                let _ = write!(url, " {host} ");
            }
            Spelling::UserInfo => {
                let _ = write!(url, "{scheme}://svc:{}@{host}/", rng.below(1_000_000));
            }
        }
    }

    /// A connection of one of the [`scenario`]s.
    fn injected(&mut self, kind: Injected) -> Event {
        let (proc, host, port) = match kind {
            Injected::C2 => (p::ODD_MSSENSE, scenario::C2_HOST, 443),
            Injected::Lookalike => (p::ODD_RUNDLL, scenario::LOOKALIKE_HOST, 443),
            Injected::Port => (p::CNCPROXY, scenario::PORT_HOST, scenario::PORT),
        };
        let mut ev = Self::outbound(proc, "ConnectionSuccess", port);
        ev.fresh_process = kind != Injected::Port;
        match kind {
            Injected::C2 => self.url.push_str(scenario::C2_URL),
            _ => self.url.push_str(host),
        }
        if kind == Injected::Lookalike {
            let rng = &mut self.rng;
            let _ = write!(self.remote_ip, "45.{}.{}.{}", rng.below(255), rng.below(255), 1 + rng.below(254));
        } else {
            self.front_door_ip(host);
        }
        self.finish_outbound(&mut ev);
        ev
    }

    /// A RemoteUrl that mentions a telemetry host without being one: the host a connection goes
    /// to is someone else's (a suffix, userinfo, a path or query), so neither rule counts it,
    /// and it is too far from any listed name to be a look-alike.
    fn lookalike(&mut self, dev: &Device, silenced: bool) -> Event {
        let rng = &mut self.rng;
        let host = if rng.chance(0.6) { REGIONS[dev.region].gateway } else { *rng.pick(&REFERENCE_HOSTS) };
        let url = &mut self.url;
        match rng.index(8) {
            0 => {
                let _ = write!(url, "{host}.evil.net");
            }
            1 => {
                let _ = write!(url, "https://{host}@evil.example/");
            }
            2 => {
                let _ = write!(url, "https://{host}:443@evil.example/");
            }
            3 => {
                let _ = write!(url, "https://cdn.example.org/redirect/{host}");
            }
            4 => {
                let _ = write!(url, "https://cdn.example.org/?u=https://{host}");
            }
            5 => {
                let _ = write!(url, "{host}.cn.example.net");
            }
            6 => {
                let _ = write!(url, "https://{host}.evil.net/login");
            }
            _ => {
                let _ = write!(url, "{}.EVIL.NET", host.to_ascii_uppercase());
            }
        }
        let proc = outbound_process(self.world, rng, silenced);
        let _ = write!(
            self.remote_ip,
            "{}.{}.{}.{}",
            45 + rng.below(150),
            rng.below(255),
            rng.below(255),
            1 + rng.below(254)
        );
        let mut ev = Self::outbound(proc, "ConnectionSuccess", 443);
        self.finish_outbound(&mut ev);
        ev
    }

    fn ordinary(&mut self, dev: &Device, silenced: bool) -> Event {
        let world = self.world;
        let action = ACTION_TYPES[action_pick(&mut self.rng)].0;
        let rng = &mut self.rng;
        let empty = |rng: &mut Rng| {
            if rng.chance(0.4) {
                UrlKind::Null
            } else {
                UrlKind::Empty
            }
        };
        match action {
            "ListeningConnectionCreated" => {
                let (port, proc, protocol) = choose(rng, &SERVICES);
                let v6 = rng.chance(0.25);
                self.remote_ip.push_str(if v6 { "::" } else { "0.0.0.0" });
                Event {
                    action,
                    proc,
                    cmd: None,
                    url: empty(rng),
                    remote_port: 0,
                    local_port: port,
                    protocol,
                    local: if v6 { LocalKind::V6 } else { LocalKind::V4 },
                    remote_ip_type: "Reserved",
                    additional: false,
                    fresh_process: false,
                }
            }
            "InboundConnectionAccepted" | "NetworkSignatureInspected" | "SshConnectionInspected" => {
                let (mut port, mut proc, protocol) = choose(rng, &SERVICES);
                if action == "SshConnectionInspected" {
                    (port, proc) = (22, p::SVCHOST);
                }
                let _ = write!(self.remote_ip, "10.{}.{}.{}", rng.below(250), rng.below(250), 1 + rng.below(250));
                let additional = match action {
                    "NetworkSignatureInspected" => {
                        let _ = write!(
                            self.additional,
                            r#"{{"SignatureName":"RDP-Brute-Force","SignatureMatchedContent":"{:016x}","SamplePacketContent":"","SignatureFilterId":"{}"}}"#,
                            rng.next_u64(),
                            rng.below(100_000)
                        );
                        true
                    }
                    "SshConnectionInspected" => {
                        self.additional.push_str(r#"{"direction":"In","client":"SSH-2.0-OpenSSH_9.6","server":"SSH-2.0-OpenSSH_for_Windows_9.5","auth_success":true}"#);
                        true
                    }
                    _ => false,
                };
                Event {
                    action,
                    proc,
                    cmd: None,
                    url: empty(rng),
                    remote_port: 49_152 + rng.below(16_383) as i32,
                    local_port: port,
                    protocol,
                    local: LocalKind::V4,
                    remote_ip_type: "Private",
                    additional,
                    fresh_process: false,
                }
            }
            "DnsConnectionInspected" => {
                let host = &world.hosts[world.host_pick.sample(rng)];
                self.url.push_str(host);
                self.remote_ip.push_str("10.0.0.10");
                let _ = write!(
                    self.additional,
                    r#"{{"direction":"Out","query":"{host}","qtype":1,"qtype_name":"A","rcode":0,"answers":["{}"]}}"#,
                    world.host_ips[world.host_pick.sample(rng)]
                );
                let mut ev = Self::outbound(p::SVCHOST, action, 53);
                ev.cmd = Some("svchost.exe -k NetworkService -p -s Dnscache");
                ev.protocol = "Udp";
                ev.remote_ip_type = "Private";
                ev.additional = true;
                self.finish_outbound(&mut ev);
                ev
            }
            "IcmpConnectionInspected" => {
                let hi = world.host_pick.sample(rng);
                self.remote_ip.push_str(&world.host_ips[hi]);
                let _ = write!(
                    self.additional,
                    r#"{{"direction":"Out","icmp_type":8,"icmp_code":0,"bytes":{}}}"#,
                    32 + rng.below(64)
                );
                let mut ev = Self::outbound(p::SYSTEM, action, 0);
                ev.url = empty(rng);
                ev.additional = true;
                ev
            }
            _ => {
                let mut ev = self.ordinary_outbound(dev, action, silenced);
                self.finish_outbound(&mut ev);
                ev
            }
        }
    }

    fn ordinary_outbound(&mut self, dev: &Device, action: &'static str, silenced: bool) -> Event {
        let world = self.world;
        let rng = &mut self.rng;
        let mut proc = outbound_process(world, rng, silenced);
        if dev.server && PROCS[proc].account == Account::User && rng.chance(0.8) {
            // Nobody browses on servers much; their traffic is services.
            proc = choose(rng, &[(p::SVCHOST, 0.5), (p::SQLSERVR, 0.2), (p::W3WP, 0.2), (p::JAVA, 0.1)]);
        }
        let mut ev = Self::outbound(proc, action, 443);
        if rng.chance(0.01) {
            // Local IPC over TCP: nothing to name.
            ev.local = LocalKind::Loopback;
            ev.remote_ip_type = "Loopback";
            ev.remote_port = 1_024 + rng.below(60_000) as i32;
            ev.url = UrlKind::Empty;
            self.remote_ip.push_str("127.0.0.1");
            return ev;
        }
        if rng.chance(0.06) {
            let (host, octet, ports) = *rng.pick(INTERNAL_HOSTS);
            let port = *rng.pick(ports);
            ev.remote_port = port;
            ev.remote_ip_type = "Private";
            let _ = write!(self.remote_ip, "10.0.0.{octet}");
            match rng.index(10) {
                0..=5 => self.url.push_str(host),
                6 => {
                    let _ = write!(self.url, "{host}:{port}");
                }
                7 => {
                    let _ = write!(self.url, "https://{host}/{}", rng.pick(WORDS));
                }
                _ => ev.url = UrlKind::Empty,
            }
            return ev;
        }
        let hi = world.host_pick.sample(rng);
        let host = world.hosts[hi].as_str();
        self.remote_ip.push_str(&world.host_ips[hi]);
        ev.remote_port = match rng.index(100) {
            0..=77 => 443,
            78..=92 => 80,
            _ => 1_024 + rng.below(60_000) as i32,
        };
        if ev.remote_port == 443 && rng.chance(0.07) && [p::MSEDGE, p::CHROME, p::FIREFOX].contains(&proc) {
            // QUIC from the browsers.
            ev.protocol = "Udp";
        }
        let url = &mut self.url;
        match choose(rng, &ORD_URLS) {
            OrdUrl::Empty => ev.url = if rng.chance(0.4) { UrlKind::Null } else { UrlKind::Empty },
            OrdUrl::Bare => url.push_str(host),
            OrdUrl::SchemePath => {
                let scheme = if ev.remote_port == 80 { "http" } else { "https" };
                let sep = if rng.chance(0.33) { "?id=" } else { "/" };
                let _ = write!(
                    url,
                    "{scheme}://{host}/{}/{}{sep}{}",
                    rng.pick(WORDS),
                    rng.pick(WORDS),
                    rng.below(1_000_000_000)
                );
            }
            OrdUrl::BarePort => {
                ev.remote_port = if rng.chance(0.33) { 80 } else { 443 };
                let _ = write!(url, "{host}:{}", ev.remote_port);
            }
            OrdUrl::SchemePort => {
                ev.remote_port = 8_000 + rng.below(1_000) as i32;
                let _ = write!(url, "https://{host}:{}/{}", ev.remote_port, rng.pick(WORDS));
            }
            OrdUrl::Upper => {
                if rng.chance(0.5) {
                    url.extend(host.chars().map(|ch| ch.to_ascii_uppercase()));
                } else {
                    let mut chars = host.chars();
                    if let Some(first) = chars.next() {
                        url.push(first.to_ascii_uppercase());
                    }
                    url.push_str(&chars.as_str().replace(".com", ".Com"));
                }
            }
            OrdUrl::IpUrl => {
                self.remote_ip.clear();
                let _ = write!(self.remote_ip, "{}.{}.7.9", 13 + rng.below(200), rng.below(255));
                ev.remote_port = 80;
                let _ = write!(url, "http://{}/{}", self.remote_ip, rng.pick(WORDS));
            }
            OrdUrl::Odd => match rng.index(4) {
                0 => {
                    self.remote_ip.clear();
                    let _ = write!(self.remote_ip, "2603:1030:{:x}::{:x}", rng.below(65_536), rng.below(65_536));
                    let _ = write!(url, "https://[{}]:443/x", self.remote_ip);
                }
                1 => {
                    let _ = write!(url, "//{host}/{}", rng.pick(WORDS));
                }
                2 => {
                    let _ = write!(url, "{host}//{}", rng.pick(WORDS));
                }
                _ => {
                    let _ = write!(url, "{host}/{}", rng.pick(WORDS));
                }
            },
        }
        match action {
            "HttpConnectionInspected" if ev.url == UrlKind::Text => {
                let _ = write!(
                    self.additional,
                    r#"{{"direction":"Out","host":"{host}","method":"GET","uri":"/{}/{}","status_code":200,"user_agent":"Mozilla/5.0 (Windows NT 10.0; Win64; x64)"}}"#,
                    rng.pick(WORDS),
                    rng.below(1_000_000)
                );
                ev.additional = true;
            }
            "SslConnectionInspected" => {
                let _ = write!(
                    self.additional,
                    r#"{{"direction":"Out","server_name":"{host}","version":"TLSv12","established":true,"ja3":"{:016x}{:016x}"}}"#,
                    rng.next_u64(),
                    rng.next_u64()
                );
                ev.additional = true;
            }
            "ConnectionSuccess" if rng.chance(0.02) => {
                let _ = write!(
                    self.additional,
                    r#"{{"direction":"Out","conn_state":"SF","duration":"{:.6}","orig_bytes":{},"resp_bytes":{}}}"#,
                    rng.f64() * 30.0,
                    rng.below(1_000_000),
                    rng.below(10_000_000)
                );
                ev.additional = true;
            }
            _ => {}
        }
        ev
    }
}

/// The process of an ordinary outbound connection; never a sensor process on a silenced device.
fn outbound_process(world: &World, rng: &mut Rng, silenced: bool) -> usize {
    let proc = world.proc_out.sample(rng);
    if silenced && SENSOR_PROCS.contains(&proc) {
        p::SVCHOST
    } else {
        proc
    }
}

fn action_pick(rng: &mut Rng) -> usize {
    let total: f64 = ACTION_TYPES.iter().map(|(_, w)| w).sum();
    let mut x = rng.f64() * total;
    for (i, (_, w)) in ACTION_TYPES.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    0
}

fn fx_hash(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

// ---------------------------------------------------------------------------------------------
// Producer and writers

enum Msg {
    Start(u32),
    Batch(RecordBatch),
    /// Encoded JSON lines and how many rows they hold.
    Lines(Vec<u8>, u64),
    End,
}

/// JSON text is ~1 KB a row; it travels in chunks of this size so a whole row group of text
/// is never held at once.
const JSONL_CHUNK: usize = 8 << 20;

fn produce(world: &World, opts: &SampleOptions, per_day: &[u64], schema: &SchemaRef, tx: mpsc::SyncSender<Msg>) {
    for (i, &rows) in per_day.iter().enumerate() {
        let index = i as u32;
        if tx.send(Msg::Start(index)).is_err() {
            return;
        }
        let mut day = DayGen::new(world, opts, index);
        let (ts, late) = day.timestamps(rows);
        day.lay_out(rows, late);
        for chunk in ts.chunks(ROW_GROUP_ROWS) {
            // Fresh, right-sized builders per batch: a finished builder restarts from zero
            // capacity and would regrow (and copy) every buffer.
            let mut cols = Cols::new(chunk.len());
            for &t in chunk {
                day.push_row(t, &mut cols);
            }
            let batch = cols.finish(schema);
            // A send fails only when the writer gave up on an error it will report.
            let sent = match opts.format {
                SampleFormat::Parquet => tx.send(Msg::Batch(batch)).is_ok(),
                // Encoding JSON here rather than in the writer splits the work over both
                // threads: the writer is busy enough copying gigabytes into the page cache.
                SampleFormat::Jsonl => encode_jsonl(&batch, |text, rows| tx.send(Msg::Lines(text, rows)).is_ok()),
            };
            if !sent {
                return;
            }
        }
        if tx.send(Msg::End).is_err() {
            return;
        }
    }
}

enum Sink {
    Parquet(Box<ArrowWriter<File>>),
    Jsonl(File),
}

struct OpenFile {
    tmp: PathBuf,
    path: PathBuf,
    sink: Sink,
}

fn consume(
    rx: mpsc::Receiver<Msg>,
    opts: &SampleOptions,
    out_dir: &Path,
    schema: &SchemaRef,
) -> Result<SampleSummary, SampleError> {
    let mut open: Option<OpenFile> = None;
    let result = consume_inner(&rx, opts, out_dir, schema, &mut open);
    if result.is_err() {
        if let Some(f) = open.take() {
            drop(f.sink);
            let _ = fs::remove_file(&f.tmp);
        }
    }
    result
}

fn consume_inner(
    rx: &mpsc::Receiver<Msg>,
    opts: &SampleOptions,
    out_dir: &Path,
    schema: &SchemaRef,
    open: &mut Option<OpenFile>,
) -> Result<SampleSummary, SampleError> {
    let ext = match opts.format {
        SampleFormat::Parquet => "parquet",
        SampleFormat::Jsonl => "jsonl",
    };
    let mut summary = SampleSummary { files: Vec::with_capacity(opts.days as usize), rows: 0 };
    while let Ok(msg) = rx.recv() {
        match msg {
            Msg::Start(index) => {
                let day = Day(opts.start.0 + index as i32);
                let name = format!("DeviceNetworkEvents_{day}.{ext}");
                let path = out_dir.join(&name);
                let tmp = out_dir.join(format!(".{name}.partial"));
                let io = |source| SampleError::Io { path: tmp.clone(), source };
                let file = File::create(&tmp).map_err(io)?;
                let sink = match opts.format {
                    SampleFormat::Parquet => {
                        let props = WriterProperties::builder()
                            .set_compression(Compression::SNAPPY)
                            .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
                            // Unique per row: a dictionary attempt is wasted work before the
                            // writer falls back to plain encoding.
                            .set_column_dictionary_enabled(ColumnPath::from("ReportId"), false)
                            .set_column_dictionary_enabled(ColumnPath::from("Timestamp"), false)
                            .build();
                        let writer = ArrowWriter::try_new(file, schema.clone(), Some(props))
                            .map_err(|source| SampleError::Parquet { path: tmp.clone(), source })?;
                        Sink::Parquet(Box::new(writer))
                    }
                    SampleFormat::Jsonl => Sink::Jsonl(file),
                };
                *open = Some(OpenFile { tmp, path, sink });
            }
            Msg::Batch(batch) => {
                let f = open.as_mut().expect("a batch follows the start of its day");
                summary.rows += batch.num_rows() as u64;
                let Sink::Parquet(w) = &mut f.sink else {
                    unreachable!("batches are sent for Parquet only");
                };
                w.write(&batch).map_err(|source| SampleError::Parquet { path: f.tmp.clone(), source })?;
            }
            Msg::Lines(text, rows) => {
                let f = open.as_mut().expect("lines follow the start of their day");
                summary.rows += rows;
                let Sink::Jsonl(w) = &mut f.sink else {
                    unreachable!("lines are sent for JSONL only");
                };
                w.write_all(&text).map_err(|source| SampleError::Io { path: f.tmp.clone(), source })?;
            }
            Msg::End => {
                let f = open.take().expect("a day ends after it starts");
                match f.sink {
                    Sink::Parquet(w) => {
                        w.into_inner().map_err(|source| SampleError::Parquet { path: f.tmp.clone(), source })?;
                    }
                    Sink::Jsonl(mut w) => {
                        w.flush().map_err(|source| SampleError::Io { path: f.tmp.clone(), source })?;
                    }
                }
                fs::rename(&f.tmp, &f.path).map_err(|source| SampleError::Io { path: f.path.clone(), source })?;
                summary.files.push(f.path);
            }
        }
    }
    if summary.files.len() != opts.days as usize {
        // The producer only stops early when this side hung up, so this is a bug.
        panic!("generator stopped after {} of {} days", summary.files.len(), opts.days);
    }
    Ok(summary)
}

/// Encodes the batch as JSON lines with Log Analytics conventions: column names as keys,
/// datetimes as ISO text with seven fractional digits (100 ns ticks) and `Z`, nulls as null.
/// Hands over chunks of about [`JSONL_CHUNK`] bytes, each of whole lines, to `send`; stops and
/// returns false as soon as `send` does.
fn encode_jsonl(batch: &RecordBatch, mut send: impl FnMut(Vec<u8>, u64) -> bool) -> bool {
    enum ColRef<'a> {
        Time(&'a TimestampMicrosecondArray),
        Str(&'a StringArray),
        I32(&'a Int32Array),
        I64(&'a Int64Array),
    }
    let schema = batch.schema();
    let cols: Vec<(Vec<u8>, ColRef<'_>)> = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .enumerate()
        .map(|(i, (col, field))| {
            let mut key = Vec::new();
            key.push(if i == 0 { b'{' } else { b',' });
            push_json_str(&mut key, field.name());
            key.push(b':');
            let any = col.as_any();
            let c = match field.data_type() {
                DataType::Timestamp(..) => ColRef::Time(any.downcast_ref().expect("timestamp column")),
                DataType::Utf8 => ColRef::Str(any.downcast_ref().expect("string column")),
                DataType::Int32 => ColRef::I32(any.downcast_ref().expect("int32 column")),
                DataType::Int64 => ColRef::I64(any.downcast_ref().expect("int64 column")),
                other => unreachable!("no {other} column in the events schema"),
            };
            (key, c)
        })
        .collect();
    let mut buf: Vec<u8> = Vec::with_capacity(JSONL_CHUNK + (64 << 10));
    let mut rows_in_buf = 0u64;
    for row in 0..batch.num_rows() {
        let line = &mut buf;
        for (key, col) in &cols {
            line.extend_from_slice(key);
            let valid = match col {
                ColRef::Time(a) => a.is_valid(row),
                ColRef::Str(a) => a.is_valid(row),
                ColRef::I32(a) => a.is_valid(row),
                ColRef::I64(a) => a.is_valid(row),
            };
            if !valid {
                line.extend_from_slice(b"null");
                continue;
            }
            match col {
                ColRef::Time(a) => push_iso7(line, a.value(row)),
                ColRef::Str(a) => push_json_str(line, a.value(row)),
                ColRef::I32(a) => push_int(line, i64::from(a.value(row))),
                ColRef::I64(a) => push_int(line, a.value(row)),
            }
        }
        line.extend_from_slice(b"}\n");
        rows_in_buf += 1;
        if buf.len() >= JSONL_CHUNK {
            let full = std::mem::replace(&mut buf, Vec::with_capacity(JSONL_CHUNK + (64 << 10)));
            if !send(full, rows_in_buf) {
                return false;
            }
            rows_in_buf = 0;
        }
    }
    buf.is_empty() || send(buf, rows_in_buf)
}

/// `YYYY-MM-DDTHH:MM:SS.fffffffZ`. Kusto keeps 100 ns ticks; the seventh digit is derived
/// from the microsecond value so it varies like real exports yet truncates to the same instant
/// the Parquet file holds.
fn push_iso7(out: &mut Vec<u8>, micros: i64) {
    let day = micros.div_euclid(MICROS_PER_DAY);
    let within = micros.rem_euclid(MICROS_PER_DAY);
    let (y, m, d) = civil_from_days(day as i32);
    let secs = within / 1_000_000;
    let tick = mix64(micros as u64) % 10;
    // Hand-written digits: two of these per row made `fmt` a visible share of JSONL time.
    let mut text = *b"\"0000-00-00T00:00:00.0000000Z\"";
    let mut put = |at: usize, width: usize, mut v: u64| {
        for i in (at..at + width).rev() {
            text[i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(1, 4, y.clamp(0, 9999) as u64);
    put(6, 2, u64::from(m));
    put(9, 2, u64::from(d));
    put(12, 2, (secs / 3600) as u64);
    put(15, 2, ((secs / 60) % 60) as u64);
    put(18, 2, (secs % 60) as u64);
    put(21, 6, (within % 1_000_000) as u64);
    put(27, 1, tick);
    out.extend_from_slice(&text);
}

fn push_int(out: &mut Vec<u8>, v: i64) {
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(crate::time::decimal(v.unsigned_abs(), &mut [0u8; 20]));
}

fn push_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    // Most values need no escaping; a branch-free scan (which vectorises) finds that out fast.
    let plain = bytes.iter().fold(true, |ok, &b| ok & (b != b'"') & (b != b'\\') & (b >= 0x20));
    if plain {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escaped: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => {
                out.extend_from_slice(&bytes[start..i]);
                let _ = write!(out, "\\u{:04x}", b);
                start = i + 1;
                continue;
            }
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        out.extend_from_slice(escaped);
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    const SENSE_DIR: &str = r"c:\program files\windows defender advanced threat protection\";

    fn opts(rows: u64, days: u32, format: SampleFormat) -> SampleOptions {
        SampleOptions { devices: 120, days, rows, seed: 7, start: Day::parse("2026-10-27").expect("valid day"), format }
    }

    fn read_parquet(path: &Path) -> Vec<RecordBatch> {
        let file = File::open(path).expect("open day file");
        let reader = ParquetRecordBatchReaderBuilder::try_new(file).expect("parquet footer").build().expect("reader");
        reader.map(|b| b.expect("batch")).collect()
    }

    fn strings(batch: &RecordBatch, name: &str) -> Vec<Option<String>> {
        let col = batch.column_by_name(name).expect("column");
        let a = col.as_any().downcast_ref::<StringArray>().expect("utf8");
        (0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())).collect()
    }

    /// The host a normalising hunt compares: trimmed, lower case, without scheme, userinfo,
    /// port and trailing dot.
    fn normalized_host(url: &str) -> String {
        let s = url.trim().to_ascii_lowercase();
        let rest = match s.find("://") {
            Some(i) => &s[i + 3..],
            None => &s[..],
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let authority = authority.rsplit('@').next().unwrap_or("");
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => authority,
        };
        host.trim_end_matches('.').to_string()
    }

    #[test]
    fn same_options_give_identical_bytes_in_both_formats() {
        for format in [SampleFormat::Parquet, SampleFormat::Jsonl] {
            let o = opts(12_000, 4, format);
            let (a, b) = (tempfile::tempdir().expect("tmp"), tempfile::tempdir().expect("tmp"));
            let sa = generate(&o, a.path()).expect("generate a");
            let sb = generate(&o, b.path()).expect("generate b");
            assert_eq!(sa.rows, 12_000);
            assert_eq!(sa.files.len(), 4);
            for (fa, fb) in sa.files.iter().zip(&sb.files) {
                assert_eq!(fa.file_name(), fb.file_name());
                let (ba, bb) = (fs::read(fa).expect("read"), fs::read(fb).expect("read"));
                assert!(!ba.is_empty());
                assert!(ba == bb, "{} differs between runs", fa.display());
            }
            // No temporary files are left behind.
            let names: Vec<_> = fs::read_dir(a.path())
                .expect("list")
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .collect();
            assert_eq!(names.len(), 4, "{names:?}");
            assert!(names.iter().all(|n| n.starts_with("DeviceNetworkEvents_2026-")));
        }
        // A different seed gives different data.
        let dir = tempfile::tempdir().expect("tmp");
        let mut o = opts(3_000, 1, SampleFormat::Parquet);
        let first = fs::read(&generate(&o, dir.path()).expect("gen").files[0]).expect("read");
        o.seed = 8;
        let second = fs::read(&generate(&o, dir.path()).expect("gen").files[0]).expect("read");
        assert_ne!(first, second);
    }

    #[test]
    fn parquet_days_rows_schema_and_late_arrivals() {
        let dir = tempfile::tempdir().expect("tmp");
        let o = opts(40_001, 7, SampleFormat::Parquet);
        let summary = generate(&o, dir.path().join("nested/out").as_path()).expect("generate");
        assert_eq!(summary.rows, 40_001);
        assert_eq!(summary.files.len(), 7);
        let expected_schema = events_schema();
        let mut total = 0u64;
        let mut devices_per_day = Vec::new();
        let mut id_of_name: std::collections::BTreeMap<String, String> = Default::default();
        for (i, path) in summary.files.iter().enumerate() {
            let day = Day(o.start.0 + i as i32);
            assert_eq!(
                path.file_name().and_then(|n| n.to_str()),
                Some(format!("DeviceNetworkEvents_{day}.parquet").as_str())
            );
            let batches = read_parquet(path);
            let (mut rows, mut late) = (0usize, 0usize);
            let mut devices = std::collections::BTreeSet::new();
            for batch in &batches {
                assert_eq!(batch.schema().fields(), expected_schema.fields());
                assert!(batch.num_rows() <= ROW_GROUP_ROWS);
                rows += batch.num_rows();
                let ts = batch.column(0).as_any().downcast_ref::<TimestampMicrosecondArray>().expect("ts");
                assert_eq!(ts.null_count(), 0);
                for &t in ts.values() {
                    let got = Day::of_micros(t);
                    if got == day.prev() && i > 0 {
                        late += 1;
                    } else {
                        assert_eq!(got, day, "timestamp {} in file {i}", crate::time::format_micros(t));
                    }
                }
                let names = strings(batch, "DeviceName");
                for (id, name) in strings(batch, "DeviceId").into_iter().zip(names) {
                    let (id, name) = (id.expect("id"), name.expect("name"));
                    assert_eq!(id.len(), 40);
                    assert!(id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
                    assert!(name.starts_with("ws-") || name.starts_with("srv-"), "{name}");
                    let prev = id_of_name.entry(name).or_insert_with(|| id.clone());
                    assert_eq!(*prev, id, "DeviceId is stable per device");
                    devices.insert(id);
                }
            }
            if i == 0 {
                assert_eq!(late, 0);
            } else {
                let share = late as f64 / rows as f64;
                assert!((0.002..0.008).contains(&share), "late share {share} on day {i}");
            }
            devices_per_day.push(devices.len());
            total += rows as u64;
        }
        assert_eq!(total, summary.rows);
        // 2026-10-31 and 2026-11-01 are a weekend: fewer workstations are online.
        assert!(devices_per_day[4] < devices_per_day[2], "{devices_per_day:?}");
        assert!(devices_per_day[5] < devices_per_day[6], "{devices_per_day:?}");
        assert!(devices_per_day.iter().all(|&n| n > 10), "{devices_per_day:?}");
    }

    #[test]
    fn row_split_is_exact_with_lighter_weekends() {
        let o = SampleOptions::default();
        let split = split_rows(&o);
        assert_eq!(split.len(), 35);
        assert_eq!(split.iter().sum::<u64>(), 150_000);
        let (mut we, mut wd) = (Vec::new(), Vec::new());
        for (i, &n) in split.iter().enumerate() {
            let day = Day(o.start.0 + i as i32);
            if is_weekend(day) {
                we.push(n as f64)
            } else {
                wd.push(n as f64)
            }
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        let ratio = mean(&we) / mean(&wd);
        assert!((0.6..0.8).contains(&ratio), "weekend/weekday = {ratio}");
        for rows in [0, 1, 6, 999_983] {
            let o = SampleOptions { rows, days: 7, ..SampleOptions::default() };
            assert_eq!(split_rows(&o).iter().sum::<u64>(), rows);
        }
    }

    #[test]
    fn jsonl_lines_parse_with_seven_digit_timestamps() {
        let dir = tempfile::tempdir().expect("tmp");
        let o = opts(5_000, 3, SampleFormat::Jsonl);
        let summary = generate(&o, dir.path()).expect("generate");
        let mut total = 0u64;
        let mut nulls = 0;
        for (i, path) in summary.files.iter().enumerate() {
            assert!(path.to_string_lossy().ends_with(".jsonl"));
            let text = fs::read_to_string(path).expect("read");
            let day = Day(o.start.0 + i as i32);
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).expect("valid JSON line");
                let obj = v.as_object().expect("flat object");
                assert_eq!(obj.len(), 26);
                let ts = obj["Timestamp"].as_str().expect("timestamp text");
                assert_eq!(ts.len(), 28, "{ts}");
                assert!(ts.ends_with('Z') && ts.as_bytes()[19] == b'.');
                assert!(ts[20..27].bytes().all(|b| b.is_ascii_digit()), "{ts}");
                let micros = crate::time::parse_timestamp_micros(ts).expect("parses");
                let got = Day::of_micros(micros);
                assert!(got == day || (i > 0 && got == day.prev()), "{ts}");
                assert!(obj["RemotePort"].is_i64());
                assert!(obj["InitiatingProcessFolderPath"].is_string());
                if obj["RemoteUrl"].is_null() {
                    nulls += 1;
                }
                total += 1;
            }
        }
        assert_eq!(total, 5_000);
        assert_eq!(total, summary.rows);
        assert!(nulls > 0);

        // The same options in Parquet hold the same rows (to the microsecond).
        let pdir = tempfile::tempdir().expect("tmp");
        let p = generate(&SampleOptions { format: SampleFormat::Parquet, ..o }, pdir.path()).expect("gen");
        let batches = read_parquet(&p.files[0]);
        let text = fs::read_to_string(&summary.files[0]).expect("read");
        let first: serde_json::Value = serde_json::from_str(text.lines().next().expect("a line")).expect("json");
        let ts = batches[0].column(0).as_any().downcast_ref::<TimestampMicrosecondArray>().expect("ts");
        let json_ts = crate::time::parse_timestamp_micros(first["Timestamp"].as_str().expect("ts")).expect("parse");
        assert_eq!(ts.value(0), json_ts);
        assert_eq!(first["DeviceId"].as_str(), strings(&batches[0], "DeviceId")[0].as_deref());
        assert_eq!(first["RemoteUrl"].as_str(), strings(&batches[0], "RemoteUrl")[0].as_deref());
    }

    /// The spellings of the telemetry hosts, by what they are.
    fn form_of(url: &str) -> &'static str {
        if REFERENCE_HOSTS.contains(&url) {
            "bare"
        } else if url == url.to_ascii_uppercase() {
            "upper"
        } else if url.starts_with(' ') && url.ends_with(' ') {
            "padded"
        } else if url.ends_with('.') {
            "trailing dot"
        } else if url.starts_with("tcp://") {
            "tcp port"
        } else if url.contains('@') {
            "userinfo"
        } else if url.starts_with("HTTP") {
            "mixed case url"
        } else if url.contains(".:") {
            "trailing dot url"
        } else if url.starts_with("https://") || url.starts_with("http://") {
            if url.contains(":443/") || url.contains(":80/") {
                "scheme port"
            } else {
                "scheme url"
            }
        } else if url.ends_with(":443") || url.ends_with(":80") {
            "host port"
        } else {
            "other"
        }
    }

    /// The background: telemetry from every online device's channels, every spelling, only
    /// expected processes and the benign agents of the exclusion rules; look-alike URLs that are
    /// no telemetry; a proxy's spelling always the same per device.
    #[test]
    fn telemetry_background_spellings_and_lookalikes() {
        let dir = tempfile::tempdir().expect("tmp");
        let o = SampleOptions { devices: 400, days: 5, rows: 50_000, seed: 42, ..SampleOptions::default() };
        let summary = generate(&o, dir.path()).expect("generate");
        let reference: std::collections::BTreeSet<&str> = REFERENCE_HOSTS.iter().copied().collect();
        let (mut rows, mut telemetry, mut empty, mut lookalikes) = (0usize, 0usize, 0usize, 0usize);
        let mut forms = std::collections::BTreeMap::<&str, usize>::new();
        let mut spelled_by_device = std::collections::BTreeMap::<String, std::collections::BTreeSet<&str>>::new();
        let mut processes = std::collections::BTreeSet::new();
        for path in &summary.files {
            for batch in read_parquet(path) {
                let urls = strings(&batch, "RemoteUrl");
                let files = strings(&batch, "InitiatingProcessFileName");
                let devices = strings(&batch, "DeviceId");
                for ((url, file), device) in urls.iter().zip(&files).zip(&devices) {
                    rows += 1;
                    let Some(url) = url.as_deref().filter(|u| !u.is_empty()) else {
                        empty += 1;
                        continue;
                    };
                    let host = normalized_host(url);
                    let lower = url.to_ascii_lowercase();
                    if !reference.contains(host.as_str()) {
                        lookalikes += usize::from(reference.iter().any(|h| lower.contains(h)));
                        continue;
                    }
                    telemetry += 1;
                    let form = form_of(url);
                    *forms.entry(form).or_default() += 1;
                    if !matches!(form, "bare" | "scheme url" | "scheme port" | "tcp port" | "userinfo") {
                        spelled_by_device.entry(device.clone().expect("id")).or_default().insert(form);
                    }
                    processes.insert(file.clone().expect("file").to_ascii_lowercase());
                }
            }
        }
        assert_eq!(rows, 50_000);
        let share = telemetry as f64 / rows as f64;
        assert!((0.15..0.5).contains(&share), "reference telemetry share {share}");
        let empty_share = empty as f64 / rows as f64;
        assert!((0.2..0.47).contains(&empty_share), "empty RemoteUrl share {empty_share}");
        for form in [
            "bare",
            "upper",
            "mixed case url",
            "padded",
            "trailing dot",
            "trailing dot url",
            "tcp port",
            "userinfo",
            "scheme url",
            "scheme port",
            "host port",
        ] {
            assert!(forms.get(form).copied().unwrap_or(0) > 0, "no {form} rows: {forms:?}");
        }
        assert_eq!(forms.get("other"), None, "{forms:?}");
        assert!(forms["bare"] as f64 > 0.6 * telemetry as f64, "{forms:?}");
        assert!(lookalikes > 0);
        // a proxy logs one spelling per device
        assert!(!spelled_by_device.is_empty());
        assert!(spelled_by_device.values().all(|f| f.len() == 1), "{spelled_by_device:?}");
        // only the sensor, Windows' telemetry services and the benign agents reach the hosts
        let want: std::collections::BTreeSet<String> = [
            "ccmexec.exe",
            "compattelrunner.exe",
            "microsoft.management.services.intunewindowsagent.exe",
            "mssense.exe",
            "sensecm.exe",
            "sensecncproxy.exe",
            "senseimdscollector.exe",
            "sensendr.exe",
            "svchost.exe",
            "taskhostw.exe",
            "wuauclt.exe",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(processes, want);
    }

    /// Each scenario happens on its day(s) on its devices, and nowhere else.
    #[test]
    fn scenarios_happen_on_their_days_only() {
        let dir = tempfile::tempdir().expect("tmp");
        let o = SampleOptions::default();
        let summary = generate(&o, dir.path()).expect("generate");
        let devices: std::collections::BTreeMap<&str, Vec<String>> = scenarios(&o).into_iter().collect();
        assert_eq!(devices["c2"].len(), scenario::C2_DEVICES);
        assert_eq!(devices["lookalike"].len(), scenario::LOOKALIKE_DEVICES);
        assert_eq!(devices["port"].len(), scenario::PORT_DEVICES);
        assert_eq!(devices["group"].len(), scenario::GROUP_DEVICES);
        let mut c2_days = std::collections::BTreeMap::<Day, std::collections::BTreeSet<String>>::new();
        let mut lookalike_days = std::collections::BTreeSet::new();
        let mut port_days = std::collections::BTreeSet::new();
        let mut group_sensor_days = std::collections::BTreeSet::new();
        let group: std::collections::BTreeSet<&String> = devices["group"].iter().collect();
        for path in &summary.files {
            for batch in read_parquet(path) {
                let ts = batch.column(0).as_any().downcast_ref::<TimestampMicrosecondArray>().expect("ts");
                let urls = strings(&batch, "RemoteUrl");
                let folders = strings(&batch, "InitiatingProcessFolderPath");
                let ids = strings(&batch, "DeviceId");
                let ports =
                    batch.column_by_name("RemotePort").unwrap().as_any().downcast_ref::<Int32Array>().unwrap().clone();
                for i in 0..batch.num_rows() {
                    let day = Day::of_micros(ts.value(i));
                    let (url, folder, id) = (
                        urls[i].as_deref().unwrap_or(""),
                        folders[i].as_deref().unwrap_or(""),
                        ids[i].clone().unwrap(),
                    );
                    if folder == r"c:\users\public\libraries\mssense.exe" {
                        assert_eq!(url, scenario::C2_URL);
                        c2_days.entry(day).or_default().insert(id.clone());
                    }
                    if url == scenario::LOOKALIKE_HOST {
                        lookalike_days.insert(day);
                    }
                    if ports.value(i) == scenario::PORT && normalized_host(url) == scenario::PORT_HOST {
                        port_days.insert(day);
                    }
                    if group.contains(&id) && (folder.starts_with(SENSE_DIR) && folder.ends_with("mssense.exe")) {
                        group_sensor_days.insert(day);
                    }
                }
            }
        }
        let day = |i: u32| Day(o.start.0 + i as i32);
        let want: std::collections::BTreeSet<String> = devices["c2"].iter().cloned().collect();
        assert_eq!(c2_days.keys().copied().collect::<Vec<_>>(), scenario::C2_DAYS.map(day));
        assert!(c2_days.values().all(|d| *d == want));
        assert_eq!(lookalike_days.into_iter().collect::<Vec<_>>(), [day(scenario::LOOKALIKE_DAY)]);
        assert_eq!(port_days.into_iter().collect::<Vec<_>>(), [day(scenario::PORT_DAY)]);
        // the silenced group's sensor stops on its day
        assert_eq!(group_sensor_days.iter().next_back().copied(), Some(day(scenario::SILENT_FROM - 1)));
    }

    #[test]
    fn rejects_bad_options_and_names_the_path() {
        let dir = tempfile::tempdir().expect("tmp");
        let zero_days = SampleOptions { days: 0, ..SampleOptions::default() };
        assert!(matches!(generate(&zero_days, dir.path()), Err(SampleError::Invalid(_))));
        let zero_devices = SampleOptions { devices: 0, ..SampleOptions::default() };
        assert!(matches!(generate(&zero_devices, dir.path()), Err(SampleError::Invalid(_))));
        let blocker = dir.path().join("a-file");
        fs::write(&blocker, b"x").expect("write");
        let err = generate(&SampleOptions { rows: 10, days: 1, ..SampleOptions::default() }, &blocker)
            .expect_err("out_dir is a file");
        assert!(err.to_string().contains("a-file"), "{err}");
    }

    #[test]
    fn json_escaping_and_iso_text() {
        let mut out = Vec::new();
        push_json_str(&mut out, "c:\\x \"q\"\n\u{1}é");
        let back: String = serde_json::from_slice(&out).expect("valid JSON string");
        assert_eq!(back, "c:\\x \"q\"\n\u{1}é");
        let mut ts = Vec::new();
        let micros = Day::parse("2026-10-27").expect("day").start_micros() + 47_101_123_456;
        push_iso7(&mut ts, micros);
        let text = std::str::from_utf8(&ts).expect("utf8");
        assert!(text.starts_with("\"2026-10-27T13:05:01.123456"), "{text}");
        assert!(text.ends_with("Z\"") && text.len() == 30, "{text}");
        for v in [0i64, 7, -7, 443, i64::from(i32::MIN), i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            push_int(&mut out, v);
            assert_eq!(out, v.to_string().into_bytes());
        }
    }
}
