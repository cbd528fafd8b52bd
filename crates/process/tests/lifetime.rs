//! Each codex dies with its owner (`PR_SET_PDEATHSIG`), and only with it: Linux fires that signal
//! when the *thread* that forked the child ends, so a codex spawned from a thread that ends
//! before the program (tokio's blocking pool ends idle threads after 10 s) must still live.

use codex_pool_testkit as common;

use codex_pool_process::AppServer;
use common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_outlives_the_thread_that_spawned_it() {
    let env = Env::new().await;
    let runtime = tokio::runtime::Handle::current();

    // From a thread of our own that ends right after.
    let (config, rt) = (env.config(), runtime.clone());
    let from_thread = std::thread::spawn(move || rt.block_on(AppServer::spawn(config))).join().unwrap().unwrap();

    // From tokio's blocking pool, whose idle threads end after 10 s.
    let (config, rt) = (env.config(), runtime.clone());
    let from_pool = tokio::task::spawn_blocking(move || rt.block_on(AppServer::spawn(config))).await.unwrap().unwrap();

    tokio::time::sleep(Duration::from_secs(15)).await;
    for server in [&from_thread, &from_pool] {
        let pid = server.handle().pid();
        assert!(alive(pid), "codex {pid} died with the thread that spawned it");
        server.handle().ping(Duration::from_secs(5)).await.expect("it still answers");
    }
    from_thread.shutdown(SHUTDOWN).await;
    from_pool.shutdown(SHUTDOWN).await;
}
