//! Bad input gets the contract's exact error or close code, and disturbs nothing else.

use serde_json::json;
use teamhub_protocol::{ErrorCode, ServerFrame};

use crate::harness::*;

#[tokio::test]
async fn malformed_frames_get_bad_request_and_the_connection_stays_open() {
    let hub = TestHub::start().await;
    let mut c = hub.connect("ann", &[("t", "editor")]).await;
    let cases: &[(&str, Option<u64>, ErrorCode)] = &[
        ("not json", None, ErrorCode::BadRequest),
        ("[1,2]", None, ErrorCode::BadRequest),
        ("42", None, ErrorCode::BadRequest),
        (r#"{"id":3}"#, Some(3), ErrorCode::BadRequest),
        (r#"{"op":"fly","id":4}"#, Some(4), ErrorCode::BadRequest),
        (r#"{"op":"join","id":5}"#, Some(5), ErrorCode::BadRequest),
        (
            r#"{"op":"join","id":6,"team":5}"#,
            Some(6),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"op":"join","id":7,"team":"has space"}"#,
            Some(7),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"op":"publish","id":8,"team":"t","type":"x"}"#,
            Some(8),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"op":"publish","id":9,"team":"t","data":1}"#,
            Some(9),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"op":"publish","id":10,"team":"t","type":"bad type!","data":1}"#,
            Some(10),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"op":"publish","id":11,"team":"t","type":"x","data":1,"echo":"yes"}"#,
            Some(11),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"op":"join","id":12,"team":"t","since":{"epoch":"e"}}"#,
            Some(12),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"op":"join","id":13,"team":"t","meta":[1]}"#,
            Some(13),
            ErrorCode::BadRequest,
        ),
        (
            r#"{"op":"refresh","id":14}"#,
            Some(14),
            ErrorCode::BadRequest,
        ),
        (r#"{"op":"ping","id":-1}"#, None, ErrorCode::BadRequest),
        (r#"{"op":"ping","id":"1"}"#, None, ErrorCode::BadRequest),
    ];
    for (text, id, code) in cases {
        c.send_text(text).await;
        let message = c.expect_error(*id, *code).await;
        assert!(!message.is_empty(), "{text}: the error says what is wrong");
    }
    let big_meta = json!({"team": "t", "meta": {"s": "x".repeat(1100)}}).to_string();
    c.send_text(&format!(r#"{{"op":"join","id":20,{}"#, &big_meta[1..]))
        .await;
    c.expect_error(Some(20), ErrorCode::TooLarge).await;
    c.conn.send_binary(vec![1, 2, 3]).await.unwrap();
    c.expect_error(None, ErrorCode::BadRequest).await;
    // Still fully working.
    c.join("t").await;
    assert_eq!(c.publish("t", "chat", json!(1), false).await, 1);
}

#[tokio::test]
async fn an_oversize_frame_closes_1009_and_others_keep_flowing() {
    let hub = TestHub::start_with(&["--max-frame-bytes", "2048"]).await;
    let mut big = hub.connect("big", &[("t", "editor")]).await;
    let mut other = hub.connect("other", &[("t", "editor")]).await;
    let mut watcher = hub.connect("w", &[("t", "viewer")]).await;
    watcher.join("t").await;
    let payload =
        json!({"op":"publish","id":1,"team":"t","type":"x","data":"y".repeat(4096)}).to_string();
    big.send_text(&payload).await;
    assert_eq!(big.expect_close().await.0, Some(1009));
    assert_eq!(
        other.publish("t", "chat", json!("still here"), false).await,
        1
    );
    let m = watcher.expect_message().await;
    assert_eq!(
        m.data,
        json!("still here"),
        "the oversize frame was not acted on"
    );
}

#[tokio::test]
async fn errors_on_one_connection_do_not_touch_another() {
    let hub = TestHub::start().await;
    let mut bad = hub.connect("bad", &[("t", "viewer")]).await;
    let mut good = hub.connect("good", &[("t", "viewer")]).await;
    good.join("t").await;
    for _ in 0..20 {
        bad.send_text("{").await;
    }
    good.roundtrip().await;
    match good.conn.recv().now_or_never_frame() {
        None => {}
        Some(f) => panic!("nothing was meant for the good connection, got {f:?}"),
    }
}

/// Polls a receive future once: `None` when nothing is ready.
trait NowOrNever {
    fn now_or_never_frame(self) -> Option<ServerFrame>;
}

impl<F: std::future::Future<Output = Result<teamhub_client::Incoming, teamhub_client::ClientError>>>
    NowOrNever for F
{
    fn now_or_never_frame(self) -> Option<ServerFrame> {
        match futures_util::FutureExt::now_or_never(self) {
            Some(Ok(teamhub_client::Incoming::Frame(f))) => Some(f),
            Some(other) => panic!("unexpected {other:?}"),
            None => None,
        }
    }
}
