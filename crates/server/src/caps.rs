//! Caps on what a client may make the service hold per conversation (its instructions and
//! metadata, on every route that creates one) and per page of a list, so that one request
//! cannot make the service hold or answer megabytes it never needed.

use crate::error::ApiError;
use axum::http::StatusCode;
use serde_json::{Map, Value};

/// The caps; see [`crate::ServiceConfig::caps`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SettingsCaps {
    /// The most bytes (UTF-8) of `instructions` and of `developer_instructions`, each (chat's
    /// system and developer messages too). Default 64 KiB: several times codex's own prompt.
    pub instructions_bytes: usize,
    /// The most metadata pairs (default 16, as OpenAI).
    pub metadata_pairs: usize,
    /// The most characters of a metadata key (default 64, as OpenAI).
    pub metadata_key_chars: usize,
    /// The most characters of a metadata value (default 512, as OpenAI; on the native API a
    /// value may be any JSON, counted as its JSON text).
    pub metadata_value_chars: usize,
    /// The most bytes of JSON a page of a list holds (`GET /v1/conversations`, `.../items`):
    /// a page stops early, with `next_after`, once it holds that much (always one entry at least).
    pub page_bytes: usize,
}

impl Default for SettingsCaps {
    fn default() -> Self {
        Self {
            instructions_bytes: 64 << 10,
            metadata_pairs: 16,
            metadata_key_chars: 64,
            metadata_value_chars: 512,
            page_bytes: 1 << 20,
        }
    }
}

/// A setting over its cap: the field, and the answer.
#[derive(Debug)]
pub(crate) struct OverCap {
    /// The request field at fault.
    pub(crate) field: String,
    /// The answer (413 for text over its cap, 400 for metadata).
    pub(crate) error: ApiError,
}

impl From<OverCap> for ApiError {
    fn from(over: OverCap) -> Self {
        over.error
    }
}

impl From<OverCap> for crate::openai::error::OpenAiError {
    fn from(over: OverCap) -> Self {
        crate::openai::error::OpenAiError::from(over.error).param(over.field)
    }
}

impl SettingsCaps {
    /// Each text field given must fit `instructions_bytes`.
    pub(crate) fn texts(&self, fields: &[(&str, Option<&str>)]) -> Result<(), OverCap> {
        for (field, text) in fields {
            let Some(text) = text else { continue };
            if text.len() > self.instructions_bytes {
                let message = format!(
                    "`{field}` is {} bytes; the service takes at most {} (--max-instructions-bytes)",
                    text.len(),
                    self.instructions_bytes
                );
                let error = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "settings_too_large", message);
                return Err(OverCap { field: (*field).to_owned(), error });
            }
        }
        Ok(())
    }

    /// Metadata must fit its caps; `strings_only`: every value a string (OpenAI's rule).
    pub(crate) fn metadata(&self, field: &str, map: &Map<String, Value>, strings_only: bool) -> Result<(), OverCap> {
        let value_chars = |v: &Value| match v {
            Value::String(s) => Some(s.chars().count()),
            _ if strings_only => None,
            other => Some(other.to_string().chars().count()),
        };
        let fits = map.len() <= self.metadata_pairs
            && map.iter().all(|(k, v)| {
                k.chars().count() <= self.metadata_key_chars
                    && value_chars(v).is_some_and(|n| n <= self.metadata_value_chars)
            });
        if fits {
            return Ok(());
        }
        let values = if strings_only { "string values" } else { "values" };
        let message = format!(
            "`{field}` is at most {} pairs: keys up to {} characters, {values} up to {} (--max-metadata-pairs, \
             --max-metadata-key-chars, --max-metadata-value-chars)",
            self.metadata_pairs, self.metadata_key_chars, self.metadata_value_chars
        );
        Err(OverCap { field: field.to_owned(), error: ApiError::invalid(message) })
    }
}

/// Takes entries from the front of `entries` while the page's JSON stays within `budget` bytes
/// (the first always); returns them and whether some were left out.
pub(crate) fn within_budget<T: serde::Serialize>(entries: Vec<T>, budget: usize) -> (Vec<T>, bool) {
    let (mut used, total) = (0usize, entries.len());
    let mut page = Vec::with_capacity(total);
    for entry in entries {
        let size = serde_json::to_vec(&entry).map_or(0, |v| v.len() + 1);
        if !page.is_empty() && used + size > budget {
            break;
        }
        used += size;
        page.push(entry);
    }
    let cut = page.len() < total;
    (page, cut)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn metadata_caps() {
        let caps = SettingsCaps::default();
        let ok = json!({"k": "v", "n": 1});
        assert!(caps.metadata("metadata", ok.as_object().unwrap(), false).is_ok());
        assert!(caps.metadata("metadata", ok.as_object().unwrap(), true).is_err());
        let many: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        assert!(caps.metadata("metadata", &many, false).is_err());
        let long = json!({"k": "x".repeat(513)});
        assert!(caps.metadata("metadata", long.as_object().unwrap(), false).is_err());
    }

    #[test]
    fn pages_stop_at_their_budget_but_hold_one() {
        let entries = vec!["x".repeat(10), "y".repeat(10), "z".repeat(10)];
        assert_eq!(within_budget(entries.clone(), 30).0.len(), 2);
        assert_eq!(within_budget(entries.clone(), 1), (vec!["x".repeat(10)], true));
        assert!(!within_budget(entries, 1000).1);
    }
}
