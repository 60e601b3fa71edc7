//! One run at a time per results store: a lock object with an expiry.
//!
//! The lock is taken by creating `_lock.json` only if it does not exist. A lock past its expiry
//! belongs to a run that died; it is taken over by replacing it only if it is still the version
//! that was read (ETag on Blob Storage), so of two runs that find the same stale lock exactly
//! one wins. A live run renews its lock in the background, and checks it still holds it right
//! before it commits: a run that lost its lock commits nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::store::{Store, StoreError, Tag};
use crate::time::format_micros;

pub const LOCK_PATH: &str = "_lock.json";

/// What a lock says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockBody {
    pub run_id: String,
    pub host: String,
    pub pid: u32,
    /// Microseconds since the epoch.
    pub acquired_at: i64,
    pub expires_at: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another run holds the results store {location}: run {holder} on {host} (pid {pid}), lock valid until {until}. \
This run was refused so the two never write the same days. Wait for that run to finish; if it is dead, the lock \
expires at {until}, or delete `{path}` by hand"
    )]
    Held { location: String, path: String, holder: String, host: String, pid: u32, until: String },
    #[error(
        "`{path}` in {location} is not a lock this job wrote ({message}); if no run is active, delete it and run again"
    )]
    Unreadable { location: String, path: String, message: String },
    #[error("this run lost its lock on {location} (it expired and another run took it over); nothing was committed")]
    Lost { location: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn now_micros() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_micros() as i64)
}

fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}

struct Shared {
    store: Arc<dyn Store>,
    body: Mutex<(LockBody, Tag)>,
    ttl: Duration,
    lost: AtomicBool,
}

impl Shared {
    /// Extends the expiry, conditional on the lock still being the version this run wrote.
    fn renew(&self) -> Result<(), LockError> {
        let mut held = self.body.lock().expect("never poisoned: no panics while held");
        let mut body = held.0.clone();
        body.expires_at = now_micros() + self.ttl.as_micros() as i64;
        let Some(tag) = self.store.replace_if(LOCK_PATH, encode(&body), &held.1)? else {
            self.lost.store(true, Ordering::SeqCst);
            return Err(LockError::Lost { location: self.store.location() });
        };
        *held = (body, tag);
        Ok(())
    }
}

fn encode(body: &LockBody) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(body).expect("a lock body serialises"))
}

fn decode(bytes: &[u8]) -> Option<LockBody> {
    serde_json::from_slice(bytes).ok()
}

/// The lock of a results store, held by this run until [`RunLock::release`] (or expiry).
pub struct RunLock {
    shared: Arc<Shared>,
    stop: Option<mpsc::Sender<()>>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for RunLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.shared.body.lock().expect("never poisoned");
        f.debug_struct("RunLock").field("body", &held.0).finish()
    }
}

impl RunLock {
    /// Takes the lock for `run_id`, or says who holds it. `ttl` is how long the lock outlives
    /// a run that stops renewing it (killed).
    pub fn acquire(store: Arc<dyn Store>, run_id: &str, ttl: Duration) -> Result<RunLock, LockError> {
        let fresh = || LockBody {
            run_id: run_id.to_string(),
            host: host_name(),
            pid: std::process::id(),
            acquired_at: now_micros(),
            expires_at: now_micros() + ttl.as_micros() as i64,
        };
        // A few rounds cover a lock released or taken over between our requests.
        for _ in 0..5 {
            let body = fresh();
            if store.put_if_absent(LOCK_PATH, encode(&body))? {
                // The version of what was just created, read back (put_if_absent returns none).
                let tag = match store.get_tagged(LOCK_PATH)? {
                    Some((bytes, tag)) if decode(&bytes).as_ref() == Some(&body) => tag,
                    _ => return Err(LockError::Lost { location: store.location() }),
                };
                return RunLock::held(store, body, tag, ttl);
            }
            let Some((bytes, tag)) = store.get_tagged(LOCK_PATH)? else { continue };
            let current = decode(&bytes).ok_or_else(|| LockError::Unreadable {
                location: store.location(),
                path: LOCK_PATH.into(),
                message: format!("{} bytes that are not a lock record", bytes.len()),
            })?;
            if current.expires_at > now_micros() && !holder_is_gone(&current) {
                return Err(LockError::Held {
                    location: store.location(),
                    path: LOCK_PATH.into(),
                    holder: current.run_id,
                    host: current.host,
                    pid: current.pid,
                    until: format_micros(current.expires_at),
                });
            }
            if let Some(tag) = store.replace_if(LOCK_PATH, encode(&body), &tag)? {
                tracing::warn!(
                    stale_run = %current.run_id,
                    expired_at = %format_micros(current.expires_at),
                    "Took over the lock of a run that stopped renewing it or whose process is gone (killed or interrupted); its uncommitted output is discarded."
                );
                return RunLock::held(store, body, tag, ttl);
            }
        }
        Err(LockError::Unreadable {
            location: store.location(),
            path: LOCK_PATH.into(),
            message: "the lock kept changing while this run tried to take it".into(),
        })
    }

