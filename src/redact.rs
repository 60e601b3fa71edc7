//! Secrets out of everything the job prints or keeps: log lines (text and JSON), the final
//! error, `check`'s report, the run record and the outbox.
//!
//! The job holds no keys, but secrets still reach it: the bearer tokens its identity obtains,
//! the `IDENTITY_HEADER` of the platform, and whatever an operator pastes into the wrong field
//! (a connection string as an endpoint, a storage key as an account name, a SAS URL). A server
//! may echo a request's headers in its error body, a TOML error quotes the offending line. So the
//! text is scrubbed where it leaves the process, of two kinds of secret:
//!
//! - values the process *knows* are secret ([`register`]): every token its credential hands
//!   out, and the secret variables of its environment ([`register_environment`]);
//! - values that *look* secret: `sig=`, `AccountKey=`, `client_secret = "…"`, `Bearer …`,
//!   JSON Web Tokens (`eyJ…`), and long base64 runs (storage account keys are 88 characters).

use std::borrow::Cow;
use std::io::Write;
use std::sync::RwLock;

/// What a secret is replaced with.
pub const REDACTED: &str = "<redacted>";

/// Secrets known by value, longest first. Bounded: a token refreshed every hour for a week of
/// running is still a short list.
static KNOWN: RwLock<Vec<String>> = RwLock::new(Vec::new());
const MAX_KNOWN: usize = 256;

/// Shorter values are not scrubbed by value (they would match ordinary words).
const MIN_KNOWN: usize = 8;

/// Environment variables whose values are secrets wherever they appear.
pub const SECRET_VARIABLES: [&str; 10] = [
    "IDENTITY_HEADER",
    "MSI_SECRET",
    "AZURE_CLIENT_SECRET",
    "AZURE_CLIENT_CERTIFICATE_PASSWORD",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_STORAGE_ACCESS_KEY",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_SAS_KEY",
];

/// Remembers `secret` so that [`redact`] removes it from every later text.
pub fn register(secret: &str) {
    let secret = secret.trim();
    if secret.len() < MIN_KNOWN {
        return;
    }
    let mut known = KNOWN.write().unwrap_or_else(|e| e.into_inner());
    if known.iter().any(|k| k == secret) {
        return;
    }
    if known.len() >= MAX_KNOWN {
        known.remove(0);
    }
    known.push(secret.to_string());
    known.sort_by_key(|k| std::cmp::Reverse(k.len()));
}

/// Registers the values of [`SECRET_VARIABLES`] that are set.
pub fn register_environment() {
    for name in SECRET_VARIABLES {
        if let Ok(value) = std::env::var(name) {
            register(&value);
        }
    }
}

/// Keys whose value is a secret, compared in lower case: `key=value`, `key: value`,
/// `key = "value"`, `"key":"value"`.
const SECRET_KEYS: [&str; 17] = [
    "sig",
    "accountkey",
    "account_key",
    "access_key",
    "accesskey",
    "sharedaccesskey",
    "sharedaccesssignature",
    "client_secret",
    "clientsecret",
    "secret",
    "password",
    "pwd",
    "access_token",
    "refresh_token",
    "sas_token",
    "x-identity-header",
    "x-ms-identity-header",
];

/// `text` with every secret replaced by [`REDACTED`]; borrowed when there was none.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut out: Cow<'_, str> = Cow::Borrowed(text);
    {
        let known = KNOWN.read().unwrap_or_else(|e| e.into_inner());
        for secret in known.iter() {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
    }
    match scrub_patterns(&out) {
        Some(scrubbed) => Cow::Owned(scrubbed),
        None => out,
    }
}

/// [`redact`] into an owned string.
pub fn redacted(text: &str) -> String {
    redact(text).into_owned()
}

