//! Hosts that look like Defender for Endpoint's own but are on no list: a name of an MDE naming
//! pattern (`winatp-gw-*.microsoft.com`, sample-storage accounts, …) or a name within a small
//! edit distance of a listed one (`winatp-gw-weu.rnicrosoft.com`). They are checked on the
//! normalized host, so the spellings that hide a host from the reference query hide no
//! look-alike either.
//!
//! This runs for every row whose host is not listed, so it is built to say "no" fast: each
//! thread remembers its recent answers (host names repeat heavily), and a new name meets a
//! length window first, then patterns by their literal ends, then a banded edit distance that
//! gives up as soon as the distance must exceed the limit.

use super::memo::Question;

/// Why a host is a look-alike.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LookalikeReason<'a> {
    /// It matches an MDE naming pattern.
    Pattern(&'a str),
    /// It is `distance` edits away from a listed host.
    Near { listed: &'a str, distance: usize },
}

/// A glob pattern (`*` for any run of characters), split once at its stars so that matching
/// allocates nothing: most hosts fail on the literal prefix or suffix.
#[derive(Debug, Clone)]
struct Pattern {
    text: String,
    prefix: String,
    middle: Vec<String>,
    suffix: String,
    /// No star at all: the whole text must equal the host.
    exact: bool,
}

impl Pattern {
    fn new(text: &str) -> Pattern {
        let text = text.trim().to_ascii_lowercase();
        let parts: Vec<&str> = text.split('*').collect();
        let exact = parts.len() == 1;
        let prefix = parts[0].to_string();
        let suffix = if exact { String::new() } else { parts[parts.len() - 1].to_string() };
        let middle = if parts.len() > 2 {
            parts[1..parts.len() - 1].iter().map(|p| p.to_string()).collect()
        } else {
            Vec::new()
        };
        Pattern { text, prefix, middle, suffix, exact }
    }

    fn matches(&self, host: &str) -> bool {
        if self.exact {
            return host == self.text;
        }
        if host.len() < self.prefix.len() + self.suffix.len()
            || !host.starts_with(&self.prefix)
            || !host.ends_with(&self.suffix)
        {
            return false;
        }
        let mut rest = &host[self.prefix.len()..host.len() - self.suffix.len()];
        for part in &self.middle {
            match rest.find(part.as_str()) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        true
    }
}

#[derive(Debug, Clone)]
pub struct Lookalikes {
    /// This configuration's question to the per-thread memory of answers (clones share it).
    memo: Question,
    patterns: Vec<Pattern>,
    /// Listed exact names with their character sets, indexed by length.
    by_length: Vec<Vec<(String, u64)>>,
    max_distance: usize,
}

impl Lookalikes {
    pub fn new<'p, 'l>(
        patterns: impl IntoIterator<Item = &'p str>,
        listed: impl IntoIterator<Item = &'l str>,
        max_distance: usize,
    ) -> Lookalikes {
        let mut by_length: Vec<Vec<(String, u64)>> = Vec::new();
        let mut names: Vec<String> = listed.into_iter().map(|h| h.to_ascii_lowercase()).collect();
        names.sort();
        names.dedup();
        for name in names {
            if by_length.len() <= name.len() {
                by_length.resize(name.len() + 1, Vec::new());
            }
            let set = char_set(name.as_bytes());
            by_length[name.len()].push((name, set));
        }
        Lookalikes {
            memo: Question::new(),
            patterns: patterns.into_iter().map(Pattern::new).collect(),
            by_length,
            max_distance,
        }
    }

    /// The listed names a host could be within the edit limit of: of a length in the window,
    /// and with a character set that `k` edits can turn into the host's (each edit takes away
    /// at most one character and brings at most one, so the sets differ in at most `2k`). Most
    /// names fail the sets in a few instructions, before any distance is computed.
    fn candidates(&self, host: &str) -> impl Iterator<Item = &String> {
        let k = self.max_distance;
        let from = host.len().saturating_sub(k);
        let to = (host.len() + k).min(self.by_length.len().saturating_sub(1));
        let window = if k == 0 || host.is_empty() || from > to { &[][..] } else { &self.by_length[from..=to] };
        let set = if window.is_empty() { 0 } else { char_set(host.as_bytes()) };
        window
            .iter()
            .flatten()
            .filter(move |(_, listed)| (set ^ listed).count_ones() as usize <= 2 * k)
            .map(|(name, _)| name)
    }

    /// Whether an unlisted, normalized host is a look-alike. This runs for every row: a host
    /// seen recently on this thread is answered from memory, a new one stops at the first
    /// evidence.
    pub fn matches(&self, host: &str) -> bool {
        self.memo.answer(host.as_bytes(), || self.decide(host))
    }

    fn decide(&self, host: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(host))
            || self.candidates(host).any(|listed| {
                distance_within(host.as_bytes(), listed.as_bytes(), self.max_distance).is_some_and(|d| d > 0)
            })
    }

    /// Why an unlisted, normalized host is a look-alike: the first matching pattern, else the
    /// nearest listed host (ties to the alphabetically first).
    pub fn reason(&self, host: &str) -> Option<LookalikeReason<'_>> {
        if let Some(pattern) = self.patterns.iter().find(|p| p.matches(host)) {
            return Some(LookalikeReason::Pattern(&pattern.text));
        }
        let mut best: Option<(usize, &str)> = None;
        for listed in self.candidates(host) {
            let limit = best.map_or(self.max_distance, |(d, _)| d);
            if let Some(d) = distance_within(host.as_bytes(), listed.as_bytes(), limit) {
                if d > 0 && best.is_none_or(|(bd, bl)| (d, listed.as_str()) < (bd, bl)) {
                    best = Some((d, listed));
                }
            }
        }
        best.map(|(distance, listed)| LookalikeReason::Near { listed, distance })
    }
}