    fn held(store: Arc<dyn Store>, body: LockBody, tag: Tag, ttl: Duration) -> Result<RunLock, LockError> {
        let shared = Arc::new(Shared { store, body: Mutex::new((body, tag)), ttl, lost: AtomicBool::new(false) });
        let (stop, stopped) = mpsc::channel::<()>();
        let renewer = {
            let renewing = shared.clone();
            // Renewing at a third of the expiry leaves two attempts before the lock could lapse.
            let every = (ttl / 3).max(Duration::from_millis(100));
            std::thread::Builder::new()
                .name("lock-renewer".into())
                .spawn(move || loop {
                    match stopped.recv_timeout(every) {
                        Err(mpsc::RecvTimeoutError::Timeout) => match renewing.renew() {
                            Ok(()) => {}
                            Err(LockError::Lost { .. }) => {
                                tracing::error!("The run lost its lock on the results store; it will not commit.");
                                return;
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "Could not renew the lock on the results store; retrying.")
                            }
                        },
                        _ => return,
                    }
                })
                .map_err(|e| StoreError {
                    operation: "lock",
                    location: shared.store.location(),
                    path: LOCK_PATH.into(),
                    message: format!("cannot start the lock renewer: {e}"),
                })?
        };
        Ok(RunLock { shared, stop: Some(stop), renewer: Some(renewer) })
    }

    /// Confirms the lock is still this run's and extends it; call right before committing.
    pub fn confirm(&self) -> Result<(), LockError> {
        if self.shared.lost.load(Ordering::SeqCst) {
            return Err(LockError::Lost { location: self.shared.store.location() });
        }
        self.shared.renew()
    }

    /// Stops renewing and deletes the lock if it is still this run's.
    pub fn release(mut self) -> Result<(), LockError> {
        self.stop_renewer();
        let tag = self.shared.body.lock().expect("never poisoned").1.clone();
        match self.shared.store.get_tagged(LOCK_PATH)? {
            // Between this check and the delete only an expired lock could be taken over, and
            // this run renewed it moments ago.
            Some((_, current)) if current == tag => Ok(self.shared.store.delete(LOCK_PATH)?),
            _ => Ok(()),
        }
    }

    fn stop_renewer(&mut self) {
        drop(self.stop.take());
        if let Some(renewer) = self.renewer.take() {
            let _ = renewer.join();
        }
    }
}

