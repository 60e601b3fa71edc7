//! Host extraction and matching: the reference query's `Domain` rule, and the normalized rule
//! that a network stack would apply.
//!
//! `kql` mode reproduces, character for character,
//! `case(RemoteUrl contains "//", parse_url(RemoteUrl).Host, RemoteUrl) in (TargetURLs)`.
//! `normalized` mode extracts the host a connection really went to, so that spelling tricks
//! (`HOST:443`, `host.`, `tcp://host`) cannot hide it. A row that only `normalized` matches is
//! an evasion of the reference query and is reported as such.

use std::borrow::Cow;

use rustc_hash::FxHashSet;

use super::lookalike::Lookalikes;
use super::prefilter::UrlPrefilter;

/// How RemoteUrl is turned into the host compared with the lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum MatchMode {
    /// Exactly the reference KQL: verbatim unless the value contains `//`, then
    /// `parse_url(...).Host`; case-sensitive equality.
    Kql,
    /// Trim, strip scheme, path, userinfo and port, lowercase, drop trailing dots.
    Normalized,
}

impl MatchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            MatchMode::Kql => "kql",
            MatchMode::Normalized => "normalized",
        }
    }
}

/// `case(RemoteUrl contains "//", parse_url(RemoteUrl).Host, RemoteUrl)`, after
/// `isnotempty(RemoteUrl)`. `None` means the row is dropped by `isnotempty` (null or "");
/// a whitespace-only value is not empty in Kusto.
pub fn kql_domain(remote_url: &str) -> Option<&str> {
    if remote_url.is_empty() {
        return None;
    }
    if find_double_slash(remote_url.as_bytes()).is_some() {
        Some(kql_parse_url_host(remote_url))
    } else {
        Some(remote_url)
    }
}

/// `parse_url(url).Host` as Kusto computes it.
///
/// - Only absolute URLs parse (`scheme://…`); anything else, `//host/x` included, gives an empty
///   Host, as the documented non-URL examples (`mailto:`, `urn:`) do.
/// - `user:password@host` drops the userinfo (documented example); `user@host` without a
///   password keeps it in Host (observed, Kusto-Query-Language#112).
/// - The port is cut at the *last* colon (observed: `[2001:db8::7]` gives Host `[2001:db8:`).
/// - Case is kept.
pub fn kql_parse_url_host(url: &str) -> &str {
    let Some(after_scheme) = strip_scheme(url) else {
        return "";
    };
    let authority = authority_of(after_scheme);
    let host_port = match authority.rfind('@') {
        Some(at) if authority[..at].contains(':') => &authority[at + 1..],
        _ => authority,
    };
    match host_port.rfind(':') {
        Some(colon) => &host_port[..colon],
        None => host_port,
    }
}

/// The part after `scheme://` when `url` starts with a well-formed scheme
/// (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`, RFC 3986).
fn strip_scheme(url: &str) -> Option<&str> {
    let bytes = url.as_bytes();
    let sep = find_double_slash(bytes).filter(|&i| i > 0 && bytes[i - 1] == b':')? - 1;
    let scheme = &bytes[..sep];
    let well_formed = scheme.first().is_some_and(u8::is_ascii_alphabetic)
        && scheme.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'-' | b'.'));
    well_formed.then(|| &url[sep + 3..])
}

/// The first `//`. A plain byte loop: these strings are short, and a substring searcher's set-up
/// costs more than the search.
#[inline]
fn find_double_slash(bytes: &[u8]) -> Option<usize> {
    (1..bytes.len()).find(|&i| bytes[i] == b'/' && bytes[i - 1] == b'/').map(|i| i - 1)
}

/// The authority ends at the first `/`, `?` or `#`.
#[inline]
fn authority_of(rest: &str) -> &str {
    match rest.bytes().position(|c| matches!(c, b'/' | b'?' | b'#')) {
        Some(end) => &rest[..end],
        None => rest,
    }
}

/// Bytes of a bare lowercase host name, which every rule leaves unchanged.
static BARE_HOST_BYTE: [bool; 256] = {
    let mut table = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        table[c] = b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-';
        c += 1;
    }
    table
};

/// `text` when it is a bare lowercase host name, which every rule leaves unchanged.
#[inline]
fn bare_host(text: &str) -> Option<&str> {
    let bytes = text.as_bytes();
    (bytes.last().is_some_and(|&c| c != b'.') && bytes.iter().all(|&c| BARE_HOST_BYTE[c as usize])).then_some(text)
}