/// The characters of a name as bits (bytes folded onto 64 bits: a shared bit only makes sets
/// look closer, so the candidate test stays a necessary condition).
fn char_set(name: &[u8]) -> u64 {
    name.iter().fold(0, |set, &c| set | 1 << (c % 64))
}

/// The Levenshtein distance of `a` and `b` when it is at most `limit` (0..=7), else `None`.
/// Only the diagonal band `|i - j| <= limit` can hold such a distance, so a row is the band
/// alone (`2 * limit + 1` cells, indexed by `j - i + limit`), and once a whole row exceeds the
/// limit no later row can come back under it: most unrelated names are rejected after a few
/// characters.
pub fn distance_within(a: &[u8], b: &[u8], limit: usize) -> Option<usize> {
    const MAX_LIMIT: usize = 7;
    let (n, m) = (a.len(), b.len());
    if n.abs_diff(m) > limit || limit > MAX_LIMIT {
        return None;
    }
    let k = limit;
    let over = (k + 1) as u8;
    // cell `d` of a row is column `j = i + d - k`; one extra cell on the right stays `over`
    let mut previous = [over; 2 * MAX_LIMIT + 2];
    let mut current = [over; 2 * MAX_LIMIT + 2];
    for j in 0..=k.min(m) {
        previous[k + j] = j as u8;
    }
    for i in 1..=n {
        let mut row_min = over;
        for d in 0..=2 * k {
            let j = (i + d) as isize - k as isize;
            let cell = if j < 0 || j as usize > m {
                over
            } else if j == 0 {
                (i.min(k + 1)) as u8
            } else {
                let j = j as usize;
                let substitute = previous[d] + u8::from(a[i - 1] != b[j - 1]);
                let delete = previous[d + 1] + 1;
                let insert = if d > 0 { current[d - 1] + 1 } else { over };
                substitute.min(delete).min(insert).min(over)
            };
            current[d] = cell;
            row_min = row_min.min(cell);
        }
        if row_min > k as u8 {
            return None;
        }
        std::mem::swap(&mut previous, &mut current);
    }
    let last = previous[m + k - n] as usize;
    (last <= k).then_some(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain dynamic programme, to check the banded one against.
    fn levenshtein(a: &[u8], b: &[u8]) -> usize {
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for i in 1..=a.len() {
            let mut diagonal = row[0];
            row[0] = i;
            for j in 1..=b.len() {
                let above = row[j];
                row[j] = (diagonal + usize::from(a[i - 1] != b[j - 1])).min(above + 1).min(row[j - 1] + 1);
                diagonal = above;
            }
        }
        row[b.len()]
    }

    #[test]
    fn banded_distance_agrees_with_the_full_one() {
        let words = [
            "",
            "a",
            "ab",
            "ba",
            "abc",
            "winatp-gw-weu.microsoft.com",
            "winatp-gw-weuu.microsoft.com",
            "winatp-gw-weu.rnicrosoft.com",
            "xwinatp-gw-weu.microsoft.co",
            "winatp.gw.weu.microsoft.com",
            "crl.microsoft.com",
            "cdn.microsoft.com",
            "graph.microsoft.com",
        ];
        for a in words {
            for b in words {
                let full = levenshtein(a.as_bytes(), b.as_bytes());
                for limit in 0..4 {
                    let want = (full <= limit).then_some(full);
                    assert_eq!(distance_within(a.as_bytes(), b.as_bytes(), limit), want, "{a:?} {b:?} {limit}");
                }
            }
        }
    }

    /// Every name one or two edits away from a listed one (all single edits over a small
    /// alphabet, and pairs of them) is still a candidate: the character-set filter only ever
    /// drops names the distance would reject too.
    #[test]
    fn the_character_set_filter_keeps_every_name_within_the_limit() {
        let listed = ["crl.microsoft.com", "winatp-gw-weu.microsoft.com", "ctldl.windowsupdate.com"];
        let l = Lookalikes::new([], listed, 2);
        let alphabet = b"ab.-0mrzA";
        let edits = |name: &[u8]| -> Vec<Vec<u8>> {
            let mut out = Vec::new();
            for i in 0..=name.len() {
                for &c in alphabet {
                    let mut inserted = name.to_vec();
                    inserted.insert(i, c);
                    out.push(inserted);
                    if i < name.len() {
                        let mut substituted = name.to_vec();
                        substituted[i] = c;
                        out.push(substituted);
                    }
                }
                if i < name.len() {
                    let mut deleted = name.to_vec();
                    deleted.remove(i);
                    out.push(deleted);
                }
            }
            out
        };
        let (mut checked, mut near) = (0, 0);
        for name in listed {
            let once = edits(name.as_bytes());
            let twice = once.iter().step_by(7).flat_map(|n| edits(n).into_iter().step_by(5));
            for candidate in once.iter().cloned().chain(twice) {
                let Ok(host) = String::from_utf8(candidate) else { continue };
                let kept: Vec<&String> = l.candidates(&host).collect();
                for other in listed {
                    if distance_within(host.as_bytes(), other.as_bytes(), 2).is_some() {
                        assert!(kept.iter().any(|k| k.as_str() == other), "{host:?} within 2 of {other:?}");
                        near += 1;
                    }
                }
                checked += 1;
            }
        }
        assert!(checked > 5_000 && near > 5_000, "{checked} names, {near} near pairs");
        // and it does drop unrelated names of a fitting length
        assert_eq!(l.candidates("www.google.comxx").count(), 0);
        assert_eq!(char_set(b"ab"), char_set(b"ba"));
    }

    #[test]
    fn patterns_and_near_names() {
        let l = Lookalikes::new(
            ["winatp-gw-*.microsoft.com", "automatedirstrprd*.blob.core.windows.net"],
            ["winatp-gw-weu.microsoft.com", "crl.microsoft.com", "ctldl.windowsupdate.com"],
            2,
        );
        assert_eq!(
            l.reason("winatp-gw-xyz.microsoft.com"),
            Some(LookalikeReason::Pattern("winatp-gw-*.microsoft.com"))
        );
        assert_eq!(
            l.reason("winatp-gw-weu.rnicrosoft.com"),
            Some(LookalikeReason::Near { listed: "winatp-gw-weu.microsoft.com", distance: 2 })
        );
        assert_eq!(
            l.reason("ctldl.windowsupdate.co"),
            Some(LookalikeReason::Near { listed: "ctldl.windowsupdate.com", distance: 1 })
        );
        assert!(l.matches("automatedirstrprdweu4.blob.core.windows.net"));
        // three edits, another registrable name, a listed name itself: not look-alikes
        assert!(!l.matches("winatp-gw-weu.micr0s0ft.c0m"));
        assert!(!l.matches("graph.microsoft.com"));
        assert!(!l.matches("www.google.com"));
        assert!(!l.matches("crl.microsoft.com"));
        assert!(!l.matches(""));
        let off = Lookalikes::new([], ["crl.microsoft.com"], 0);
        assert!(!off.matches("cr1.microsoft.com"));
    }

    #[test]
    fn patterns_match_like_the_globs_they_are() {
        for (pattern, host, want) in [
            ("winatp-gw-*.microsoft.com", "winatp-gw-x.microsoft.com", true),
            ("winatp-gw-*.microsoft.com", "winatp-gw-.microsoft.com", true),
            ("winatp-gw-*.microsoft.com", "winatp-gw.microsoft.com", false),
            ("winatp-gw-*.microsoft.com", "winatp-gw-x.microsoft.com.evil", false),
            ("uss*prod.blob.core.windows.net", "ussus9westprod.blob.core.windows.net", true),
            ("*-v20.events.data.microsoft.com", "xx-v20.events.data.microsoft.com", true),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "acb", false),
            ("exact.host", "exact.host", true),
            ("exact.host", "exact.hostx", false),
        ] {
            assert_eq!(Pattern::new(pattern).matches(host), want, "{pattern} {host}");
        }
        // matches() and reason() agree
        let l = Lookalikes::new(["winatp-gw-*.microsoft.com"], ["winatp-gw-weu.microsoft.com", "crl.microsoft.com"], 2);
        for host in [
            "winatp-gw-weu.rnicrosoft.com",
            "winatp-gw-q.microsoft.com",
            "cr1.microsoft.co",
            "www.bing.com",
            "crl.microsoft.com",
        ] {
            assert_eq!(l.matches(host), l.reason(host).is_some(), "{host}");
        }
    }
}
