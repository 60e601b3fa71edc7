//! A necessary condition for a RemoteUrl to matter, tested over a whole Parquet page of values
//! at once instead of value by value.
//!
//! Every host the hunt compares with its lists is a piece of the RemoteUrl itself, up to ASCII
//! case: the KQL Domain, the normalized host, the host a look-alike is judged on. So a value can
//! be relevant only if it contains, case aside, some piece of a listed name:
//!
//! - a listed exact name, or (look-alikes on, `k` edits) one of `k + 1` disjoint pieces of it:
//!   `k` edits can break at most `k` of them (pigeonhole);
//! - a suffix entry (`.endpoint.security.microsoft.com` for `*.endpoint.security.microsoft.com`);
//! - a literal run of a look-alike pattern (`prod.blob.core.windows.net` for
//!   `uss*prod.blob.core.windows.net`).
//!
//! Those pieces ("needles") are searched for with a SIMD multi-substring searcher over the page's
//! bytes folded to one case, so the ~95 % of values that hold none of them cost a fraction of a
//! nanosecond each, and only the rest meet the full rules ([`super::host::HostMatcher`]). The
//! condition never says no to a relevant value: the choice of pieces changes only how many
//! irrelevant values are looked at twice.
//!
//! Example: with the default lists and 2 edits, `winatp-gw-weu.rnicrosoft.com` contains the
//! needle `winat` and goes on to the full test (a look-alike); `www.bing.com` contains no
//! needle and is ruled out without being parsed.

use aho_corasick::{packed, AhoCorasick, AhoCorasickKind, MatchKind};

/// Folds ASCII case together (and, harmlessly, a few punctuation pairs): `fold(a) == fold(b)`
/// whenever `a` and `b` differ only in ASCII case, so folding both sides keeps every match that
/// ignoring case would. One OR per byte, so a page is folded at memory speed.
#[inline]
pub fn fold(byte: u8) -> u8 {
    byte | 0x20
}

/// Folds `bytes` into `out` (cleared first).
pub fn fold_into(out: &mut Vec<u8>, bytes: &[u8]) {
    out.clear();
    out.extend(bytes.iter().map(|&b| fold(b)));
}

/// Text that many unrelated URLs hold. Pieces inside it would send those URLs to the full test
/// for nothing, so the choice of pieces avoids them (correctness never depends on this list).
const COMMON: &[&str] = &[
    "https://",
    "http://",
    "www.",
    "login.",
    "download.",
    "update.",
    "api.",
    "cdn.",
    "static",
    "edge",
    "prod",
    "eastus",
    "westus",
    "northeurope",
    "westeurope",
    "southeastasia",
    "microsoft.com",
    "microsoftonline.com",
    "windows.net",
    "blob.core.windows.net",
    "windows.com",
    "windowsupdate.com",
    "office.com",
    "office.net",
    "office365.com",
    "live.com",
    "bing.com",
    "msn.com",
    "azure.com",
    "azureedge.net",
    "akamaized.net",
    "akadns.net",
    "akamaiedge.net",
    "cloudfront.net",
    "amazonaws.com",
    "google.com",
    "googleapis.com",
    "gstatic.com",
    "apple.com",
    "icloud.com",
    "digicert.com",
    "microsoft.us",
];

/// The needles of a configuration and the searcher built from them; `None` when some needle
/// is empty (a listed name shorter than `k + 1` characters, say): then every value is a
/// candidate, which is slow but never wrong.
#[derive(Debug, Clone)]
pub struct UrlPrefilter {
    needles: Vec<Vec<u8>>,
    searcher: Option<Searcher>,
}

#[derive(Debug, Clone)]
enum Searcher {
    /// Teddy (SIMD) for up to 64 needles.
    Packed(packed::Searcher),
    Automaton(AhoCorasick),
}

