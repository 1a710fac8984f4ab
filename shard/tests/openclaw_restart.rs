//! The gateway dies and comes back: runs in flight end with a clear error, the client
//! reconnects by itself (honouring the gateway's start-up "retry after"), and the next request
//! works. Its own gateway, since it is killed.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[path = "../../demo/src/local_gateway.rs"]
mod gateway;

use std::sync::Arc;
use std::time::{Duration, Instant};

use voicebot_shard::openclaw::device::MemoryStore;
use voicebot_shard::openclaw::{
    ChatOptions, ClientError, GatewayClient, ReplyEvent, Status, session_key,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_gateway_ends_runs_and_the_client_reconnects() {
    let gw = gateway::Gateway::start();
    let mut config = gw.client_config();
    config.backoff_max = Duration::from_secs(2);
    let client = GatewayClient::start(config, Arc::new(MemoryStore::new().unwrap()));
    client
        .wait_connected(Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    let key = session_key("jarvis", "test", "restart");
    let text = gateway::reply_to(&client, &key, "warm up").await;
    assert_eq!(text, gateway::reply_text());

    // A long reply is being written when the gateway is killed.
    let mut reply = client
        .chat(&key, "Tell me a story [long]", ChatOptions::default())
        .await
        .unwrap();
    let first = reply.next().await.unwrap().unwrap();
    assert!(
        matches!(first, ReplyEvent::Delta(_) | ReplyEvent::Replace(_)),
        "{first:?}"
    );
    let killed = Instant::now();
    gw.crash();
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match reply.next().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some(e),
                None => return None,
            }
        }
    })
    .await
    .expect("the run must end, not hang");
    assert!(
        matches!(ended, Some(ClientError::Disconnected)),
        "{ended:?}"
    );
    gateway::note(&format!("run ended {:?} after the kill", killed.elapsed()));
    assert!(!matches!(client.status(), Status::Connected { .. }));

    // Back on the same port: the client reconnects on its own and the next request works.
    tokio::task::block_in_place(|| gw.kill());
    let restarted = Instant::now();
    tokio::task::block_in_place(|| gw.restart_in_place());
    client
        .wait_connected(Duration::from_secs(90))
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", gw.log_tail()));
    gateway::note(&format!(
        "reconnected {:?} after the restart began",
        restarted.elapsed()
    ));
    assert!(
        matches!(client.status(), Status::Connected { generation, .. } if generation >= 2),
        "{:?}",
        client.status()
    );
    // The restarted gateway still lists the killed run as active in this session, so a plain
    // send is absorbed by it (an empty final); the client notices, clears the session and
    // sends again.
    let text = gateway::reply_to(&client, &key, "Are you back?").await;
    assert_eq!(text, gateway::reply_text());
}