impl Drop for RunLock {
    fn drop(&mut self) {
        // A lock dropped without release (a failed run that could not reach the store) stops
        // renewing and lapses at its expiry.
        self.stop_renewer();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::local::LocalDir;

    #[test]
    fn a_second_run_is_refused_until_the_first_releases() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalDir::new(dir.path()));
        let first = RunLock::acquire(store.clone(), "run-a", Duration::from_secs(60)).unwrap();
        let err = RunLock::acquire(store.clone(), "run-b", Duration::from_secs(60)).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, LockError::Held { .. }), "{text}");
        assert!(text.contains("run-a") && text.contains("_lock.json") && text.contains("Wait"), "{text}");
        first.confirm().unwrap();
        first.release().unwrap();
        assert_eq!(store.get(LOCK_PATH).unwrap(), None);
        RunLock::acquire(store.clone(), "run-b", Duration::from_secs(60)).unwrap().release().unwrap();
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn the_lock_of_an_interrupted_process_on_this_host_is_taken_over_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalDir::new(dir.path()));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let gone = child.id();
        child.wait().unwrap();
        let body = |pid: u32| LockBody {
            run_id: "run-interrupted".into(),
            host: host_name(),
            pid,
            acquired_at: now_micros(),
            expires_at: now_micros() + 600_000_000,
        };
        // a live holder (this test's parent) keeps its lock
        store.put(LOCK_PATH, encode(&body(std::os::unix::process::parent_id()))).unwrap();
        let err = RunLock::acquire(store.clone(), "run-next", Duration::from_secs(60)).unwrap_err();
        assert!(matches!(err, LockError::Held { .. }), "{err}");
        // a holder whose process is gone does not make the next run wait ten minutes
        store.put(LOCK_PATH, encode(&body(gone))).unwrap();
        let next = RunLock::acquire(store.clone(), "run-next", Duration::from_secs(60)).unwrap();
        next.release().unwrap();
        // on another host the pid says nothing: the expiry decides
        store.put(LOCK_PATH, encode(&LockBody { host: "elsewhere".into(), ..body(gone) })).unwrap();
        assert!(RunLock::acquire(store.clone(), "run-next", Duration::from_secs(60)).is_err());
    }

    #[test]
    fn a_stale_lock_is_taken_over_and_its_holder_cannot_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalDir::new(dir.path()));
        let dead = RunLock::acquire(store.clone(), "run-dead", Duration::from_millis(300)).unwrap();
        // the holder stops renewing (as if killed): its lock lapses
        let mut dead = dead;
        dead.stop_renewer();
        std::thread::sleep(Duration::from_millis(400));
        let next = RunLock::acquire(store.clone(), "run-next", Duration::from_secs(60)).unwrap();
        let body = decode(&store.get(LOCK_PATH).unwrap().unwrap()).unwrap();
        assert_eq!(body.run_id, "run-next");
        assert!(matches!(dead.confirm(), Err(LockError::Lost { .. })));
        dead.release().unwrap();
        assert!(store.get(LOCK_PATH).unwrap().is_some(), "releasing a lost lock leaves the new holder's lock");
        next.release().unwrap();
    }

    #[test]
    fn the_renewer_keeps_a_long_run_locked() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalDir::new(dir.path()));
        let lock = RunLock::acquire(store.clone(), "run-long", Duration::from_millis(300)).unwrap();
        std::thread::sleep(Duration::from_millis(900));
        assert!(matches!(
            RunLock::acquire(store.clone(), "run-other", Duration::from_secs(1)),
            Err(LockError::Held { .. })
        ));
        lock.confirm().unwrap();
        lock.release().unwrap();
    }

    #[test]
    fn a_foreign_lock_object_is_reported_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(LocalDir::new(dir.path()));
        store.put(LOCK_PATH, Bytes::from_static(b"not json")).unwrap();
        let err = RunLock::acquire(store.clone(), "run", Duration::from_secs(1)).unwrap_err().to_string();
        assert!(err.contains("not a lock this job wrote") && err.contains("delete it"), "{err}");
    }
}

/// A holder on this very machine whose process no longer exists (Ctrl-C, SIGTERM, a crash) will
/// never renew or release its lock: waiting for the expiry would only delay the resume.
fn holder_is_gone(holder: &LockBody) -> bool {
    cfg!(target_os = "linux")
        && holder.host != "unknown-host"
        && holder.host == host_name()
        && holder.pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{}", holder.pid)).exists()
}
