//! The root certificates of the pool's codex processes, against the real codex: the minimal
//! bundle over plain HTTP, and over HTTPS (the fake model with a CA of its own) `auto`, the
//! user's file, `system`, and the fall-back from a bundle that lacks the fake model's CA.

use codex_pool::{
    AbortReason, CaBundle, ConversationId, Pool, PoolConfig, Profile, SystemRoots, TurnEvent, TurnOptions,
};
use codex_pool_process::ca::{encode_pem, placeholder, read_certs};
use codex_pool_protocol::methods::ThreadSettings;
use codex_pool_protocol::types::{ApprovalPolicy, TurnStatus, UserInput};
use codex_pool_store::MemoryStore;
use codex_pool_testkit::*;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

fn pool_config(env: &Env, size: usize, bundle: CaBundle, system: SystemRoots) -> PoolConfig {
    let mut c = PoolConfig::new(env.config());
    c.size = size;
    c.ca_bundle = bundle;
    c.system_roots = system;
    // A model that cannot be reached is given up on quickly, so a broken fall-back fails fast.
    c.progress_timeout = Duration::from_secs(20);
    c.turn_timeout = Duration::from_secs(30);
    c
}

async fn turn(pool: &Pool, thread: &ConversationId, text: &str) -> (String, TurnEvent) {
    let turn = pool.start_turn(thread, vec![UserInput::text(text)], TurnOptions::default()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(60), turn.collect_text()).await.expect("turn ends")
}

/// Two turns of one conversation; the second's request carries the first.
async fn converse(pool: &Pool, env: &Env, tag: &str) {
    let thread = pool.create_thread(ThreadSettings::default()).await.unwrap();
    for n in 1..=2 {
        let text = format!("{tag} turn {n}");
        let (reply, end) = turn(pool, &thread, &text).await;
        assert_eq!(reply, format!("echo: {text}"), "{end:?}");
    }
    let request = &env.requests_with(&format!("{tag} turn 2"))[0];
    assert!(messages(request).iter().any(|(_, t)| *t == format!("echo: {tag} turn 1")), "history");
}