/// The host of `scheme://host[:digits][/?#…]` when the scheme is well-formed and the host bare
/// and lowercase: the KQL Domain and the normalized host are then both exactly that host (no
/// userinfo, brackets, case or trailing dot for either rule to treat differently). `None` for
/// any other shape, which the full rules handle.
#[inline]
fn bare_url_host(url: &str) -> Option<&str> {
    let authority = authority_of(strip_scheme(url)?);
    let (host, port) = authority.split_at(authority.find(':').unwrap_or(authority.len()));
    let port_ok = port.is_empty() || (port.len() > 1 && port[1..].bytes().all(|c| c.is_ascii_digit()));
    bare_host(host).filter(|_| port_ok)
}

/// The host a connection to `remote_url` goes to, normalized (DESIGN §1):
/// trim; drop `scheme://` (a well-formed scheme only, so a `://` inside a path or query is not
/// taken for one) or a leading `//`; cut the authority at `/ ? #`; drop userinfo up to the last
/// `@`; drop the port (a bracketed IPv6 literal keeps what is inside the brackets); lowercase;
/// drop trailing dots. `None` when nothing is left.
///
/// The result is a fixed point: normalizing it again gives it back. That is why whitespace and
/// dots are trimmed from the host itself (`https:// host. /` would otherwise give `host. `, and
/// that again `host`), every opening bracket is taken (`[[::1]`), and an IPv6 literal keeps its
/// colons with or without brackets (`[2001:db8::7]` gives `2001:db8::7`, which must not then be
/// cut to `2001` as a host with a port).
pub fn normalized_host(remote_url: &str) -> Option<Cow<'_, str>> {
    let trimmed = remote_url.trim();
    let rest = strip_scheme(trimmed).or_else(|| trimmed.strip_prefix("//")).unwrap_or(trimmed);
    let authority = authority_of(rest);
    let host_port = match authority.rfind('@') {
        Some(at) => &authority[at + 1..],
        None => authority,
    };
    let host_port = host_port.trim();
    let host = if host_port.starts_with('[') {
        let inner = host_port.trim_start_matches(|c: char| c == '[' || c.is_whitespace());
        match inner.find(']') {
            Some(end) => &inner[..end],
            None => inner,
        }
    } else if is_ipv6_literal(host_port) {
        host_port
    } else {
        match host_port.find(':') {
            Some(colon) => &host_port[..colon],
            None => host_port,
        }
    };
    let host = host.trim_end_matches(|c: char| c == '.' || c.is_whitespace()).trim_start();
    // What is left of a bracketed value that is not an IPv6 literal (`[a:b]`) is a name with a
    // port, like any other.
    let host = match host.find(':') {
        Some(colon) if !is_ipv6_literal(host) => {
            host[..colon].trim_end_matches(|c: char| c == '.' || c.is_whitespace())
        }
        _ => host,
    };
    if host.is_empty() {
        return None;
    }
    if host.bytes().any(|c| c.is_ascii_uppercase()) {
        Some(Cow::Owned(host.to_ascii_lowercase()))
    } else {
        Some(Cow::Borrowed(host))
    }
}

/// An IPv6 address written without brackets: its colons are not a port separator.
fn is_ipv6_literal(text: &str) -> bool {
    text.contains(':') && text.parse::<std::net::Ipv6Addr>().is_ok()
}

/// The last eight bytes of a name (fewer, zero-padded, for a shorter one) as one integer.
#[inline]
fn tail8(bytes: &[u8]) -> u64 {
    let mut tail = [0u8; 8];
    let n = bytes.len().min(8);
    tail[..n].copy_from_slice(&bytes[bytes.len() - n..]);
    u64::from_le_bytes(tail)
}

/// A list of hosts: exact names, plus `*.suffix` entries that match any subdomain.
#[derive(Debug, Clone, Default)]
pub struct HostList {
    exact: FxHashSet<String>,
    /// Suffix entries with their leading dot (`.endpoint.security.microsoft.com`).
    suffixes: FxHashSet<String>,
    /// Bitset of suffix lengths, so only the few dots at a plausible distance are looked up.
    suffix_lengths: [u64; 4],
    longest_suffix: usize,
    short_suffix: bool,

