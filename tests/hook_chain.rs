//! The four events: their order, what a Break skips, and what hooks see.

mod support;

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use hookv::config::ServerConfig;
use hookv::pb::{CommandRequest, CommandResponse};
use hookv::{MemTable, Service, ServiceInner, Storage};
use support::{bounded, TestServer};

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, entry: String) {
    log.lock().unwrap().push(entry);
}

/// A service whose hooks record every call, and whose on_received refuses
/// any request to table "deny" with 403.
fn recording_service(log: &Log) -> Service {
    let (l1, l2, l3, l4) = (log.clone(), log.clone(), log.clone(), log.clone());
    ServiceInner::new(MemTable::new())
        .on_received(move |ctx, req| {
            push(
                &l1,
                format!("received {} conn={}", req.command_name(), ctx.conn_id()),
            );
            if req.table() == Some("deny") {
                return ControlFlow::Break(CommandResponse::error(403, "table deny is off limits"));
            }
            ControlFlow::Continue(())
        })
        .on_executed(move |_ctx, req, res| {
            push(
                &l2,
                format!("executed {} {}", req.command_name(), res.status),
            );
            ControlFlow::Continue(())
        })
        .on_before_send(move |_ctx, req, res| {
            push(
                &l3,
                format!("before_send {} {}", req.command_name(), res.status),
            );
            res.message = format!("{} (seen by before_send)", res.message);
            ControlFlow::Continue(())
        })
        .on_after_send(move |ctx, req, res| {
            assert!(ctx.started().elapsed() < support::LIMIT);
            push(
                &l4,
                format!("after_send {} {}", req.command_name(), res.status),
            );
            ControlFlow::Continue(())
        })
        .into()
}

#[tokio::test]
async fn events_run_in_order_around_execution() {
    let log: Log = Default::default();
    let service = recording_service(&log);
    let server = TestServer::start(service, ServerConfig::default()).await;
    let mut c = server.client().await;
    let r = bounded(c.hset("t", "k", "v")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.message, " (seen by before_send)");
    drop(c);
    server.stop().await;
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "received hset conn=1",
            "executed hset 200",
            "before_send hset 200",
            "after_send hset 200",
        ]
    );
}

#[tokio::test]
async fn on_received_break_skips_storage_but_not_before_and_after_send() {
    let log: Log = Default::default();
    let service = recording_service(&log);
    let server = TestServer::start(service.clone(), ServerConfig::default()).await;
    let mut c = server.client().await;
    let r = bounded(c.hset("deny", "k", "v")).await.unwrap();
    assert_eq!(r.status, 403);
    assert_eq!(r.message, "table deny is off limits (seen by before_send)");
    drop(c);
    server.stop().await;
    assert_eq!(
        service.store().get("deny", "k").unwrap(),
        None,
        "storage was touched"
    );
    let log = log.lock().unwrap().clone();
    assert_eq!(
        log,
        [
            "received hset conn=1",
            "before_send hset 403",
            "after_send hset 403",
        ]
    );
}

#[tokio::test]
async fn a_break_stops_later_hooks_of_the_same_event() {
    let later = Arc::new(AtomicUsize::new(0));
    let later2 = later.clone();
    let service: Service = ServiceInner::new(MemTable::new())
        .on_received(|_, _| ControlFlow::Break(CommandResponse::error(429, "slow down")))
        .on_received(move |_, _| {
            later2.fetch_add(1, Ordering::SeqCst);
            ControlFlow::Continue(())
        })
        .on_before_send(|_, _, res| {
            res.message.push_str(" [first]");
            ControlFlow::Break(())
        })
        .on_before_send(|_, _, res| {
            res.message.push_str(" [second]");
            ControlFlow::Continue(())
        })
        .into();
    let mut ctx = hookv::hooks::HookCtx::new(7, "127.0.0.1:1".parse().unwrap());
    let res = service.execute_in(&mut ctx, &CommandRequest::new_hget("t", "k"));
    assert_eq!(
        (res.status, res.message.as_str()),
        (429, "slow down [first]")
    );
    assert_eq!(later.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn on_executed_break_replaces_the_response() {
    let service: Service = ServiceInner::new(MemTable::new())
        .on_executed(|_, req, res| {
            if req.is_write() && res.is_ok() {
                ControlFlow::Break(CommandResponse::error(500, "log write failed"))
            } else {
                ControlFlow::Continue(())
            }
        })
        .into();
    let mut ctx = hookv::hooks::HookCtx::new(1, "127.0.0.1:1".parse().unwrap());
    let res = service.execute_in(&mut ctx, &CommandRequest::new_hset("t", "k", "v".into()));
    assert_eq!(res.status, 500);
    let res = service.execute_in(&mut ctx, &CommandRequest::new_hget("t", "k"));
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn hooks_see_a_per_connection_context_and_may_hold_state() {
    // A stateful closure: counts requests and records (conn id, peer port).
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    let service: Service = ServiceInner::new(MemTable::new())
        .on_received(move |ctx, _| {
            // Remember something on the connection: the first request names it.
            if ctx.principal.is_none() {
                ctx.principal = Some(format!("conn{}", ctx.conn_id()).into());
            }
            seen2
                .lock()
                .unwrap()
                .push((ctx.conn_id(), ctx.peer.port(), ctx.principal.clone()));
            ControlFlow::Continue(())
        })
        .into();
    let server = TestServer::start(service, ServerConfig::default()).await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    for _ in 0..2 {
        bounded(a.hget("t", "k")).await.unwrap();
        bounded(b.hget("t", "k")).await.unwrap();
    }
    server.stop().await;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 4);
    let ids: Vec<u64> = seen.iter().map(|s| s.0).collect();
    assert_eq!(ids[0], ids[2]);
    assert_eq!(ids[1], ids[3]);
    assert_ne!(ids[0], ids[1]);
    assert_ne!(seen[0].1, seen[1].1, "different peer ports");
    assert_eq!(
        seen[2].2.as_deref(),
        Some(format!("conn{}", ids[0]).as_str())
    );
}