/// `SSL_CERT_FILE` and `SSL_CERT_DIR` of every codex process of the pool.
fn ca_env(pool: &Pool) -> Vec<(Option<String>, Option<String>)> {
    let pids = pool.stats().slots.iter().filter_map(|s| s.pid).collect::<Vec<_>>();
    pids.iter().map(|p| (env_of(*p, "SSL_CERT_FILE"), env_of(*p, "SSL_CERT_DIR"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_http_provider_gets_one_placeholder_kept_from_tool_commands() {
    let env = Env::new().await;
    let pool = Pool::new(pool_config(&env, 1, CaBundle::Auto, SystemRoots::Inherited), Arc::new(MemoryStore::new()));
    let stats = pool.ensure_started().await.unwrap();
    assert_eq!((stats.ca.bundle.as_str(), stats.ca.roots), ("minimal", Some(1)));
    let (file, dir) = ca_env(&pool).remove(0);
    let (file, dir) = (PathBuf::from(file.unwrap()), PathBuf::from(dir.unwrap()));
    assert_eq!(read_certs(&file).unwrap().len(), 1);
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0, "SSL_CERT_DIR is empty");
    converse(&pool, &env, "plain").await;
    // A tool's shell does not see the variables (it should see the system's roots).
    let settings = ThreadSettings { approval_policy: Some(ApprovalPolicy::Never), ..Default::default() };
    let coder = pool.create_thread_with(settings, Profile::Codex).await.unwrap();
    let ask = r#"[mock:tool=exec_command {"cmd":"echo \"file=[$SSL_CERT_FILE] dir=[$SSL_CERT_DIR] home=[$HOME]\""}]"#;
    let (reply, _) = turn(&pool, &coder, ask).await;
    assert!(reply.contains("file=[] dir=[]") && !reply.contains("home=[]"), "{reply}");
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_auto_trusts_just_the_fake_models_ca() {
    let env = Env::with_tls().await;
    assert!(env.mock.base_url().starts_with("https://"));
    let system = SystemRoots::File(env.system_plus_mock_ca());
    let pool = Pool::new(pool_config(&env, 2, CaBundle::Auto, system), Arc::new(MemoryStore::new()));
    let stats = pool.ensure_started().await.unwrap();
    assert_eq!((stats.ca.bundle.as_str(), stats.ca.roots, stats.ca.note), ("auto", Some(1), None));
    for (file, dir) in ca_env(&pool) {
        let bundle = read_certs(file.unwrap().as_ref()).unwrap();
        assert_eq!(bundle, vec![env.mock.ca_der().unwrap().clone()], "just the fake model's CA");
        assert!(dir.is_some());
    }
    converse(&pool, &env, "auto").await;
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_the_system_roots_plus_the_fake_ca_as_a_file_or_as_system() {
    let env = Env::with_tls().await;
    let system_plus = env.system_plus_mock_ca();
    let roots = read_certs(&system_plus).unwrap().len();
    let settings = [
        (CaBundle::Path(system_plus.clone()), SystemRoots::Inherited, system_plus.display().to_string()),
        (CaBundle::System, SystemRoots::File(system_plus.clone()), "system".to_owned()),
    ];
    for (n, (bundle, system, name)) in settings.into_iter().enumerate() {
        let pool = Pool::new(pool_config(&env, 1, bundle, system), Arc::new(MemoryStore::new()));
        let stats = pool.ensure_started().await.unwrap();
        assert_eq!((stats.ca.bundle, stats.ca.roots), (name, Some(roots)));
        assert_eq!(ca_env(&pool)[0].0.as_deref(), Some(system_plus.to_str().unwrap()));
        converse(&pool, &env, &format!("setting {n}")).await;
        pool.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bundle_that_lacks_the_fake_ca_falls_back_to_the_system_roots_and_the_conversation_goes_on() {
    let env = Env::with_tls().await;
    let lacking = env.dir.path().join("lacking.pem");
    std::fs::write(&lacking, encode_pem(&[placeholder().unwrap()])).unwrap();
    let system_plus = env.system_plus_mock_ca();
    let config = pool_config(&env, 2, CaBundle::Path(lacking.clone()), SystemRoots::File(system_plus.clone()));
    let pool = Pool::new(config, Arc::new(MemoryStore::new()));
    pool.ensure_started().await.unwrap();
    let before: Vec<Option<u32>> = pool.stats().slots.iter().map(|s| s.pid).collect();
    let thread = pool.create_thread(ThreadSettings::default()).await.unwrap();
    // codex cannot verify the model: the pool finds out, switches to the system roots, and the
    // turn ends saying so.
    let (_, end) = turn(&pool, &thread, "first try").await;
    let TurnEvent::Aborted { reason: AbortReason::CaBundleReplaced, message } = end else { panic!("{end:?}") };
    assert!(message.contains("send it again"), "{message}");
    let stats = pool.stats();
    assert_eq!(stats.ca.bundle, "system");
    assert!(stats.ca.fell_back.as_deref().is_some_and(|why| why.contains("reduced CA bundle")), "{:?}", stats.ca);
    wait_until("every process is replaced", Duration::from_secs(20), || {
        let stats = pool.stats();
        stats.ready == 2 && stats.slots.iter().zip(&before).all(|(s, b)| s.pid.is_some() && s.pid != *b)
    })
    .await;
    for (file, _) in ca_env(&pool) {
        assert_eq!(file.as_deref(), Some(system_plus.to_str().unwrap()), "the new processes have the system roots");
    }
    // Nothing of the cut turn was kept; sent again, it completes, and the conversation goes on.
    let (reply, end) = turn(&pool, &thread, "first try").await;
    assert_eq!(reply, "echo: first try", "{end:?}");
    let (reply, end) = turn(&pool, &thread, "second").await;
    assert_eq!(reply, "echo: second");
    assert!(matches!(end, TurnEvent::Completed { status: TurnStatus::Completed, .. }));
    let request = &env.requests_with("second")[0];
    let said: Vec<String> = messages(request).into_iter().map(|(_, t)| t).collect();
    assert_eq!(said.iter().filter(|t| *t == "first try").count(), 1, "{said:?}");
    assert!(said.iter().any(|t| t == "echo: first try"), "{said:?}");
    pool.shutdown().await;
}
