//! `bench --long`: what a rebuild costs against a conversation's length.
//!
//! For each length N of `--long`, one conversation is created with an N-turn history (user
//! messages of about 1,100 characters and the fake model's `echo: ...` replies), then makes
//! [`ROUNDS`] rounds of one turn followed by a release, so that every turn after the first rebuilds
//! its codex thread from the store. The fake model runs with `--tokens-from-size` (codex's
//! compaction threshold bites as with a real model) and writes every request to a log, which
//! gives each turn's model requests: the compactions (the last user message is the compaction
//! prompt) apart from the rest. Beside them, the stored transcript's own size: what a rebuild from
//! the whole transcript would have sent.

use crate::error::{BenchError, IoContext};
use crate::measure::proc_cpu;
use crate::mock_child::MockChild;
use crate::result::round;
use crate::{pool_config, pool_turn, scratch, BenchArgs};
use clap::Args;
use codex_pool::{ConversationId, Pool};
use codex_pool_mock_model::{last_user_text, COMPACT_PROMPT};
use codex_pool_process::SystemRoots;
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_store::SqliteStore;
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Turns per conversation length: the first on the thread made at creation, the others each on a
/// thread rebuilt after a release.
pub(crate) const ROUNDS: usize = 3;

/// Options of `bench --long`.
#[derive(Debug, Args)]
pub(crate) struct LongArgs {
    /// Instead of the load: for each history length N (turns), a conversation created with that
    /// history, then three rounds of one turn and a release (the next turn rebuilds its thread);
    /// report each turn's model requests (compactions apart), their bytes, its latency and codex
    /// CPU, beside the stored transcript's size.
    #[arg(long, value_name = "N,...", value_delimiter = ',')]
    pub(crate) long: Option<Vec<usize>>,
    /// --long: the compaction threshold of --profile, in tokens (default: codex's own).
    #[arg(long, value_name = "TOKENS", requires = "long")]
    pub(crate) long_threshold: Option<u64>,
}

/// The lengths of `--long`, ascending, each once; an error naming the flag when one is 0 or none
/// is given.
pub(crate) fn lengths(asked: &[usize]) -> Result<Vec<usize>, BenchError> {
    if asked.is_empty() || asked.contains(&0) {
        return Err(BenchError::Flags(
            "--long: give conversation lengths of 1 turn or more, e.g. 10,100,1000".to_owned(),
        ));
    }
    let mut lengths = asked.to_vec();
    lengths.sort_unstable();
    lengths.dedup();
    Ok(lengths)
}

/// A user message of about 1,100 characters starting with `tag`.
fn message(tag: &str) -> String {
    format!("{tag} {}", "lorem ipsum dolor sit amet ".repeat(40))
}

/// An N-turn history as [`Pool::create_thread_with_history`] takes it: a user message and the
/// fake model's echo of it, N times.
fn history(turns: usize) -> Vec<Value> {
    let item = |role: &str, kind: &str, text: &str| json!({"type": "message", "role": role, "content": [{"type": kind, "text": text}]});
    (0..turns)
        .flat_map(|t| {
            let text = message(&format!("history turn {t}"));
            [item("user", "input_text", &text), item("assistant", "output_text", &format!("echo: {text}"))]
        })
        .collect()
}

/// One request the fake model logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Logged {
    bytes: u64,
    /// It asked for a summary of the conversation (codex's compaction).
    compaction: bool,
}

impl Logged {
    fn of(body: &[u8]) -> Self {
        let parsed: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
        let input = parsed["input"].as_array().map(Vec::as_slice).unwrap_or_default();
        let compaction = last_user_text(input).is_some_and(|t| t.starts_with(COMPACT_PROMPT));
        Self { bytes: body.len() as u64, compaction }
    }
}

/// The fake model's request log (`NNNNNN.json`, numbered from 1), read in order.
struct RequestLog {
    dir: PathBuf,
    read: u64,
}

