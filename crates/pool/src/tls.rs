//! The root certificates of the pool's codex processes ([`codex_pool_process::ca`]). One owner,
//! [`TlsRoots`], decides them when the pool starts and publishes them on a `watch`; each
//! supervisor reads them when it spawns a process. When a turn on a reduced bundle reports a
//! failed connection, the watcher task checks with its own handshake whether the bundle is to
//! blame (it rejects a chain the system roots accept); if so it switches the pool to the system
//! roots, once, and the supervisors replace their processes. Turns cut short by that end with
//! [`AbortReason::CaBundleReplaced`], which tells the caller to send them again.

use crate::config::PoolConfig;
use codex_pool_process::ca::{CaError, CaSetup, Diagnosis, HttpsHost, ModelHosts, VerifyError};
use codex_pool_process::{AbortReason, CaFiles, ResolvedCa, TurnEvent};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{mpsc, watch, OnceCell};
use tokio::time::Instant;

/// Connection failures closer together than this are checked once.
const MIN_PROBE_INTERVAL: Duration = Duration::from_secs(5);

/// The roots the pool's processes get now.
#[derive(Debug, Clone, Default)]
pub(crate) struct CaState {
    /// Bumped when the roots change after start; a process spawned with an older epoch has
    /// the old roots.
    pub epoch: u64,
    /// What codex gets (`None` until the pool starts).
    pub ca: Option<ResolvedCa>,
    /// Whether connection failures are checked against the bundle (a reduced bundle for an
    /// https provider).
    pub watched: bool,
    /// Why the pool fell back to the system roots after start, when it did.
    pub fell_back: Option<String>,
}

impl CaState {
    /// The variables a new process gets.
    pub(crate) fn files(&self) -> Option<CaFiles> {
        self.ca.as_ref().and_then(|c| c.files.clone())
    }
}

/// The root certificates the pool's processes trust, as [`crate::PoolStats`] reports them.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct CaStats {
    /// `minimal`, `auto`, `system` or the path of the user's bundle (`unresolved` before start).
    pub bundle: String,
    /// Certificates in it (absent when codex reads the system store itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub roots: Option<usize>,
    /// Why `auto` ended on the system roots at start, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// Why the pool switched to the system roots after start, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fell_back: Option<String>,
}

/// The owner of the pool's roots.
pub(crate) struct TlsRoots {
    /// The provider's base URL (`None`: codex's OpenAI provider).
    provider_url: Option<String>,
    /// The setup, with hosts still to be read from the URL.
    pending: CaSetup,
    setup: OnceCell<CaSetup>,
    state: watch::Sender<CaState>,
    alarm: mpsc::Sender<()>,
    alarms: Mutex<Option<mpsc::Receiver<()>>>,
}

impl TlsRoots {
    pub(crate) fn new(config: &PoolConfig) -> Self {
        let pending = CaSetup {
            bundle: config.ca_bundle.clone(),
            hosts: ModelHosts::PlainHttp,
            system: config.system_roots.clone(),
            dir: config.ca_dir.clone(),
            probe_timeout: config.tls_probe_timeout,
        };
        let (alarm, alarms) = mpsc::channel(1);
        Self {
            provider_url: config.process.provider_url.clone(),
            pending,
            setup: OnceCell::new(),
            state: watch::channel(CaState::default()).0,
            alarm,
            alarms: Mutex::new(Some(alarms)),
        }
    }

    /// Decides the roots, once (concurrent callers wait for the first). Only a bad setting
    /// fails (an unreadable or empty bundle file, a provider URL that cannot be read); `auto`
    /// without network ends on the system roots, with a warning.
    pub(crate) async fn resolve(&self) -> Result<(), CaError> {
        self.setup
            .get_or_try_init(|| async {
                let hosts = ModelHosts::of_provider(self.provider_url.as_deref())?;
                let setup = CaSetup { hosts, ..self.pending.clone() };
                let ca = setup.resolve().await?;
                if let Some(note) = &ca.note {
                    tracing::warn!(note = %note, "CA bundle: auto found no reduced bundle; codex gets the system roots");
                }
                tracing::info!(bundle = %ca.kind, roots = ?ca.roots, "CA bundle for the pool's codex processes");
                let watched = ca.is_reduced() && matches!(setup.hosts, ModelHosts::Https(_));
                self.state.send_modify(|s| {
                    s.ca = Some(ca);
                    s.watched = watched;
                });
                Ok(setup)
            })
            .await
            .map(|_| ())
    }

    /// The supervisors' view.
    pub(crate) fn subscribe(&self) -> watch::Receiver<CaState> {
        self.state.subscribe()
    }

