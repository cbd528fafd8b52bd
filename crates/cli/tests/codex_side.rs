//! What a client can make codex and the fake model do inside `codex-pool serve`: directives that
//! would exhaust memory, the service's secrets in codex's environment, a model stream that stalls.
//! The real binary on its built-in fake model, the real pinned codex.

mod common;

use codex_pool_server::client::{Client, SseEvent};
use common::Served;
use serde_json::{json, Value};
use std::process::Stdio;
use std::time::Duration;

/// `codex-pool serve` on its built-in fake model (which runs inside it), with `envs` and `args`
/// (one process unless they say `--pool-size`).
fn serve_builtin(data_dir: &std::path::Path, token: Option<&str>, envs: &[(&str, &str)], args: &[&str]) -> Served {
    serve_logged(data_dir, token, envs, args, Stdio::inherit())
}

/// [`serve_builtin`] with its log (stderr) where asked.
fn serve_logged(
    data_dir: &std::path::Path,
    token: Option<&str>,
    envs: &[(&str, &str)],
    args: &[&str],
    stderr: Stdio,
) -> Served {
    common::serve_on(data_dir, token, stderr, envs, args)
}

async fn conversation(client: &Client, body: Value) -> String {
    let created = client.post("/v1/conversations", body).await.unwrap().json().unwrap();
    created["id"].as_str().expect("created").to_owned()
}

async fn turn(client: &Client, id: &str, text: &str) -> Vec<SseEvent> {
    let mut events = client.stream(&format!("/v1/conversations/{id}/turns"), json!({"text": text})).await.unwrap();
    let mut seen = Vec::new();
    while let Some(e) = tokio::time::timeout(Duration::from_secs(90), events.next()).await.unwrap().unwrap() {
        seen.push(e);
    }
    seen
}