impl UrlPrefilter {
    /// Needles for these lists: `exact` names (whole, or in `edits + 1` pieces when
    /// look-alikes within `edits` are searched for), `suffixes` and pattern `literals`, each
    /// of which a relevant host must contain.
    pub fn new<'a>(
        exact: impl IntoIterator<Item = &'a str>,
        suffixes: impl IntoIterator<Item = &'a str>,
        literals: impl IntoIterator<Item = &'a str>,
        edits: Option<usize>,
    ) -> UrlPrefilter {
        let folded = |s: &str| -> Vec<u8> { s.bytes().map(fold).collect() };
        let mut needles: Vec<Vec<u8>> = Vec::new();
        let mut possible = true;
        let mut names: Vec<Vec<u8>> = exact.into_iter().map(folded).collect();
        names.sort();
        names.dedup();
        match edits {
            None => needles.extend(names.iter().cloned()),
            Some(k) => match pieces_for(&names, k + 1) {
                Some(pieces) => needles.extend(pieces),
                None => possible = false,
            },
        }
        needles.extend(suffixes.into_iter().map(folded));
        for literal in literals {
            let piece = best_run(&folded(literal.trim()), &needles);
            needles.push(piece);
        }
        possible &= !needles.iter().any(Vec::is_empty);
        // A needle that contains another is redundant: the shorter one already matches there.
        needles.sort_by(|a, b| a.len().cmp(&b.len()).then(a.cmp(b)));
        needles.dedup();
        let mut kept: Vec<Vec<u8>> = Vec::new();
        for needle in needles {
            if !kept.iter().any(|k| contains(&needle, k)) {
                kept.push(needle);
            }
        }
        let searcher = (possible && !kept.is_empty()).then(|| build(&kept));
        UrlPrefilter { needles: kept, searcher }
    }

    /// The needles, folded (for tests and the log).
    pub fn needles(&self) -> &[Vec<u8>] {
        &self.needles
    }

    /// Whether the test is on (else every value is a candidate).
    pub fn is_active(&self) -> bool {
        self.searcher.is_some()
    }

    /// The first position at or after `from` where a needle starts in `folded` (a haystack
    /// folded with [`fold`]); `Some(from)` when the test is off.
    #[inline]
    pub fn find(&self, folded: &[u8], from: usize) -> Option<usize> {
        if from >= folded.len() {
            return None;
        }
        match &self.searcher {
            None => Some(from),
            Some(Searcher::Packed(s)) => {
                s.find_in(folded, aho_corasick::Span::from(from..folded.len())).map(|m| m.start())
            }
            Some(Searcher::Automaton(s)) => s.find(aho_corasick::Input::new(folded).range(from..)).map(|m| m.start()),
        }
    }

    /// Whether one value can be relevant (the page-wide search does the same on many at once).
    pub fn may_match(&self, value: &[u8]) -> bool {
        let mut folded = Vec::with_capacity(value.len());
        fold_into(&mut folded, value);
        self.find(&folded, 0).is_some()
    }
}