fn is_word(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// Where a secret value ends: whitespace, a separator or a quote (also escaped, as in JSON logs).
fn ends_value(byte: u8) -> bool {
    byte.is_ascii_whitespace() || b"&;,\"'`\\)]}<>|".contains(&byte)
}

fn is_base64(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'+' || byte == b'/'
}

fn is_base64url(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_'
}

/// Byte ranges of secret-looking values in `text`; `None` when there are none.
fn scrub_patterns(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let lower = text.to_ascii_lowercase();
    let lower = lower.as_bytes();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(end) = secret_value_after_key(bytes, lower, i) {
            ranges.push(end);
            i = end.1.max(i + 1);
            continue;
        }
        if let Some(range) = token_at(bytes, i) {
            ranges.push(range);
            i = range.1;
            continue;
        }
        i += 1;
    }
    if ranges.is_empty() {
        return None;
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (start, end) in ranges {
        out.push_str(&text[at..start]);
        out.push_str(REDACTED);
        at = end;
    }
    out.push_str(&text[at..]);
    Some(out)
}

/// At `i`, a secret key (or `Bearer`) at a word boundary followed by its value: the value's range.
fn secret_value_after_key(bytes: &[u8], lower: &[u8], i: usize) -> Option<(usize, usize)> {
    if i > 0 && (is_word(bytes[i - 1]) || bytes[i - 1] == b'-') {
        return None;
    }
    let rest = &lower[i..];
    if rest.starts_with(b"bearer ") {
        let start = i + "bearer ".len();
        let end = start + bytes[start..].iter().take_while(|b| !ends_value(**b)).count();
        return (end - start >= MIN_KNOWN).then_some((start, end));
    }
    let key = SECRET_KEYS.iter().find(|k| rest.starts_with(k.as_bytes()))?;
    let mut at = i + key.len();
    if at < bytes.len() && (is_word(bytes[at]) || bytes[at] == b'-') {
        return None;
    }
    // `"key":` in JSON (possibly escaped), then the separator and an opening quote
    while at < bytes.len() && matches!(bytes[at], b'"' | b'\'' | b'\\') {
        at += 1;
    }
    while at < bytes.len() && matches!(bytes[at], b' ' | b'\t') {
        at += 1;
    }
    if at >= bytes.len() || !matches!(bytes[at], b'=' | b':') {
        return None;
    }
    at += 1;
    while at < bytes.len() && matches!(bytes[at], b' ' | b'\t' | b'"' | b'\'' | b'\\') {
        at += 1;
    }
    let start = at;
    let end = start + bytes[start..].iter().take_while(|b| !ends_value(**b)).count();
    (end - start >= 4).then_some((start, end))
}

/// At `i`, a JSON Web Token or a long base64 run (an account key): its range.
fn token_at(bytes: &[u8], i: usize) -> Option<(usize, usize)> {
    if i > 0 && is_base64(bytes[i - 1]) {
        return None;
    }
    if bytes[i..].starts_with(b"eyJ") {
        let end = i + bytes[i..].iter().take_while(|b| is_base64url(**b) || **b == b'.').count();
        if end - i >= 20 && bytes[i..end].contains(&b'.') {
            return Some((i, end));
        }
    }
    let run = bytes[i..].iter().take_while(|b| is_base64(**b)).count();
    if run < 64 {
        return None;
    }
    let value = &bytes[i..i + run];
    let mixed = value.iter().any(u8::is_ascii_uppercase)
        && value.iter().any(u8::is_ascii_lowercase)
        && value.iter().any(u8::is_ascii_digit);
    if !mixed {
        return None;
    }
    let end = i + run + bytes[i + run..].iter().take(2).take_while(|b| **b == b'=').count();
    Some((i, end))
}

/// A writer that scrubs what it is given before passing it on: the log sink. It collects one
/// log event (tracing formats each into one buffer) and writes it, redacted, when dropped or
/// flushed; write errors of the target are swallowed, so a closed stderr does not stop a run.
pub struct Redacting<W: Write> {
    inner: W,
    buffer: Vec<u8>,
}

impl<W: Write> Redacting<W> {
    pub fn new(inner: W) -> Redacting<W> {
        Redacting { inner, buffer: Vec::new() }
    }

    fn emit(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.buffer);
        let _ = self.inner.write_all(redact(&text).as_bytes());
        let _ = self.inner.flush();
        self.buffer.clear();
    }
}

impl<W: Write> Write for Redacting<W> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.emit();
        Ok(())
    }
}

impl<W: Write> Drop for Redacting<W> {
    fn drop(&mut self) {
        self.emit();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "FAKEKEYq0Xz7mJ2vN8pR4sT6uW1yA3cE5gI7kM9oQ2sU4wY6aC8eG0iK2mO4qS6uW8yA0cE2gI4kM6oQ8sU0w==";

    #[test]
    fn secret_shapes_are_scrubbed() {
        let cases = [
            ("https://a.blob.core.windows.net/c?sv=2022-11-02&sig=FAKESIGabc%2Fdef&se=1", "FAKESIG"),
            ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=FAKEKEYabc/def==;EndpointSuffix=x", "FAKEKEY"),
            ("3 | client_secret = \"FAKESECRET-1234\"", "FAKESECRET"),
            (r#"{"error":"echo","access_token":"FAKETOKEN-5678"}"#, "FAKETOKEN"),
            (r#"message="Authorization: Bearer FAKEBEARER.abc.def""#, "FAKEBEARER"),
            ("a token eyJhbGciOiJSUzI1NiJ9.eyJhdWQiOiJ4In0.c2ln in text", "eyJhbGci"),
            (&format!("`{KEY}` is not a storage account name"), "FAKEKEY"),
            ("x-identity-header: hdr-secret-value", "hdr-secret"),
            (r#"{\"client_secret\":\"FAKESECRET-9\"}"#, "FAKESECRET"),
        ];
        for (text, secret) in cases {
            let out = redact(text);
            assert!(!out.contains(secret) && out.contains(REDACTED), "{text} -> {out}");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in [
            "cannot reach the storage endpoint http://127.0.0.1:10000/devstoreaccount1 (connection refused)",
            "design=1 signal=2 assign: x",
            "DeviceId 3f9a1c0e5b7d9f1a3c5e7a9b1d3f5a7c9e1b3d5f seen",
            "the token was refused: the job's identity must get tokens",
            "insights-logs-advancedhunting-devicenetworkevents/tenantId=4b8c18bd-2f9f-4227-af55-9f1061cf9c32/y=2026",
        ] {
            assert_eq!(redact(text), text);
        }
    }

    #[test]
    fn registered_values_are_scrubbed_anywhere() {
        register("mi-token for https://monitor.azure.com 0451");
        let out = redact("HTTP 403: token mi-token for https://monitor.azure.com 0451 refused");
        assert_eq!(out, "HTTP 403: token <redacted> refused");
        register("short");
        assert_eq!(redact("a short word"), "a short word");
    }

    #[test]
    fn the_writer_scrubs_each_event() {
        let mut sink = Vec::new();
        {
            let mut writer = Redacting::new(&mut sink);
            writer.write_all(b"endpoint ?sig=FAKESIG123 failed\n").unwrap();
        }
        assert_eq!(String::from_utf8(sink).unwrap(), "endpoint ?sig=<redacted> failed\n");
    }
}