impl RequestLog {
    /// The requests logged since the last call (the fake model writes each before it answers).
    fn new_requests(&mut self) -> Result<Vec<Logged>, BenchError> {
        let mut out = Vec::new();
        loop {
            let path = self.dir.join(format!("{:06}.json", self.read + 1));
            match std::fs::read(&path) {
                Ok(body) => out.push(Logged::of(&body)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                Err(e) => return Err(e).doing(format!("reading the fake model's log {}", path.display())),
            }
            self.read += 1;
        }
    }
}

/// What one turn of a round cost.
#[derive(Debug, Default, PartialEq)]
struct Round {
    rebuilt: bool,
    transcript_bytes: u64,
    requests: Vec<Logged>,
    latency: Duration,
    codex_cpu: Duration,
    ok: bool,
}

impl Round {
    fn json(&self, n: usize) -> Value {
        let (compactions, turn): (Vec<Logged>, Vec<Logged>) = self.requests.iter().partition(|r| r.compaction);
        let bytes = |rs: &[Logged]| rs.iter().map(|r| r.bytes).sum::<u64>();
        json!({
            "round": n,
            "rebuilt": self.rebuilt,
            "transcript_bytes": self.transcript_bytes,
            "model_requests": turn.len(),
            "request_bytes": bytes(&turn),
            "compactions": compactions.len(),
            "compaction_bytes": bytes(&compactions),
            "latency_ms": round(self.latency.as_secs_f64() * 1e3),
            "codex_cpu_ms": round(self.codex_cpu.as_secs_f64() * 1e3),
            "ok": self.ok,
        })
    }
}

/// The bytes of a conversation's stored items, each as JSON: the transcript a rebuild would give
/// codex whole; and how many compactions it records.
async fn transcript(pool: &Pool, id: &ConversationId) -> Result<(u64, usize), BenchError> {
    let items = pool.all_items(id).await?;
    let bytes = items.iter().map(|i| i.item.to_string().len() as u64).sum();
    let compactions = items.iter().filter(|i| i.item["type"] == "codex_pool.compaction").count();
    Ok((bytes, compactions))
}

/// One turn of ~1,100 characters on `id`, measured, its model requests read from `log`.
async fn measured_turn(pool: &Pool, id: &ConversationId, tag: &str, log: &mut RequestLog) -> Result<Round, BenchError> {
    let (transcript_bytes, _) = transcript(pool, id).await?;
    let cpu = |pool: &Pool| pool.stats().slots.iter().filter_map(|s| s.pid).map(proc_cpu).sum::<Duration>();
    let (cpu0, rebuilds0) = (cpu(pool), pool.stats().counters.rebuilds);
    let text = message(tag);
    let begun = Instant::now();
    let (_, reply) = pool_turn(pool, id, &text).await;
    let latency = begun.elapsed();
    Ok(Round {
        rebuilt: pool.stats().counters.rebuilds > rebuilds0,
        transcript_bytes,
        requests: log.new_requests()?,
        latency,
        codex_cpu: cpu(pool).saturating_sub(cpu0),
        ok: reply == format!("echo: {text}"),
    })
}

/// `bench --long`: the line's `long` (one entry per length), with the threshold used.
pub(crate) async fn run(args: &BenchArgs, asked: &[usize], exe: &Path, bin: &Path) -> Result<Value, BenchError> {
    let lengths = lengths(asked)?;
    let dir = scratch()?;
    let mut log = RequestLog { dir: dir.path().join("model-requests"), read: 0 };
    let mock = MockChild::spawn_logging(exe, args.deltas, &log.dir).await?;
    let mut config =
        pool_config(args, (args.profile, &args.ca_bundle, &SystemRoots::Inherited), bin, &mock, dir.path());
    if let Some(tokens) = args.long.long_threshold {
        config.compact_token_limits = vec![(codex_pool::CompactScope::Profile(args.profile), tokens)];
    }
    let pool = Pool::new(config, Arc::new(SqliteStore::open(dir.path().join("threads.db"))?));
    let result = async {
        pool.ensure_started().await?;
        let mut out = Vec::new();
        for n in lengths {
            let begun = Instant::now();
            let id = pool
                .create_thread_with_history(ThreadSettings::default(), args.profile, Map::new(), history(n))
                .await?;
            let create_ms = round(begun.elapsed().as_secs_f64() * 1e3);
            log.new_requests()?;
            let mut rounds = Vec::new();
            for r in 1..=ROUNDS {
                rounds.push(measured_turn(&pool, &id, &format!("length {n} round {r}"), &mut log).await?);
                pool.release_thread(&id).await?;
            }
            let (transcript_bytes, kept) = transcript(&pool, &id).await?;
            out.push(json!({
                "history_turns": n,
                "create_ms": create_ms,
                "rounds": rounds.iter().enumerate().map(|(i, r)| r.json(i + 1)).collect::<Vec<_>>(),
                "rebuilt_compactions": rounds[1..].iter().flat_map(|r| &r.requests).filter(|r| r.compaction).count(),
                "transcript_bytes_at_end": transcript_bytes,
                "compactions_kept": kept,
            }));
        }
        Ok::<_, BenchError>(out)
    }
    .await;
    pool.shutdown().await;
    mock.stop().await;
    Ok(json!({
        "mode": "long",
        "profile": args.profile.name(),
        "threshold_tokens": args.long.long_threshold,
        "pool_size": args.pool_size,
        "long": result?,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_ascend_once_each_and_refuse_zero() {
        assert_eq!(lengths(&[1000, 10, 100, 10]).unwrap(), [10, 100, 1000]);
        assert!(matches!(lengths(&[10, 0]), Err(BenchError::Flags(m)) if m.contains("--long")));
        assert!(lengths(&[]).is_err());
    }

    #[test]
    fn a_history_is_user_messages_of_1100_characters_and_their_echoes() {
        let h = history(3);
        assert_eq!(h.len(), 6);
        let text = h[2]["content"][0]["text"].as_str().unwrap();
        assert!(text.starts_with("history turn 1 ") && (1_000..1_200).contains(&text.len()), "{text}");
        assert_eq!(h[3]["role"], "assistant");
        assert_eq!(h[3]["content"][0]["text"], format!("echo: {text}"));
    }

    #[test]
    fn a_logged_request_is_a_compaction_when_its_last_user_message_is_the_prompt() {
        let body = |last: &str| {
            json!({"input": [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hello"}]},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": last}]},
            ]})
            .to_string()
        };
        let turn = body("hello again");
        assert_eq!(Logged::of(turn.as_bytes()), Logged { bytes: turn.len() as u64, compaction: false });
        let compaction = body(&format!("{COMPACT_PROMPT} Summarise."));
        assert!(Logged::of(compaction.as_bytes()).compaction);
        assert!(!Logged::of(b"not json").compaction);
    }

    #[test]
    fn a_round_counts_compactions_apart() {
        let requests = vec![Logged { bytes: 2_000, compaction: true }, Logged { bytes: 300, compaction: false }];
        let r = Round { rebuilt: true, transcript_bytes: 5_000, requests, ok: true, ..Round::default() };
        let v = r.json(2);
        assert_eq!(
            (v["round"].as_u64(), v["model_requests"].as_u64(), v["request_bytes"].as_u64()),
            (Some(2), Some(1), Some(300))
        );
        assert_eq!((v["compactions"].as_u64(), v["compaction_bytes"].as_u64()), (Some(1), Some(2_000)));
        assert_eq!(v["transcript_bytes"], 5_000);
    }

    #[test]
    fn the_request_log_is_read_in_order_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = RequestLog { dir: dir.path().to_path_buf(), read: 0 };
        assert!(log.new_requests().unwrap().is_empty());
        std::fs::write(dir.path().join("000001.json"), "{}").unwrap();
        std::fs::write(dir.path().join("000002.json"), "{\"input\":[]}").unwrap();
        let bytes: Vec<u64> = log.new_requests().unwrap().iter().map(|r| r.bytes).collect();
        assert_eq!(bytes, [2, 12]);
        assert!(log.new_requests().unwrap().is_empty());
        std::fs::write(dir.path().join("000003.json"), "{}").unwrap();
        assert_eq!(log.new_requests().unwrap().len(), 1);
    }
}