    /// (length, last eight bytes) of every exact name: most hosts are rejected by this pair
    /// alone, without hashing or comparing the whole string.
    exact_fingerprints: FxHashSet<(usize, u64)>,
    /// Last eight bytes of every suffix entry; `None` when a suffix is shorter than that.
    suffix_tails: Option<FxHashSet<u64>>,
}

impl HostList {
    /// Builds the list. `verbatim` keeps entries byte for byte (the KQL list, where
    /// `'HOST '` can never match); otherwise entries are normalized like hosts.
    pub fn new<'a>(entries: impl IntoIterator<Item = &'a str>, verbatim: bool) -> HostList {
        let mut list = HostList::default();
        for entry in entries {
            let entry =
                if verbatim { entry.to_string() } else { entry.trim().trim_end_matches('.').to_ascii_lowercase() };
            if let Some(suffix) = entry.strip_prefix("*.").filter(|_| !verbatim) {
                let suffix = format!(".{suffix}");
                if suffix.len() < 256 {
                    list.suffix_lengths[suffix.len() / 64] |= 1 << (suffix.len() % 64);
                }
                list.longest_suffix = list.longest_suffix.max(suffix.len());
                if suffix.len() >= 8 {
                    list.suffix_tails.get_or_insert_with(FxHashSet::default).insert(tail8(suffix.as_bytes()));
                } else {
                    list.short_suffix = true;
                }
                list.suffixes.insert(suffix);
            } else {
                list.insert_exact(entry);
            }
        }
        list
    }

    fn insert_exact(&mut self, entry: String) {
        self.exact_fingerprints.insert((entry.len(), tail8(entry.as_bytes())));
        self.exact.insert(entry);
    }

    pub fn contains(&self, host: &str) -> bool {
        fn has_length(bits: &[u64; 4], n: usize) -> bool {
            n >= 256 || bits[n / 64] & (1 << (n % 64)) != 0
        }
        let tail = tail8(host.as_bytes());
        if self.exact_fingerprints.contains(&(host.len(), tail)) && self.exact.contains(host) {
            return true;
        }
        if self.suffixes.is_empty() {
            return false;
        }
        if !self.short_suffix && self.suffix_tails.as_ref().is_some_and(|tails| !tails.contains(&tail)) {
            return false;
        }
        // `*.x.com` matches `a.x.com` and `a.b.x.com`, never `x.com` itself: the suffix must
        // start at a dot that is not the first byte. Dots are visited from the right, and only
        // as far as the longest suffix reaches.
        let bytes = host.as_bytes();
        let reach = bytes.len().saturating_sub(self.longest_suffix).max(1);
        (reach..bytes.len()).rev().any(|dot| {
            bytes[dot] == b'.'
                && has_length(&self.suffix_lengths, bytes.len() - dot)
                && self.suffixes.contains(&host[dot..])
        })
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.suffixes.is_empty()
    }

    /// The exact (non-suffix) entries.
    pub fn exact_names(&self) -> impl Iterator<Item = &str> {
        self.exact.iter().map(String::as_str)
    }

    /// The suffix entries, each with its leading dot (`.wd.microsoft.com` for `*.wd.microsoft.com`).
    pub fn suffix_entries(&self) -> impl Iterator<Item = &str> {
        self.suffixes.iter().map(String::as_str)
    }
}

/// Where a row's host stands against the lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMatch<'a> {
    /// The reference query counts this row (`kql` rule, reference list).
    pub kql_reference: bool,
    /// The normalized host, when it is on the reference list or on `extra_hosts`.
    pub host: Option<Cow<'a, str>>,
    /// The normalized host is on the reference list.
    pub normalized_reference: bool,
    /// The normalized host when it is on no list but looks like a Defender for Endpoint host
    /// (only when look-alikes are being looked for, see [`HostMatcher::with_lookalikes`]).
    pub lookalike: Option<Cow<'a, str>>,
}

impl HostMatch<'_> {
    /// The row is on the reference list under `mode`.
    pub fn reference(&self, mode: MatchMode) -> bool {
        match mode {
            MatchMode::Kql => self.kql_reference,
            MatchMode::Normalized => self.normalized_reference,
        }
    }

    /// The host is on the reference list, but its spelling hides it from the reference query.
    pub fn evades_reference_query(&self) -> bool {
        self.normalized_reference && !self.kql_reference
    }
}