    /// What a turn on a process spawned with roots `epoch` needs to report failures and to
    /// explain its end; `None` when nothing is watched and its process has the current roots.
    pub(crate) fn for_turn(&self, epoch: u64) -> Option<TurnTls> {
        let state = self.state.subscribe();
        let needed = {
            let now = state.borrow();
            now.watched || now.epoch != epoch
        };
        needed.then(|| TurnTls { alarm: self.alarm.clone(), state, spawned_epoch: epoch, alarmed: false })
    }

    /// A snapshot.
    pub(crate) fn stats(&self) -> CaStats {
        let state = self.state.borrow();
        CaStats {
            bundle: state.ca.as_ref().map_or_else(|| "unresolved".to_owned(), |c| c.kind.to_string()),
            roots: state.ca.as_ref().and_then(|c| c.roots),
            note: state.ca.as_ref().and_then(|c| c.note.clone()),
            fell_back: state.fell_back.clone(),
        }
    }

    /// Switches the pool to the system roots; the supervisors replace their processes.
    fn fall_back(&self, setup: &CaSetup, host: &HttpsHost, error: &VerifyError) {
        let why = format!("codex could not verify {host} with the reduced CA bundle ({error}); the system roots do");
        match setup.system_roots(None) {
            Ok(system) => {
                tracing::warn!(
                    %host,
                    %error,
                    "the reduced CA bundle rejects the model's certificate: codex processes restart with the system roots"
                );
                self.state.send_modify(|s| {
                    s.epoch += 1;
                    s.ca = Some(system);
                    s.watched = false;
                    s.fell_back = Some(why);
                });
            }
            Err(e) => {
                tracing::warn!(%host, error = %e, "the reduced CA bundle rejects the model's certificate, and the system roots cannot be set")
            }
        }
    }
}

/// Checks connection failures that turns report; ends after a fall-back, or at shutdown.
pub(crate) async fn watch_failures(roots: std::sync::Arc<TlsRoots>, mut shutdown: watch::Receiver<bool>) {
    let alarms = roots.alarms.lock().unwrap_or_else(|p| p.into_inner()).take();
    let (Some(mut alarms), Some(setup)) = (alarms, roots.setup.get().cloned()) else { return };
    let mut last_probe: Option<Instant> = None;
    loop {
        tokio::select! {
            alarm = alarms.recv() => if alarm.is_none() { return },
            _ = shutdown.changed() => return,
        }
        let state = roots.state.borrow().clone();
        let Some(ca) = state.ca.filter(|_| state.watched) else { return };
        if last_probe.is_some_and(|t| t.elapsed() < MIN_PROBE_INTERVAL) {
            continue;
        }
        last_probe = Some(Instant::now());
        let diagnosis = tokio::select! {
            d = setup.diagnose(&ca) => d,
            _ = shutdown.changed() => return,
        };
        match diagnosis {
            Diagnosis::BundleRejects { host, error } => {
                roots.fall_back(&setup, &host, &error);
                return;
            }
            Diagnosis::NotTheBundle(why) => {
                tracing::debug!(why = %why, "a model connection failed, not because of the CA bundle")
            }
        }
    }
}

/// A turn's link to the roots' owner: a cheap handle.
pub(crate) struct TurnTls {
    alarm: mpsc::Sender<()>,
    state: watch::Receiver<CaState>,
    spawned_epoch: u64,
    alarmed: bool,
}

impl TurnTls {
    /// Reports the turn's first failed model connection; explains an end caused by a switch
    /// of the roots after its process started.
    pub(crate) fn observe(&mut self, event: &mut TurnEvent) {
        if !self.alarmed && connection_failed(event) {
            self.alarmed = true;
            // Full: a check is already due.
            let _ = self.alarm.try_send(());
        }
        if let TurnEvent::Aborted {
            reason: reason @ (AbortReason::ProcessExited | AbortReason::ModelUnreachable),
            message,
        } = event
        {
            if self.state.borrow().epoch != self.spawned_epoch {
                *message = format!(
                    "codex could not verify the model's certificate with the reduced CA bundle, so the pool switched \
                     its processes to the system roots and restarted them ({message}); nothing of the turn was kept: \
                     send it again"
                );
                *reason = AbortReason::CaBundleReplaced;
            }
        }
    }
}

/// Whether codex says it could not reach the model, or the turn gave up on it. codex (0.169, 0.171)
/// reports a certificate it cannot verify as an `error` whose `codexErrorInfo` is a connection
/// kind with no HTTP status (`{"responseStreamDisconnected": {"httpStatusCode": null}}`: no
/// response came); a status means the server answered, so TLS worked.
fn connection_failed(event: &TurnEvent) -> bool {
    match event {
        TurnEvent::Error { error, .. } => error
            .codex_error_info
            .as_ref()
            .and_then(|info| ConnectionFailure::deserialize(info).ok())
            .is_some_and(|failure| failure.no_response()),
        TurnEvent::Aborted { reason, .. } => *reason == AbortReason::ModelUnreachable,
        _ => false,
    }
}