fn build(needles: &[Vec<u8>]) -> Searcher {
    let packed = packed::Config::new().match_kind(packed::MatchKind::LeftmostFirst).builder().extend(needles).build();
    match packed {
        Some(searcher) => Searcher::Packed(searcher),
        None => Searcher::Automaton(
            AhoCorasick::builder()
                .kind(Some(AhoCorasickKind::DFA))
                .match_kind(MatchKind::LeftmostFirst)
                .build(needles)
                .expect("a DFA over a few hundred short needles fits the default limits"),
        ),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The 4-byte windows of [`COMMON`], folded.
static COMMON_WINDOWS: std::sync::LazyLock<rustc_hash::FxHashSet<[u8; 4]>> = std::sync::LazyLock::new(|| {
    COMMON
        .iter()
        .flat_map(|c| c.as_bytes().windows(4).map(|w| [fold(w[0]), fold(w[1]), fold(w[2]), fold(w[3])]))
        .collect()
});

/// The bytes of `piece` outside 4-byte runs of [`COMMON`] (0 for a short piece inside it).
fn uncommon_bytes(piece: &[u8]) -> usize {
    if piece.len() < 4 {
        let inside = COMMON.iter().any(|c| contains(&c.bytes().map(fold).collect::<Vec<_>>(), piece));
        return if inside { 0 } else { piece.len() };
    }
    let mut covered_to = 0;
    let mut uncovered = 0;
    for (i, window) in piece.windows(4).enumerate() {
        if COMMON_WINDOWS.contains(&[window[0], window[1], window[2], window[3]]) {
            uncovered += i.saturating_sub(covered_to);
            covered_to = i + 4;
        }
    }
    uncovered += piece.len().saturating_sub(covered_to);
    uncovered
}

/// How much a piece costs as a needle: mostly common text costs most (it sends unrelated
/// values to the full test), a piece shorter than Teddy's 4-byte fingerprint a lot, and a
/// piece that few names hold more than one many share (each needle slows the search).
/// `sharing` is how many of the names hold the piece.
fn cost(piece: &[u8], sharing: usize, already_chosen: bool) -> u32 {
    let uncommon = uncommon_bytes(piece);
    let mut cost = match uncommon {
        // Common text: every value holding it is looked at twice, so a long piece (rarer) that
        // other names share (one needle for all) is worth most.
        0..=2 => 500 - 30 * piece.len().min(14) as u32,
        n => 60 / n as u32,
    };
    cost += match piece.len() {
        0..=3 => 1000,
        4 => 40,
        _ => 0,
    };
    if already_chosen {
        cost / 4
    } else {
        cost + 80 / sharing.max(1) as u32
    }
}

/// The longest piece considered.
const LONGEST: usize = 14;

/// `count` disjoint pieces of `name` that cost least together (see [`cost`]), so that
/// `count - 1` edits leave one whole; `None` when the name is shorter than `count`.
fn pieces(
    name: &[u8],
    count: usize,
    sharing: &rustc_hash::FxHashMap<&[u8], usize>,
    chosen: &rustc_hash::FxHashSet<Vec<u8>>,
) -> Option<Vec<Vec<u8>>> {
    let n = name.len();
    if n < count {
        return None;
    }
    let piece_cost: Vec<Vec<u32>> = (0..n)
        .map(|i| {
            (1..=LONGEST.min(n - i))
                .map(|len| {
                    let piece = &name[i..i + len];
                    cost(piece, sharing.get(piece).copied().unwrap_or(1), chosen.contains(piece))
                })
                .collect()
        })
        .collect();
    // best[i][j]: least cost of placing j pieces in name[i..]; choice[i][j]: the length of the
    // piece taken at i (0: the byte at i is left out).
    let unreachable = u32::MAX / 4;
    let mut best = vec![vec![unreachable; count + 1]; n + 1];
    let mut choice = vec![vec![0usize; count + 1]; n + 1];
    for row in best.iter_mut() {
        row[0] = 0;
    }
    for i in (0..n).rev() {
        for j in 1..=count {
            let (mut here, mut take) = (best[i + 1][j], 0);
            for (len, &piece) in (1..).zip(&piece_cost[i]) {
                let rest = best[i + len][j - 1];
                if rest < unreachable && rest + piece < here {
                    here = rest + piece;
                    take = len;
                }
            }
            best[i][j] = here;
            choice[i][j] = take;
        }
    }
    let (mut i, mut j, mut out) = (0, count, Vec::new());
    while j > 0 {
        match choice[i][j] {
            0 => i += 1,
            len => {
                out.push(name[i..i + len].to_vec());
                i += len;
                j -= 1;
            }
        }
    }
    Some(out)
}

/// Pieces for every name (see [`pieces`]), names taken in order so that later ones reuse what
/// earlier ones chose.
fn pieces_for(names: &[Vec<u8>], count: usize) -> Option<Vec<Vec<u8>>> {
    // how many names hold each piece
    let mut sharing: rustc_hash::FxHashMap<&[u8], usize> = rustc_hash::FxHashMap::default();
    for name in names {
        let mut own: rustc_hash::FxHashSet<&[u8]> = rustc_hash::FxHashSet::default();
        for i in 0..name.len() {
            for len in 1..=LONGEST.min(name.len() - i) {
                own.insert(&name[i..i + len]);
            }
        }
        for piece in own {
            *sharing.entry(piece).or_default() += 1;
        }
    }
    let mut chosen: rustc_hash::FxHashSet<Vec<u8>> = rustc_hash::FxHashSet::default();
    let mut ordered = Vec::new();
    for name in names {
        for piece in pieces(name, count, &sharing, &chosen)? {
            if chosen.insert(piece.clone()) {
                ordered.push(piece);
            }
        }
    }
    Some(ordered)
}

/// The piece of a glob pattern's literal runs (`*` matches any run) that a matching host surely
/// contains and that costs least as a needle (see [`cost`]); empty when the pattern has no
/// literal.
fn best_run(pattern: &[u8], chosen: &[Vec<u8>]) -> Vec<u8> {
    pattern
        .split(|&b| b == fold(b'*'))
        .flat_map(|run| (0..run.len()).flat_map(move |i| (i + 1..=run.len().min(i + LONGEST)).map(move |j| &run[i..j])))
        .min_by_key(|piece| (cost(piece, 1, chosen.iter().any(|c| c == piece)), std::cmp::Reverse(piece.len())))
        .map(<[u8]>::to_vec)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most pieces of `name` that `needles` cover without overlapping (earliest end first).
    fn disjoint_count(name: &[u8], needles: &[&[u8]]) -> usize {
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for needle in needles {
            if needle.is_empty() || needle.len() > name.len() {
                continue;
            }
            for start in 0..=name.len() - needle.len() {
                if &name[start..start + needle.len()] == *needle {
                    spans.push((start + needle.len(), start));
                }
            }
        }
        spans.sort_unstable();
        let (mut count, mut free_from) = (0, 0);
        for (end, start) in spans {
            if start >= free_from {
                count += 1;
                free_from = end;
            }
        }
        count
    }

    fn prefilter(edits: Option<usize>) -> UrlPrefilter {
        let reference = crate::config::default_reference_hosts();
        UrlPrefilter::new(
            reference.iter().map(String::as_str).chain(["crl.microsoft.com", "ussus1eastprod.blob.core.windows.net"]),
            [".endpoint.security.microsoft.com"],
            ["winatp-gw-*.microsoft.com", "uss*prod.blob.core.windows.net"],
            edits,
        )
    }

    #[test]
    fn every_name_holds_enough_disjoint_needles() {
        let names: Vec<Vec<u8>> = crate::config::default_reference_hosts()
            .iter()
            .chain(&["crl.microsoft.com".to_string(), "ctldl.windowsupdate.com".to_string()])
            .map(|n| n.bytes().map(fold).collect())
            .collect();
        for count in 1..=4 {
            let needles = pieces_for(&names, count).unwrap();
            let refs: Vec<&[u8]> = needles.iter().map(Vec::as_slice).collect();
            for name in &names {
                assert!(disjoint_count(name, &refs) >= count, "{} in {count}", String::from_utf8_lossy(name));
            }
            // shared pieces: fewer needles than names times pieces
            assert!(needles.len() < names.len() * count, "{count}: {} needles", needles.len());
        }
        assert_eq!(pieces_for(&[b"ab".to_vec()], 3), None);
        assert_eq!(disjoint_count(b"abcabc", &[b"abc", b"bca"]), 2);
    }

    #[test]
    fn listed_hosts_and_their_near_misses_are_candidates() {
        let pf = prefilter(Some(2));
        assert!(pf.is_active());
        for url in [
            "winatp-gw-weu.microsoft.com",
            "HTTPS://WINATP-GW-WEU.MICROSOFT.COM:443/x",
            "winatp-gw-weu.rnicrosoft.com",
            "wlnatp-gw-weu.micr0soft.com",
            "https://svc:pw@eu-v20.events.data.microsoft.com/ping",
            "x.endpoint.security.microsoft.com",
            "CRL.MICROSOFT.COM.",
            "ussus9westprod.blob.core.windows.net",
            "ctldl.windowsupdate.com",
        ] {
            assert!(pf.may_match(url.as_bytes()), "{url}");
        }
        for url in ["www.bing.com", "", "https://example.org/a/b?c=d", "10.0.0.1"] {
            assert!(!pf.may_match(url.as_bytes()), "{url}");
        }
    }

    #[test]
    fn without_edits_the_whole_name_is_the_needle() {
        let pf = prefilter(None);
        assert!(pf.may_match(b"https://ctldl.windowsupdate.com/x"));
        assert!(!pf.may_match(b"ctldl.windowsupdate.co"), "no look-alikes, no partial names");
    }

    #[test]
    fn a_name_too_short_to_split_turns_the_test_off() {
        let pf = UrlPrefilter::new(["ab"], [], [], Some(2));
        assert!(!pf.is_active());
        assert!(pf.may_match(b"anything at all"));
        let empty_pattern = UrlPrefilter::new(["winatp-gw-weu.microsoft.com"], [], ["*"], Some(2));
        assert!(!empty_pattern.is_active());
    }

    /// The condition never says no to a relevant value: listed names and their look-alikes
    /// (up to the configured edits), in any spelling, always reach the full test.
    mod never_misses {
        use proptest::prelude::*;

        fn settings() -> &'static crate::config::Settings {
            static SETTINGS: std::sync::OnceLock<crate::config::Settings> = std::sync::OnceLock::new();
            SETTINGS.get_or_init(|| crate::config::Config::default().validate().unwrap())
        }

        fn listed() -> Vec<String> {
            let s = settings();
            s.reference_hosts.iter().chain(&s.extra_hosts).map(|h| h.trim_start_matches("*.").to_string()).collect()
        }

        /// A name with up to `edits` random edits (insert, delete, substitute).
        fn edited(name: String, edits: Vec<(u8, usize, char)>) -> String {
            let mut chars: Vec<char> = name.chars().collect();
            for (kind, at, c) in edits {
                let at = at % (chars.len() + 1);
                match kind % 3 {
                    0 => chars.insert(at, c),
                    1 if at < chars.len() => {
                        chars.remove(at);
                    }
                    _ if at < chars.len() => chars[at] = c,
                    _ => {}
                }
            }
            chars.into_iter().collect()
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(4000))]
            #[test]
            fn relevant_values_are_candidates(
                pick in 0usize..1000,
                prefix in "[a-z0-9]{0,3}\\.?",
                edits in proptest::collection::vec((0u8..3, 0usize..64, proptest::sample::select(vec!['a', 'x', '0', '.', '-', 'M', '1'])), 0..3),
                shape in 0usize..8,
                upper in any::<bool>(),
            ) {
                let names = listed();
                let name = format!("{prefix}{}", names[pick % names.len()]);
                let mut host = edited(name, edits);
                if upper {
                    host = host.to_ascii_uppercase();
                }
                let url = match shape {
                    0 => host.clone(),
                    1 => format!("https://{host}/path?q=1"),
                    2 => format!("{host}:443"),
                    3 => format!(" {host}. "),
                    4 => format!("tcp://svc:pw@{host}:8443"),
                    5 => format!("//{host}/x"),
                    6 => format!("https://u@{host}"),
                    _ => format!("{host}/a//b"),
                };
                let m = &settings().hosts;
                prop_assert!(!m.is_relevant(&url) || m.prefilter().may_match(url.as_bytes()), "{url:?}");
            }

            #[test]
            fn arbitrary_values_too(url in "\\PC{0,60}") {
                let m = &settings().hosts;
                prop_assert!(!m.is_relevant(&url) || m.prefilter().may_match(url.as_bytes()), "{url:?}");
            }
        }
    }
}
