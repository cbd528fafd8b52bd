//! The real pinned `codex app-server` against the fake model: conversations, concurrency,
//! interrupts, server requests.

mod common;

use codex_pool_process::TurnEvent;
use codex_pool_protocol::methods::{ThreadStartParams, TurnStartParams};
use codex_pool_protocol::types::{TurnStatus, UserInput};
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_turn_conversation_carries_history() {
    let env = Env::new().await;
    let server = env.spawn().await;
    let codex = server.handle().clone();
    let thread = codex
        .start_thread(&ThreadStartParams::default())
        .await
        .unwrap()
        .thread;

    let turn = codex
        .start_turn(TurnStartParams::new(
            &thread.id,
            vec![UserInput::text("alpha")],
        ))
        .await
        .unwrap();
    let (text, end, events) = finish(turn).await;
    assert_eq!(text, "echo: alpha");
    assert!(
        matches!(
            end,
            TurnEvent::Completed {
                status: TurnStatus::Completed,
                ..
            }
        ),
        "{end:?}"
    );
    assert!(
        matches!(events.first(), Some(TurnEvent::Started { .. })),
        "{events:?}"
    );

    let turn = codex
        .start_turn(TurnStartParams::new(
            &thread.id,
            vec![UserInput::text("beta")],
        ))
        .await
        .unwrap();
    let (text, _, _) = finish(turn).await;
    assert_eq!(text, "echo: beta");

    let second = env.requests_with("beta");
    assert_eq!(second.len(), 1);
    let msgs = messages(&second[0]);
    assert!(
        msgs.iter().any(|(r, t)| r == "user" && t == "alpha"),
        "{msgs:?}"
    );
    assert!(
        msgs.iter()
            .any(|(r, t)| r == "assistant" && t == "echo: alpha"),
        "{msgs:?}"
    );
    server.shutdown(SHUTDOWN).await;
}
