//! What each key's turns used: written to the store at each turn's end (so every node and a
//! restart see it, `GET /v1/keys/{id}/usage`), and counted in `/metrics` on this node, labelled
//! by the key's name (never its secret or hash).

use crate::events::{ApiEvent, EventBody};
use codex_pool_store::{usage, ApiKey, ThreadStore};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What runs once a turn has ended (the shape of `runs::OnEnd`, spelled out so this module
/// needs nothing of `runs`).
pub(crate) type OnEnd = Box<dyn FnOnce(&[Arc<ApiEvent>]) -> EndWork + Send>;

/// What an [`OnEnd`] does after it has read the events.
pub(crate) type EndWork = Pin<Box<dyn Future<Output = ()> + Send>>;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyLabel {
    key: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyReasonLabel {
    key: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KeyTokensLabel {
    key: String,
    kind: &'static str,
}

/// The per-key counters of `/metrics` (this node's).
#[derive(Debug, Default)]
pub(crate) struct KeyMetrics {
    turns: Family<KeyLabel, Counter>,
    failures: Family<KeyReasonLabel, Counter>,
    tokens: Family<KeyTokensLabel, Counter>,
}

impl KeyMetrics {
    /// Names them in the registry.
    pub(crate) fn register(&self, r: &mut Registry) {
        r.register(
            "codex_pool_key_turns",
            "Turns of an API key's conversations that ended, by key name",
            self.turns.clone(),
        );
        r.register(
            "codex_pool_key_turn_failures",
            "Turns of an API key's conversations that failed, by key name and reason",
            self.failures.clone(),
        );
        r.register(
            "codex_pool_key_tokens",
            "Tokens the model reported for an API key's turns, by key name and kind (input, cached_input, output)",
            self.tokens.clone(),
        );
    }
}

/// `then` (if any), after the key's usage of the turn is written: an [`OnEnd`] of the turn.
pub(crate) fn counting(
    key: Arc<ApiKey>,
    store: Arc<dyn ThreadStore>,
    metrics: Arc<KeyMetrics>,
    then: Option<OnEnd>,
) -> OnEnd {
    Box::new(move |events: &[Arc<ApiEvent>]| -> EndWork {
        let end = events.last().filter(|e| e.is_terminal()).cloned();
        let then = then.map(|then| then(events));
        Box::pin(async move {
            if let Some(end) = end {
                record(store.as_ref(), &metrics, &key, &end).await;
            }
            if let Some(then) = then {
                then.await;
            }
        })
    })
}

/// Counts a key's turn that ended with `end` (its terminal event): in `/metrics`, and in the
/// store (a store that fails is logged; the counters stay this node's).
pub(crate) async fn record(store: &dyn ThreadStore, metrics: &KeyMetrics, key: &ApiKey, end: &ApiEvent) {
    let name = || key.name.clone();
    let mut counts = vec![(usage::TURNS.to_owned(), 1)];
    metrics.turns.get_or_create(&KeyLabel { key: name() }).inc();
    match &end.body {
        EventBody::TurnCompleted { usage: used, .. } => {
            for (what, kind, n) in [
                (usage::INPUT_TOKENS, "input", used.input_tokens),
                (usage::CACHED_INPUT_TOKENS, "cached_input", used.cached_input_tokens),
                (usage::OUTPUT_TOKENS, "output", used.output_tokens),
            ] {
                let n = n.max(0) as u64;
                metrics.tokens.get_or_create(&KeyTokensLabel { key: name(), kind }).inc_by(n);
                counts.push((what.to_owned(), n));
            }
        }
        EventBody::TurnFailed { error, .. } => {
            let reason = error.kind.as_str().to_owned();
            metrics.failures.get_or_create(&KeyReasonLabel { key: name(), reason: reason.clone() }).inc();
            counts.push((format!("{}{reason}", usage::FAILURES_PREFIX), 1));
        }
        _ => return,
    }
    if let Err(e) = store.keys().add_key_usage(&key.id, &counts).await {
        tracing::warn!(key = %key.name, error = %e, "a turn's usage could not be written to the store");
    }
}