fn last(events: &[SseEvent]) -> &SseEvent {
    events.last().expect("the turn sent events")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directive_with_a_huge_count_is_clamped_and_the_service_lives_on() {
    let data = tempfile::tempdir().unwrap();
    let served = serve_builtin(data.path(), None, &[], &[]);
    served.ready().await;
    let client = &served.client;
    let id = conversation(client, json!({})).await;
    // Unclamped, this made the fake model (inside serve) allocate terabytes and abort. The text
    // is long enough for no piece to be empty (codex passes no empty delta on).
    let text = format!("{} [mock:deltas=1000000000000]", "x".repeat(2 * codex_pool_mock_model::MAX_DELTAS));
    let events = turn(client, &id, &text).await;
    assert_eq!(last(&events).event, "turn.completed", "{:?}", last(&events).data);
    let deltas = events.iter().filter(|e| e.event == "text.delta").count();
    assert_eq!(deltas, codex_pool_mock_model::MAX_DELTAS, "the clamped number of deltas");
    let reply: String =
        events.iter().filter(|e| e.event == "text.delta").filter_map(|e| e.data["delta"].as_str()).collect();
    assert_eq!(reply, format!("echo: {text}"));
    assert!(client.get("/healthz").await.is_ok(), "the service lives on");
    let events = turn(client, &id, "again").await;
    assert_eq!(last(&events).event, "turn.completed", "{:?}", last(&events).data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_processes_get_none_of_the_services_secrets() {
    let data = tempfile::tempdir().unwrap();
    let db = data.path().join("threads.db");
    // An MCP server named by a bare command (`sh`, found on PATH) that writes down the
    // environment codex gave it.
    let scripts = tempfile::tempdir().unwrap();
    let script = scripts.path().join("mcp-env.sh");
    let dump = scripts.path().join("mcp-env.txt");
    std::fs::write(&script, format!("env > {}\n", dump.display())).unwrap();
    let mcp = format!("envdump=sh {}", script.display());
    let secrets = [
        ("CODEX_POOL_TOKEN", "token-canary-5b1f"),
        ("DATABASE_URL", "postgres://pool:password-canary-77c2@127.0.0.1:1/pool"),
        ("SOME_SERVICE_SECRET", "canary-90ad"),
    ];
    let args = ["--pool-size", "2", "--db", db.to_str().unwrap(), "--allow-profile", "codex", "--allow-mcp", &mcp];
    let served = serve_builtin(data.path(), Some("token-canary-5b1f"), &secrets, &args);
    served.ready().await;
    let client = &served.client;
    common_wait_all(client).await;
    let pool = client.get("/v1/pool").await.unwrap().json().unwrap();
    let pids: Vec<u64> = pool["processes"].as_array().unwrap().iter().map(|p| p["pid"].as_u64().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{pool}");
    // Turns work: codex found what it needs; the coding agent's MCP server was started.
    let id = conversation(client, json!({})).await;
    assert_eq!(last(&turn(client, &id, "hello").await).event, "turn.completed");
    let agent = conversation(client, json!({"profile": "codex", "tools": ["envdump"]})).await;
    assert_eq!(last(&turn(client, &agent, "hello").await).event, "turn.completed");
    let mcp_env = std::fs::read_to_string(&dump).expect("codex started the MCP server by its bare name");
    let environs =
        pids.iter().map(|pid| (format!("codex {pid}"), std::fs::read(format!("/proc/{pid}/environ")).unwrap()));
    for (who, environ) in environs.chain([("the MCP server".to_owned(), mcp_env.into_bytes())]) {
        let environ = String::from_utf8_lossy(&environ).replace('\n', "\0");
        let names: Vec<&str> = environ.split('\0').filter_map(|kv| kv.split_once('=').map(|(k, _)| k)).collect();
        for (name, value) in secrets {
            assert!(!names.contains(&name), "{who} has {name}: {names:?}");
            assert!(!environ.contains(value), "{who} has the value of {name}");
        }
        assert!(names.contains(&"PATH"), "{who} lacks PATH: {names:?}");
    }
}

async fn common_wait_all(client: &Client) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let pool = client.get("/v1/pool").await.unwrap().json().unwrap();
        let processes = pool["processes"].as_array().cloned().unwrap_or_default();
        if !processes.is_empty() && processes.iter().all(|p| p["healthy"] == true && p["pid"].is_u64()) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "not every process serves: {pool}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_stream_that_stalls_mid_reply_ends_as_model_stalled() {
    let data = tempfile::tempdir().unwrap();
    let served = serve_builtin(data.path(), None, &[], &["--progress-timeout-secs", "3"]);
    served.ready().await;
    let client = &served.client;
    let id = conversation(client, json!({})).await;
    let events = turn(client, &id, "a long answer [mock:deltas=8] [mock:stall_after=3]").await;
    let end = last(&events);
    assert_eq!(end.event, "turn.failed", "{:?}", end.data);
    assert_eq!(end.data["error"]["kind"], "model_stalled", "{:?}", end.data);
    let message = end.data["error"]["message"].as_str().unwrap();
    assert!(message.contains("stalled") && message.contains("after 3 text deltas"), "{message}");
    assert!(!message.contains("retrying requests"), "{message}");
    // The conversation goes on.
    assert_eq!(last(&turn(client, &id, "next").await).event, "turn.completed");
}

/// Files under `dir` whose bytes hold `marker`, as paths relative to `dir`.
fn files_holding(dir: &std::path::Path, marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else if std::fs::read(&path).is_ok_and(|b| b.windows(marker.len()).any(|w| w == marker.as_bytes())) {
                found.push(path.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    found.sort();
    found
}

/// What codex (0.169.0, 0.171.0) keeps of a deleted thread that no client can remove: it deletes the
/// thread's rows from its databases, but the bytes stay in their write-ahead logs until codex
/// checkpoints them, and then in the databases' free space (codex does not use `secure_delete`);
/// writing to codex's databases behind its back is not ours to do.
const CODEX_DATABASES: [&str; 2] = ["codex-home/state_5.sqlite", "codex-home/thread_history_1.sqlite"];

/// Whether `file` (relative to the data folder) is one of [`CODEX_DATABASES`] or its log.
fn codex_database(file: &str) -> bool {
    CODEX_DATABASES.iter().any(|db| file == *db || file.strip_prefix(db) == Some("-wal"))
}

/// Rows of codex's databases under `data` (read from a copy) that hold `marker`: none may.
fn codex_rows_holding(data: &std::path::Path, marker: &str) -> Vec<String> {
    let copy = tempfile::tempdir().unwrap();
    let mut found = Vec::new();
    for db in CODEX_DATABASES {
        let name = db.rsplit('/').next().unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let from = data.join(format!("{db}{suffix}"));
            if from.exists() {
                std::fs::copy(&from, copy.path().join(format!("{name}{suffix}"))).unwrap();
            }
        }
        let conn = rusqlite::Connection::open(copy.path().join(name)).unwrap();
        let mut tables = conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").unwrap();
        let tables: Vec<String> = tables.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
        for table in tables {
            let mut columns = conn.prepare(&format!("SELECT name FROM pragma_table_info('{table}')")).unwrap();
            let columns: Vec<String> = columns.query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
            for column in columns {
                let sql = format!("SELECT COUNT(*) FROM \"{table}\" WHERE CAST(\"{column}\" AS TEXT) LIKE ?1");
                let n: i64 = conn.query_row(&sql, [format!("%{marker}%")], |r| r.get(0)).unwrap();
                if n > 0 {
                    found.push(format!("{name}: {table}.{column} ({n} rows)"));
                }
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_removes_every_copy_of_a_coding_agent_conversation_but_codexs_database_logs() {
    let data = tempfile::tempdir().unwrap();
    let args = ["--allow-profile", "codex"];
    let served = serve_builtin(data.path(), None, &[], &args);
    served.ready().await;
    let client = &served.client;
    let delete = |id: String| async move {
        let answer = client.send(hyper::Method::DELETE, &format!("/v1/conversations/{id}"), None).await.unwrap();
        assert!(answer.status.is_success(), "{}", answer.status);
    };
    let completes = |id: String, text: &'static str| async move {
        let events = turn(client, &id, text).await;
        assert_eq!(last(&events).event, "turn.completed", "{:?}", last(&events).data);
    };
    // Files holding the text, but for codex's databases, in which no row may hold it.
    let left = |marker: &str| -> Vec<String> {
        let mut left: Vec<String> =
            files_holding(data.path(), marker).into_iter().filter(|f| !codex_database(f)).collect();
        left.extend(codex_rows_holding(data.path(), marker));
        left
    };

    // A coding-agent conversation released between turns has two codex threads on disk, the
    // second rebuilt with the whole history; a chat conversation has none.
    let (agent, chat) =
        (conversation(client, json!({"profile": "codex"})).await, conversation(client, json!({})).await);
    completes(agent.clone(), "remember transcript-canary-b41d").await;
    completes(chat.clone(), "remember transcript-canary-b41d").await;
    let released = client.post(&format!("/v1/conversations/{agent}/release"), json!({})).await.unwrap();
    assert!(released.status.is_success(), "{}", released.status);
    completes(agent.clone(), "and go on").await;
    let before = left("transcript-canary-b41d");
    let rollouts = before.iter().filter(|f| f.contains("/sessions/") && f.ends_with(".jsonl")).count();
    assert_eq!(rollouts, 2, "codex's rollouts, one per load: {before:?}");
    assert!(before.iter().any(|f| f.ends_with("rows)")), "codex's rows hold it too: {before:?}");
    delete(agent).await;
    delete(chat).await;
    assert_eq!(left("transcript-canary-b41d"), Vec::<String>::new(), "deleted text left");

    // One rebuilt, then outliving the service: none of its threads is loaded when deleted.
    let agent = conversation(client, json!({"profile": "codex"})).await;
    completes(agent.clone(), "remember restart-canary-0c55").await;
    let released = client.post(&format!("/v1/conversations/{agent}/release"), json!({})).await.unwrap();
    assert!(released.status.is_success(), "{}", released.status);
    completes(agent.clone(), "and go on").await;
    let (status, _, _) = served.terminate();
    assert!(status.success());
    let served = serve_builtin(data.path(), None, &[], &args);
    served.ready().await;
    let client = &served.client;
    let answer = client.send(hyper::Method::DELETE, &format!("/v1/conversations/{agent}"), None).await.unwrap();
    assert!(answer.status.is_success(), "{}", answer.status);
    assert_eq!(left("restart-canary-0c55"), Vec::<String>::new(), "deleted text left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_image_url_is_the_clients_error_with_what_to_send_instead() {
    let data = tempfile::tempdir().unwrap();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("serve.log");
    let served = serve_logged(data.path(), None, &[], &[], Stdio::from(std::fs::File::create(&log).unwrap()));
    served.ready().await;
    let client = &served.client;
    let id = conversation(client, json!({})).await;
    let path = format!("/v1/conversations/{id}/turns");
    for url in ["https://example.com/private-cat.png", "http://example.com/private-cat.png"] {
        let body = json!({"stream": false, "input": [{"type": "text", "text": "look"}, {"type": "image", "url": url}]});
        let answer = client.send(hyper::Method::POST, &path, Some(body.to_string().into())).await.unwrap();
        let error = answer.json().unwrap();
        assert_eq!(answer.status, hyper::StatusCode::BAD_REQUEST, "{error}");
        assert_eq!(error["error"]["code"], "invalid_request", "{error}");
        let message = error["error"]["message"].as_str().unwrap();
        assert!(message.contains("data:image/png;base64") && !message.contains("private-cat"), "{message}");
    }
    // The same image inline is taken, and the conversation goes on.
    let inline = "data:image/png;base64,iVBORw0KGgo=";
    let body = json!({"stream": false, "input": [{"type": "text", "text": "look"}, {"type": "image", "url": inline}]});
    let answer = client.send(hyper::Method::POST, &path, Some(body.to_string().into())).await.unwrap();
    assert_eq!(answer.status, hyper::StatusCode::OK);
    assert_eq!(answer.json().unwrap()["status"], "completed");
    let (status, _, _) = served.terminate();
    assert!(status.success());
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(!log.contains("WARN"), "a client's error is no warning: {log}");
}