/// The reference list in both spellings plus the extra MDE hosts.
#[derive(Debug, Clone)]
pub struct HostMatcher {
    reference_verbatim: HostList,
    reference: HostList,
    extra: HostList,
    /// All three lists in one, for bare host names, which every rule leaves unchanged.
    any: HostList,
    lookalikes: Option<Lookalikes>,
    /// [`HostMatcher::is_relevant`]'s question to the per-thread memory of answers.
    relevance: super::memo::Question,
    /// What every relevant value contains, searched page by page before any value is parsed.
    prefilter: std::sync::Arc<UrlPrefilter>,
}

impl HostMatcher {
    pub fn new<'a>(reference: &[String], extra: impl IntoIterator<Item = &'a str>) -> HostMatcher {
        let extra: Vec<&str> = extra.into_iter().collect();
        let mut any = HostList::new(reference.iter().map(String::as_str).chain(extra.iter().copied()), false);
        for entry in reference {
            any.insert_exact(entry.clone());
        }
        HostMatcher {
            reference_verbatim: HostList::new(reference.iter().map(String::as_str), true),
            reference: HostList::new(reference.iter().map(String::as_str), false),
            extra: HostList::new(extra, false),
            any,
            lookalikes: None,
            relevance: super::memo::Question::new(),
            prefilter: std::sync::Arc::new(UrlPrefilter::new([], [], [], None)),
        }
        .with_prefilter(None, &[])
    }

    fn with_prefilter(mut self, edits: Option<usize>, patterns: &[&str]) -> Self {
        let prefilter =
            UrlPrefilter::new(self.any.exact_names(), self.any.suffix_entries(), patterns.iter().copied(), edits);
        self.prefilter = std::sync::Arc::new(prefilter);
        self
    }

    /// Also reports hosts on no list that look like listed ones (by `patterns`, or within
    /// `max_distance` edits of a listed exact name), for the look-alike detector.
    pub fn with_lookalikes<'a>(mut self, patterns: impl IntoIterator<Item = &'a str>, max_distance: usize) -> Self {
        let listed: Vec<String> = self.any.exact_names().map(str::to_string).collect();
        let patterns: Vec<&str> = patterns.into_iter().collect();
        self.lookalikes =
            Some(Lookalikes::new(patterns.iter().copied(), listed.iter().map(String::as_str), max_distance));
        // The look-alikes change what is relevant: answers remembered before do not hold.
        self.relevance = super::memo::Question::new();
        self.with_prefilter(Some(max_distance), &patterns)
    }

    /// The necessary condition of [`HostMatcher::is_relevant`] that sources test a page at a time.
    pub fn prefilter(&self) -> &UrlPrefilter {
        &self.prefilter
    }

    pub fn lookalikes(&self) -> Option<&Lookalikes> {
        self.lookalikes.as_ref()
    }

    /// Classifies one RemoteUrl value (`None` = null).
    pub fn classify<'a>(&self, remote_url: Option<&'a str>) -> HostMatch<'a> {
        let Some(url) = remote_url else {
            return HostMatch { kql_reference: false, host: None, normalized_reference: false, lookalike: None };
        };
        let kql_reference = kql_domain(url).is_some_and(|d| self.reference_verbatim.contains(d));
        let host = normalized_host(url);
        let normalized_reference = host.as_deref().is_some_and(|h| self.reference.contains(h));
        let listed = normalized_reference || host.as_deref().is_some_and(|h| self.extra.contains(h));
        if listed {
            return HostMatch { kql_reference, host, normalized_reference, lookalike: None };
        }
        let lookalike = host.filter(|h| self.lookalikes.as_ref().is_some_and(|l| l.matches(h)));
        HostMatch { kql_reference, host: None, normalized_reference, lookalike }
    }

    /// Whether a row with this RemoteUrl can matter to any table: the cheap test the sources
    /// push down so that other columns are decoded only for these rows.
    pub fn is_relevant(&self, remote_url: &str) -> bool {
        self.relevance.answer(remote_url.as_bytes(), || self.decide_relevant(remote_url))
    }

    fn decide_relevant(&self, remote_url: &str) -> bool {
        // Most values are bare lowercase host names, which both rules leave as they are, or
        // `scheme://host[:port]` followed by a path: both rules then take the same bare host.
        // One pass over the bytes up to the path settles them without parsing.
        let host = bare_host(remote_url).or_else(|| bare_url_host(remote_url));
        if let Some(host) = host {
            return self.any.contains(host) || self.lookalikes.as_ref().is_some_and(|l| l.matches(host));
        }
        let m = self.classify(Some(remote_url));
        m.kql_reference || m.host.is_some() || m.lookalike.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: &str = "winatp-gw-weu.microsoft.com";

    fn matcher() -> HostMatcher {
        HostMatcher::new(
            &crate::config::default_reference_hosts(),
            ["*.endpoint.security.microsoft.com", "crl.microsoft.com"],
        )
    }

    /// The KQL rules of DESIGN §1, row by row: input → kql Domain → kql match,
    /// normalized host → normalized match. `None` input is a null RemoteUrl.
    #[test]
    fn kql_semantics_table() {
        #[rustfmt::skip]
        let table: &[(Option<&str>, Option<&str>, bool, Option<&str>, bool)] = &[
            // input                                          kql Domain                          kql   normalized host                 norm
            (None,                                            None,                               false, None,                          false),
            (Some(""),                                        None,                               false, None,                          false),
            (Some(" "),                                       Some(" "),                          false, None,                          false),
            (Some(GW),                                        Some(GW),                           true,  Some(GW),                      true),
            (Some("WINATP-GW-WEU.MICROSOFT.COM"),             Some("WINATP-GW-WEU.MICROSOFT.COM"),false, Some(GW),                      true),
            (Some("winatp-gw-weu.microsoft.com:443"),         Some("winatp-gw-weu.microsoft.com:443"), false, Some(GW),                 true),
            (Some("WINATP-GW-WEU.MICROSOFT.COM:443"),         Some("WINATP-GW-WEU.MICROSOFT.COM:443"), false, Some(GW),                 true),
            (Some("winatp-gw-weu.microsoft.com."),            Some("winatp-gw-weu.microsoft.com."), false, Some(GW),                    true),
            (Some("winatp-gw-weu.microsoft.com/path"),        Some("winatp-gw-weu.microsoft.com/path"), false, Some(GW),                true),
            (Some(" winatp-gw-weu.microsoft.com "),           Some(" winatp-gw-weu.microsoft.com "), false, Some(GW),                   true),
            (Some("https://winatp-gw-weu.microsoft.com/x?y=1"), Some(GW),                         true,  Some(GW),                      true),
            (Some("https://winatp-gw-weu.microsoft.com:443/"), Some(GW),                          true,  Some(GW),                      true),
            (Some("tcp://winatp-gw-weu.microsoft.com:443"),   Some(GW),                           true,  Some(GW),                      true),
            (Some("HTTPS://WINATP-GW-WEU.MICROSOFT.COM/"),    Some("WINATP-GW-WEU.MICROSOFT.COM"),false, Some(GW),                      true),
            (Some("https://winatp-gw-weu.microsoft.com.:443/x"), Some("winatp-gw-weu.microsoft.com."), false, Some(GW),                  true),
            // userinfo: user:password@host drops it (documented); user@host keeps it (observed)
            (Some("https://svc:pw@winatp-gw-weu.microsoft.com/"), Some(GW),                       true,  Some(GW),                      true),
            (Some("https://svc@winatp-gw-weu.microsoft.com/"), Some("svc@winatp-gw-weu.microsoft.com"), false, Some(GW),                true),
            (Some("https://winatp-gw-weu.microsoft.com@evil.example/"), Some("winatp-gw-weu.microsoft.com@evil.example"), false, Some("evil.example"), false),
            (Some("https://winatp-gw-weu.microsoft.com:443@evil.example/"), Some("evil.example"), false, Some("evil.example"),         false),
            // decision: `//host/x` has no scheme, so parse_url is not given an absolute URL and
            // Host is empty, like Kusto's documented non-URL examples; normalized takes the host.
            (Some("//winatp-gw-weu.microsoft.com/x"),         Some(""),                           false, Some(GW),                      true),
            (Some("winatp-gw-weu.microsoft.com//api"),        Some(""),                           false, Some(GW),                      true),
            // look-alikes: never a match
            (Some("winatp-gw-weu.microsoft.com.evil.net"),    Some("winatp-gw-weu.microsoft.com.evil.net"), false, Some("winatp-gw-weu.microsoft.com.evil.net"), false),
            (Some("xwinatp-gw-weu.microsoft.com"),            Some("xwinatp-gw-weu.microsoft.com"), false, Some("xwinatp-gw-weu.microsoft.com"), false),
            (Some("https://evil.example/winatp-gw-weu.microsoft.com"), Some("evil.example"),      false, Some("evil.example"),          false),
            (Some("https://evil.example/?u=https://winatp-gw-weu.microsoft.com"), Some("evil.example"), false, Some("evil.example"),    false),
            (Some("evil.example/?u=https://winatp-gw-weu.microsoft.com"), Some(""),               false, Some("evil.example"),          false),
            (Some("eu-v20.events.data.microsoft.co"),         Some("eu-v20.events.data.microsoft.co"), false, Some("eu-v20.events.data.microsoft.co"), false),
            // exact, not suffix: the reference list has events.data.microsoft.com itself
            (Some("eu-v20.events.data.microsoft.com"),        Some("eu-v20.events.data.microsoft.com"), true, Some("eu-v20.events.data.microsoft.com"), true),
            (Some("xx.events.data.microsoft.com"),            Some("xx.events.data.microsoft.com"), false, Some("xx.events.data.microsoft.com"), false),
            // IPv6: Kusto splits at the last colon; normalized keeps the bracketed literal
            (Some("ldap://[2001:db8::7]/c=GB"),               Some("[2001:db8:"),                 false, Some("2001:db8::7"),           false),
        ];
        let m = matcher();
        for (input, domain, kql, norm_host, norm) in table {
            let got_domain = input.and_then(kql_domain);
            assert_eq!(got_domain, *domain, "kql Domain of {input:?}");
            let class = m.classify(*input);
            assert_eq!(class.kql_reference, *kql, "kql match of {input:?}");
            let got_host = input.and_then(normalized_host);
            assert_eq!(got_host.as_deref(), *norm_host, "normalized host of {input:?}");
            assert_eq!(class.normalized_reference, *norm, "normalized match of {input:?}");
            assert_eq!(class.reference(MatchMode::Kql), *kql);
            assert_eq!(class.reference(MatchMode::Normalized), *norm);
            assert_eq!(class.evades_reference_query(), *norm && !*kql, "{input:?}");
        }
    }

    #[test]
    fn parse_url_follows_the_documented_example() {
        assert_eq!(
            kql_parse_url_host("scheme://username:password@host:1234/this/is/a/path?k1=v1&k2=v2#fragment"),
            "host"
        );
        assert_eq!(
            kql_parse_url_host("https://john.doe@www.example.com:123/forum/questions/?tag=networking#top"),
            "john.doe@www.example.com"
        );
        assert_eq!(kql_parse_url_host("mailto:John.Doe@example.com"), "");
        assert_eq!(kql_parse_url_host("1http://host/"), "");
        assert_eq!(kql_parse_url_host("https://host#frag"), "host");
        assert_eq!(kql_parse_url_host("https://host?q=1"), "host");
    }

    #[test]
    fn extra_hosts_and_suffix_entries() {
        let m = matcher();
        let edr = m.classify(Some("edr-weu.eu.endpoint.security.microsoft.com"));
        assert_eq!(edr.host.as_deref(), Some("edr-weu.eu.endpoint.security.microsoft.com"));
        assert!(!edr.normalized_reference && !edr.kql_reference);
        assert!(m.classify(Some("endpoint.security.microsoft.com")).host.is_none());
        assert!(m.classify(Some("x.endpoint.security.microsoft.com.evil")).host.is_none());
        assert_eq!(m.classify(Some("HTTP://CRL.MICROSOFT.COM/pki")).host.as_deref(), Some("crl.microsoft.com"));
        assert!(m.is_relevant("https://crl.microsoft.com/x"));
        assert!(m.is_relevant(GW));
        assert!(!m.is_relevant("www.bing.com"));
        assert!(!m.is_relevant(""));
    }

    /// The fast path of `is_relevant` agrees with the full classification.
    #[test]
    fn relevance_fast_path_agrees_with_classify() {
        let m = matcher().with_lookalikes(["winatp-gw-*.microsoft.com"], 2);
        let hosts = [
            "winatp-gw-weu.microsoft.com",
            "winatp-gw-xyz.microsoft.com",
            "winatp-gw-weu.rnicrosoft.com",
            "edr-weu.eu.endpoint.security.microsoft.com",
            "crl.microsoft.com",
            "www.bing.com",
            "endpoint.security.microsoft.com",
            "a.b",
            "x",
        ];
        let shapes = [
            "{}",
            "{}.",
            " {} ",
            "https://{}/p",
            "{}:443",
            "HTTP://{}",
            "//{}/x",
            "u:p@{}",
            "https://u@{}/",
            "{}/x?y#z",
            "{}-",
            "9{}",
            "https://{}",
            "https://{}:443",
            "https://{}:443/x?y=1",
            "https://{}:/x",
            "https://{}:44a/x",
            "https://{}.:443/x",
            "https://{}?q",
            "https://{}#f",
            "tcp://{}:443",
            "h+t.t-p://{}/x",
            "1http://{}/x",
            "://{}/x",
            "https:/{}/x",
            "https://{}@evil.example/x",
            "https://x@{}:443/",
            "https://[{}]:443/",
            "https://{} /x",
            "https:// {}/x",
            "https://{}/x y",
            " https://{}/x",
            "https://{}:443:8/x",
            "ftp://{}/a//b",
            "https://{}\\x",
        ];
        for host in hosts {
            for shape in shapes {
                for variant in [host.to_string(), host.to_ascii_uppercase()] {
                    let url = shape.replace("{}", &variant);
                    let full = m.classify(Some(&url));
                    let relevant = full.kql_reference || full.host.is_some() || full.lookalike.is_some();
                    assert_eq!(m.is_relevant(&url), relevant, "{url:?}");
                }
            }
        }
    }

    /// Inputs whose host, normalized again, used to change (found by the property test): the
    /// host now comes out as its own normal form.
    #[test]
    fn normalized_host_is_a_fixed_point() {
        let cases = [
            ("https:// winatp-gw-weu.microsoft.com. /", "winatp-gw-weu.microsoft.com"),
            ("https://u@ [winatp-gw-weu.microsoft.com]:443/", "winatp-gw-weu.microsoft.com"),
            ("ldap://[2001:db8::7]/c=GB", "2001:db8::7"),
            ("2001:DB8::7", "2001:db8::7"),
            ("[[::1]", "::1"),
            ("[ [x]", "x"),
            ("[a:b]", "a"),
            ("[a. :b]", "a"),
            ("host . :443", "host"),
            ("winatp-gw-weu.microsoft.com:443:1", "winatp-gw-weu.microsoft.com"),
        ];
        for (input, host) in cases {
            assert_eq!(normalized_host(input).as_deref(), Some(host), "{input:?}");
            assert_eq!(normalized_host(host).as_deref(), Some(host), "{host:?} again");
        }
        assert_eq!(normalized_host("[]"), None);
        assert_eq!(normalized_host("https:// . /"), None);
    }

    #[test]
    fn lookalikes_are_found_in_any_spelling_and_only_when_asked_for() {
        let plain = matcher();
        assert_eq!(plain.classify(Some("winatp-gw-weu.rnicrosoft.com")).lookalike, None);
        let m = matcher().with_lookalikes(["winatp-gw-*.microsoft.com"], 2);
        for url in [
            "winatp-gw-weu.rnicrosoft.com",
            "HTTPS://WINATP-GW-WEU.RNICROSOFT.COM:443/x",
            " winatp-gw-weu.rnicrosoft.com. ",
        ] {
            let class = m.classify(Some(url));
            assert_eq!(class.lookalike.as_deref(), Some("winatp-gw-weu.rnicrosoft.com"), "{url}");
            assert!(class.host.is_none() && !class.kql_reference);
        }
        assert_eq!(
            m.classify(Some("winatp-gw-xyz.microsoft.com")).lookalike.as_deref(),
            Some("winatp-gw-xyz.microsoft.com")
        );
        // listed hosts are never look-alikes, and unrelated hosts are not either
        assert_eq!(m.classify(Some(GW)).lookalike, None);
        assert_eq!(m.classify(Some("www.bing.com")).lookalike, None);
        assert!(m.is_relevant("winatp-gw-weu.rnicrosoft.com"));
        assert!(!m.is_relevant("www.bing.com"));
    }

    #[test]
    fn verbatim_list_entries_with_spaces_never_match() {
        let list = HostList::new(["go.microsoft.com "], true);
        assert!(!list.contains("go.microsoft.com"));
        assert!(list.contains("go.microsoft.com "));
        let normalized = HostList::new(["Go.Microsoft.com. "], false);
        assert!(normalized.contains("go.microsoft.com"));
    }
}
