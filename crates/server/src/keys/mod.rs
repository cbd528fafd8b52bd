//! API keys on the service: who a request is ([`Caller`]: the operator, or an application's
//! key), what it may see (its own conversations only, [`guard`]), its limits ([`limits`]) and
//! usage ([`usage`]), and the operator's routes that manage keys ([`admin`]).
//!
//! A request's bearer is the operator's token (compared in constant time), or an API key: its
//! SHA-256 looked up in the store, then compared in constant time ([`ApiKey::matches`]). Keys
//! are cached for at most [`CACHE_FOR`], so a key revoked on any node is refused everywhere
//! within it. Keys work only with an operator token set (`Service::listen` refuses otherwise).

pub(crate) mod admin;
pub(crate) mod guard;
pub(crate) mod limits;
pub(crate) mod touch;
pub(crate) mod usage;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use codex_pool_store::{hash_secret, looks_like_key, ApiKey, ThreadStore};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a key read from the store is trusted: a revocation takes effect within it.
pub(crate) const CACHE_FOR: Duration = Duration::from_millis(500);

/// How often a key's `last_used_at_ms` is written, at most, per node.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// Entries past which the cache is emptied (random bearers must not grow it without bound).
const CACHE_CAP: usize = 10_000;

tokio::task_local! {
    /// The caller of the request whose handler runs in this task (the guard sets it).
    static CALLER: Caller;
}

/// The caller of the request being handled (the operator outside a request, or with no token).
/// Work a handler hands to another task takes what it needs of it along.
pub(crate) fn caller() -> Caller {
    CALLER.try_with(Caller::clone).unwrap_or(Caller::Operator)
}

/// Runs `f` (a request's handling) as `caller`.
pub(crate) async fn as_caller<F: std::future::Future>(caller: Caller, f: F) -> F::Output {
    CALLER.scope(caller, f).await
}

/// Makes the caller, if a key, the owner of a conversation it just created, within the key's
/// `max_conversations` (checked again now that the new one counts: see
/// [`limits::conversation_made`]). On an error the caller deletes the conversation.
pub(crate) async fn own(
    pool: &codex_pool::Pool,
    metrics: &crate::metrics::Metrics,
    caller: &Caller,
    id: &codex_pool::ConversationId,
) -> Result<(), crate::error::ApiError> {
    let Some(key) = caller.key() else { return Ok(()) };
    if !pool.store().keys().set_owner(id, &key.id).await? {
        tracing::warn!(conversation = %id, "a new conversation already had another owner");
    }
    limits::conversation_made(pool.store().as_ref(), metrics, key).await
}

/// A key as read from the store, and when (`None`: no key has that hash).
type Cached = (Instant, Option<Arc<ApiKey>>);

/// Who sent a request (a request extension the guard sets; the operator when there is none).
#[derive(Debug, Clone)]
pub(crate) enum Caller {
    /// The operator's token, or no token set at all: sees everything.
    Operator,
    /// An application's API key: sees its own conversations only.
    Key(Arc<ApiKey>),
}

impl Caller {
    /// The key's id (`None`: the operator).
    pub(crate) fn key_id(&self) -> Option<&str> {
        match self {
            Caller::Operator => None,
            Caller::Key(key) => Some(&key.id),
        }
    }

    /// The key (`None`: the operator).
    pub(crate) fn key(&self) -> Option<&Arc<ApiKey>> {
        match self {
            Caller::Operator => None,
            Caller::Key(key) => Some(key),
        }
    }

    /// Whether it may see a conversation owned by `owner` (`None`: the operator's).
    pub(crate) fn owns(&self, owner: Option<&str>) -> bool {
        match self {
            Caller::Operator => true,
            Caller::Key(key) => owner == Some(key.id.as_str()),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned().unwrap_or(Caller::Operator))
    }
}

/// The operator's token and the keys in the store, as the guard checks them.
pub(crate) struct Auth {
    /// The operator's token (`None`: no token; every request is the operator's).
    pub(crate) token: Option<String>,
    store: Arc<dyn ThreadStore>,
    /// Keys by the hash of their secret, with when they were read (`None`: no such key).
    cache: Mutex<HashMap<[u8; 32], Cached>>,
    /// When this node last wrote each key's `last_used_at_ms`.
    touched: Mutex<HashMap<String, Instant>>,
    /// Where a key's last use is queued for writing.
    touches: touch::Touches,
    /// Where limits that bite are counted.
    pub(crate) metrics: Arc<crate::metrics::Metrics>,
    /// The turns each key runs on this node.
    pub(crate) running: Arc<limits::Running>,
}

impl Auth {
    /// The token and the store holding the keys; a key's last use is queued on `touches`.
    pub(crate) fn new(
        token: Option<String>,
        store: Arc<dyn ThreadStore>,
        touches: touch::Touches,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Self {
        let (cache, touched) = (Mutex::default(), Mutex::default());
        Self { token, store, cache, touched, touches, metrics, running: Arc::default() }
    }

    /// The store.
    pub(crate) fn store(&self) -> &Arc<dyn ThreadStore> {
        &self.store
    }

    /// Who carries `bearer`: `None` when it is neither the token nor a live key.
    pub(crate) async fn identify(&self, bearer: &str) -> Result<Option<Caller>, codex_pool_store::StoreError> {
        let Some(token) = self.token.as_deref() else { return Ok(Some(Caller::Operator)) };
        if same(bearer.as_bytes(), token.as_bytes()) {
            return Ok(Some(Caller::Operator));
        }
        if !looks_like_key(bearer) {
            return Ok(None);
        }
        let hash = hash_secret(bearer);
        let key = match self.cached(&hash) {
            Some(key) => key,
            None => {
                let key = self.store.keys().key_by_hash(&hash).await?.map(Arc::new);
                let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if cache.len() >= CACHE_CAP {
                    cache.clear();
                }
                cache.insert(hash, (Instant::now(), key.clone()));
                key
            }
        };
        let Some(key) = key.filter(|k| !k.is_revoked() && k.matches(bearer)) else { return Ok(None) };
        self.touch(&key);
        Ok(Some(Caller::Key(key)))
    }

    fn cached(&self, hash: &[u8; 32]) -> Option<Option<Arc<ApiKey>>> {
        let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.get(hash).filter(|(at, _)| at.elapsed() < CACHE_FOR).map(|(_, key)| key.clone())
    }

    /// Queues the key's last use for writing, at most once a minute per node, off the
    /// request's path (the service's [`touch::Toucher`] writes it).
    fn touch(&self, key: &ApiKey) {
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        if touched.get(&key.id).is_some_and(|at| at.elapsed() < TOUCH_EVERY) {
            return;
        }
        // A touch dropped (queue full) is tried again on the key's next request.
        if self.touches.send(&key.id, codex_pool_store::now_ms()) {
            touched.insert(key.id.clone(), Instant::now());
        }
    }
}

/// Whether two byte strings are equal, in a time that depends on their lengths only.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let differences = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(differences) == 0
}
