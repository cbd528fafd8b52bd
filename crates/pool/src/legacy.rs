//! Conversations of the first release, whose history is in codex's rollout files rather than in
//! the store: their items are read from the rollout once, on their first rebuild.

use crate::turn::is_codex_context;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The conversation items of a thread's rollout (`CODEX_HOME/sessions/**/rollout-*-<id>.jsonl`),
/// without the context codex writes itself; `None` when there is no rollout for the thread.
pub(crate) fn rollout_items(codex_home: &Path, thread_id: &str) -> std::io::Result<Option<Vec<Value>>> {
    let Some(path) = find_rollout(&codex_home.join("sessions"), thread_id)? else { return Ok(None) };
    let text = std::fs::read_to_string(path)?;
    let items = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["type"] == "response_item")
        .map(|mut line| line["payload"].take())
        .filter(|item| !is_codex_context(item))
        .collect();
    Ok(Some(items))
}

fn find_rollout(dir: &Path, thread_id: &str) -> std::io::Result<Option<PathBuf>> {
    let suffix = format!("-{thread_id}.jsonl");
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.ends_with(&suffix)) {
                return Ok(Some(path));
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_conversation_out_of_a_rollout() {
        let home = tempfile::tempdir().unwrap();
        let day = home.path().join("sessions/2026/11/25");
        std::fs::create_dir_all(&day).unwrap();
        // The shape of a rollout written by the pinned codex (one line per record).
        let lines = [
            r#"{"type":"session_meta","payload":{"id":"t1"}}"#,
            r#"{"type":"response_item","payload":{"type":"message","role":"developer","content":[{"type":"input_text","text":"You are Ada."}]}}"#,
            r#"{"type":"response_item","payload":{"type":"message","role":"user","content":[{"type":"input_text","text":"<environment_context>x</environment_context>"}]}}"#,
            r#"{"type":"turn_context","payload":{}}"#,
            r#"{"type":"response_item","payload":{"type":"message","role":"user","content":[{"type":"input_text","text":"hello"}]}}"#,
            r#"{"type":"event_msg","payload":{"type":"item_completed"}}"#,
            r#"{"type":"response_item","payload":{"type":"message","role":"assistant","content":[{"type":"output_text","text":"echo: hello"}]}}"#,
        ];
        std::fs::write(day.join("rollout-2026-11-25T18-41-35-t1.jsonl"), lines.join("\n")).unwrap();
        let items = rollout_items(home.path(), "t1").unwrap().unwrap();
        let texts: Vec<&str> = items.iter().map(|i| i["content"][0]["text"].as_str().unwrap()).collect();
        assert_eq!(texts, ["hello", "echo: hello"]);
        assert_eq!(rollout_items(home.path(), "t2").unwrap(), None);
        assert_eq!(rollout_items(&home.path().join("nowhere"), "t1").unwrap(), None);
    }
}