/// The connection kinds of codex's `CodexErrorInfo` (app-server protocol v2); its other kinds
/// (`contextWindowExceeded`, `unauthorized`, ...) do not deserialize as one.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
enum ConnectionFailure {
    HttpConnectionFailed(HttpStatus),
    ResponseStreamConnectionFailed(HttpStatus),
    ResponseStreamDisconnected(HttpStatus),
    ResponseTooManyFailedAttempts(HttpStatus),
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HttpStatus {
    #[serde(default)]
    http_status_code: Option<u16>,
}

impl ConnectionFailure {
    fn no_response(&self) -> bool {
        let (ConnectionFailure::HttpConnectionFailed(s)
        | ConnectionFailure::ResponseStreamConnectionFailed(s)
        | ConnectionFailure::ResponseStreamDisconnected(s)
        | ConnectionFailure::ResponseTooManyFailedAttempts(s)) = self;
        s.http_status_code.is_none()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codex_pool_protocol::types::TurnError;

    fn turn_tls(epoch_now: u64, spawned: u64) -> (TurnTls, mpsc::Receiver<()>, watch::Sender<CaState>) {
        let (alarm, alarms) = mpsc::channel(1);
        let (tx, state) = watch::channel(CaState { epoch: epoch_now, watched: true, ..CaState::default() });
        (TurnTls { alarm, state, spawned_epoch: spawned, alarmed: false }, alarms, tx)
    }

    fn error(message: &str, info: serde_json::Value) -> TurnEvent {
        let error = TurnError { message: message.into(), codex_error_info: Some(info), additional_details: None };
        TurnEvent::Error { error, will_retry: true }
    }

    #[test]
    fn a_failed_connection_is_reported_once_per_turn() {
        let (mut tls, mut alarms, _state) = turn_tls(1, 1);
        // The server answered (TLS worked), or something else went wrong: no check.
        let answered = serde_json::json!({"responseStreamConnectionFailed": {"httpStatusCode": 502}});
        tls.observe(&mut error("Reconnecting... 1/5 (unexpected status 502 Bad Gateway)", answered));
        tls.observe(&mut error("Connection failed", serde_json::json!("contextWindowExceeded")));
        let no_info = TurnError { message: "Reconnecting...".into(), codex_error_info: None, additional_details: None };
        tls.observe(&mut TurnEvent::Error { error: no_info, will_retry: true });
        assert!(alarms.try_recv().is_err(), "not a failed connection");
        // What codex (0.169, 0.171) sends when it cannot verify the model's certificate.
        let no_response = serde_json::json!({"responseStreamDisconnected": {"httpStatusCode": null}});
        tls.observe(&mut error("Reconnecting... waiting for network", no_response.clone()));
        tls.observe(&mut error("Reconnecting... 1/2", serde_json::json!({"httpConnectionFailed": {}})));
        assert!(alarms.try_recv().is_ok());
        assert!(alarms.try_recv().is_err(), "once per turn");
        // A turn that gave up on the model is one too.
        let (mut tls, mut alarms, _state) = turn_tls(1, 1);
        let message = "model unreachable".to_owned();
        tls.observe(&mut TurnEvent::Aborted { reason: AbortReason::ModelUnreachable, message });
        assert!(alarms.try_recv().is_ok());
    }

    #[test]
    fn an_end_after_a_switch_of_the_roots_says_to_send_the_turn_again() {
        let aborted = |reason| TurnEvent::Aborted { reason, message: "codex process exited".into() };
        let (mut tls, _alarms, state) = turn_tls(1, 1);
        let mut end = aborted(AbortReason::ProcessExited);
        tls.observe(&mut end);
        assert_eq!(end, aborted(AbortReason::ProcessExited), "same roots: unchanged");
        state.send_modify(|s| s.epoch = 2);
        let mut end = aborted(AbortReason::ProcessExited);
        tls.observe(&mut end);
        let TurnEvent::Aborted { reason: AbortReason::CaBundleReplaced, message } = end else { panic!("{end:?}") };
        assert!(message.contains("send it again") && message.contains("codex process exited"), "{message}");
        let mut shutdown = aborted(AbortReason::Shutdown);
        tls.observe(&mut shutdown);
        assert_eq!(shutdown, aborted(AbortReason::Shutdown));
    }
}
