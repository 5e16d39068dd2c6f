//! `Connection` against the fake hub: the handshake options, decoding, close codes.

mod fake;

use std::net::{IpAddr, Ipv4Addr};

use fake::{BAD_ORIGIN, FakeHub, GOOD_TOKEN, Peer, WAIT, bytes};
use teamhub_client::protocol::{ClientFrame, ClientOp, ServerFrame};
use teamhub_client::{
    ClientError, ConnectOptions, Connection, Incoming, RawIncoming, TokenPlacement,
};
use tokio_tungstenite::tungstenite::Message;

fn opts(hub: &FakeHub) -> ConnectOptions {
    ConnectOptions::new(hub.url("/ws")).token(GOOD_TOKEN)
}

async fn recv(conn: &mut Connection) -> Incoming {
    tokio::time::timeout(WAIT, conn.recv())
        .await
        .expect("nothing arrived")
        .expect("recv failed")
}

/// A script for connections the test only inspects from the client side. Reading on
/// after the client's close frame lets tungstenite send its answer.
async fn idle(mut peer: Peer) {
    while peer.recv_raw().await.is_some() {}
}

#[tokio::test]
async fn header_token_subprotocol_and_origin_reach_the_server() {
    let mut hub = FakeHub::start(idle).await;
    let mut conn = Connection::connect(opts(&hub).origin("https://app.example"))
        .await
        .unwrap();
    let seen = hub.seen().await;
    assert_eq!(seen.path_and_query, "/ws");
    assert_eq!(
        seen.headers["authorization"],
        format!("Bearer {GOOD_TOKEN}").as_str()
    );
    assert_eq!(seen.headers["sec-websocket-protocol"], "teamhub.v1");
    assert_eq!(seen.headers["origin"], "https://app.example");
    assert_eq!(conn.selected_subprotocol(), Some("teamhub.v1"));
    conn.close().await.unwrap();
    hub.finish().await;
}

#[tokio::test]
async fn query_token_is_percent_encoded_and_no_subprotocol_is_offered() {
    let mut hub = FakeHub::start(idle).await;
    let url = hub.url("/ws/team-1?x=1");
    let mut conn = Connection::connect(
        ConnectOptions::new(url)
            .token(GOOD_TOKEN)
            .token_in(TokenPlacement::Query)
            .subprotocol(false),
    )
    .await
    .unwrap();
    let seen = hub.seen().await;
    // The caller's own parameters are kept; the token is appended.
    assert_eq!(
        seen.path_and_query,
        "/ws/team-1?x=1&token=good%20token%2F%2B%3D"
    );
    assert!(!seen.headers.contains_key("authorization"));
    assert!(!seen.headers.contains_key("sec-websocket-protocol"));
    assert_eq!(conn.selected_subprotocol(), None);
    conn.close().await.unwrap();
    hub.finish().await;
}

#[tokio::test]
async fn query_token_alone_is_accepted() {
    let mut hub = FakeHub::start(idle).await;
    let mut conn = Connection::connect(opts(&hub).token_in(TokenPlacement::Query))
        .await
        .unwrap();
    assert_eq!(
        hub.seen().await.path_and_query,
        "/ws?token=good%20token%2F%2B%3D"
    );
    conn.close().await.unwrap();
    hub.finish().await;
}

#[tokio::test]
async fn refused_handshakes_surface_their_http_status() {
    let hub = FakeHub::start(idle).await;

    let err = Connection::connect(ConnectOptions::new(hub.url("/ws")))
        .await
        .unwrap_err();
    let ClientError::Http { status, body } = err else {
        panic!("expected an HTTP refusal, got {err:?}")
    };
    assert_eq!(status, 401);
    assert!(body.contains(r#""code":"unauthorized""#), "{body}");

    let err = Connection::connect(opts(&hub).token("wrong"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Http { status: 401, .. }),
        "{err:?}"
    );

    let err = Connection::connect(opts(&hub).origin(BAD_ORIGIN))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ClientError::Http { status: 403, .. }),
        "{err:?}"
    );
    hub.finish().await;
}

#[tokio::test]
async fn bind_addr_sets_the_source_address() {
    let mut hub = FakeHub::start(idle).await;
    let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
    let mut conn = Connection::connect(opts(&hub).bind_addr(source))
        .await
        .unwrap();
    assert_eq!(conn.local_addr().ip(), source);
    assert_eq!(hub.seen().await.peer.ip(), source);
    conn.close().await.unwrap();
    hub.finish().await;
}

#[tokio::test]
async fn bad_urls_fail_before_connecting() {
    for url in [
        "https://127.0.0.1:1/ws",
        "http://127.0.0.1:1/ws",
        "nonsense",
    ] {
        let err = Connection::connect(ConnectOptions::new(url))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ClientError::InvalidUrl { .. }),
            "{url}: {err:?}"
        );
    }
}

#[tokio::test]
async fn recv_raw_hands_frames_over_undecoded_then_the_close() {
    let pong = r#"{"op":"pong","id":7}"#;
    let hub = FakeHub::start(move |mut peer: Peer| async move {
        peer.send_text(pong).await;
        peer.send_raw(Message::binary(bytes(b"\x02"))).await;
        peer.close(1012, "draining").await;
    })
    .await;
    let mut conn = Connection::connect(opts(&hub)).await.unwrap();
    let mut next = async || {
        tokio::time::timeout(WAIT, conn.recv_raw())
            .await
            .expect("nothing arrived")
            .expect("recv_raw failed")
    };
    let RawIncoming::Text(text) = next().await else {
        panic!("expected a text frame")
    };
    assert_eq!(text.as_str(), pong);
    let RawIncoming::Binary(bin) = next().await else {
        panic!("expected a binary frame")
    };
    assert_eq!(&bin[..], b"\x02");
    let closed = RawIncoming::Closed {
        code: Some(1012),
        reason: "draining".into(),
    };
    assert_eq!(next().await, closed);
    assert_eq!(next().await, closed);
    conn.close().await.unwrap();
    hub.finish().await;
}

#[tokio::test]
async fn recv_decodes_frames_seed_frames_text_and_binary_then_the_close() {
    let hub = FakeHub::start(|mut peer: Peer| async move {
        peer.send(&ServerFrame::Pong { id: Some(7) }).await;
        peer.send_text(r#"{"type":"chat.message","user_id":"bob","data":[1]}"#)
            .await;
        peer.send_text("not json").await;
        peer.send_raw(Message::binary(bytes(b"\x00\x01"))).await;
        peer.close(4008, "rate limited").await;
    })
    .await;
    let mut conn = Connection::connect(opts(&hub)).await.unwrap();

    assert_eq!(
        recv(&mut conn).await,
        Incoming::Frame(ServerFrame::Pong { id: Some(7) })
    );
    let Incoming::Seed(seed) = recv(&mut conn).await else {
        panic!("expected a seed frame")
    };
    assert_eq!(
        (seed.ty.as_str(), seed.user_id.as_str()),
        ("chat.message", "bob")
    );
    assert_eq!(recv(&mut conn).await, Incoming::Text("not json".into()));
    assert_eq!(recv(&mut conn).await, Incoming::Binary(vec![0, 1]));
    let closed = Incoming::Closed {
        code: Some(4008),
        reason: "rate limited".into(),
    };
    assert_eq!(recv(&mut conn).await, closed);
    // The close is sticky, and sending after it says why.
    assert_eq!(recv(&mut conn).await, closed);
    assert_eq!(conn.close_info(), Some((Some(4008), "rate limited")));
    let err = conn.send_text("{}").await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Closed {
                code: Some(4008),
                ..
            }
        ),
        "{err:?}"
    );
    conn.close().await.unwrap();
    hub.finish().await;
}

#[tokio::test]
async fn server_pings_are_answered_while_reading() {
    let hub = FakeHub::start(|mut peer: Peer| async move {
        peer.send_raw(Message::Ping(bytes(b"heartbeat"))).await;
        match peer.recv_raw().await {
            Some(Message::Pong(payload)) => assert_eq!(&payload[..], b"heartbeat"),
            other => panic!("expected a pong, got {other:?}"),
        }
        peer.send(&ServerFrame::Pong { id: None }).await;
        idle(peer).await;
    })
    .await;
    let mut conn = Connection::connect(opts(&hub)).await.unwrap();
    // The text frame is only sent after the pong arrived, so seeing it proves the
    // pong went out while `recv` was waiting.
    assert_eq!(
        recv(&mut conn).await,
        Incoming::Frame(ServerFrame::Pong { id: None })
    );
    conn.close().await.unwrap();
    hub.finish().await;
}

#[tokio::test]
async fn frames_text_and_binary_reach_the_server_verbatim() {
    let hub = FakeHub::start(|mut peer: Peer| async move {
        let frame = peer.recv_frame().await;
        assert_eq!(
            frame,
            ClientFrame {
                id: Some(3),
                op: ClientOp::Ping
            }
        );
        assert_eq!(
            peer.recv_raw().await,
            Some(Message::text("{\"op\":\"join\""))
        );
        assert_eq!(peer.recv_raw().await, Some(Message::binary(bytes(b"\xff"))));
        idle(peer).await;
    })
    .await;
    let mut conn = Connection::connect(opts(&hub)).await.unwrap();
    conn.send(&ClientFrame {
        id: Some(3),
        op: ClientOp::Ping,
    })
    .await
    .unwrap();
    conn.send_text("{\"op\":\"join\"").await.unwrap();
    conn.send_binary(vec![0xff]).await.unwrap();
    conn.close().await.unwrap();
    assert_eq!(conn.close_info().map(|(code, _)| code), Some(Some(1000)));
    hub.finish().await;
}

#[tokio::test]
async fn client_close_sends_1000_and_completes_the_handshake() {
    let hub = FakeHub::start(|mut peer: Peer| async move {
        match peer.recv_raw().await {
            Some(Message::Close(Some(frame))) => assert_eq!(u16::from(frame.code), 1000),
            other => panic!("expected a close frame, got {other:?}"),
        }
        // tungstenite answers the close; afterwards the stream ends.
        assert!(peer.recv_raw().await.is_none());
    })
    .await;
    let mut conn = Connection::connect(opts(&hub)).await.unwrap();
    conn.close().await.unwrap();
    conn.close().await.unwrap(); // idempotent
    hub.finish().await;
}

#[tokio::test]
async fn a_dropped_socket_is_a_close_without_code() {
    let hub = FakeHub::start(|peer: Peer| async move { drop(peer) }).await;
    let mut conn = Connection::connect(opts(&hub)).await.unwrap();
    let Incoming::Closed { code, .. } = recv(&mut conn).await else {
        panic!("expected the connection to end")
    };
    assert_eq!(code, None);
    hub.finish().await;
}

#[tokio::test]
async fn messages_over_max_message_size_are_refused() {
    let hub = FakeHub::start(|mut peer: Peer| async move {
        peer.send_text(&"x".repeat(2048)).await;
        // The client fails the connection; what happens next does not matter here.
        let _ = tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut peer.ws)).await;
    })
    .await;
    let mut conn = Connection::connect(opts(&hub).max_message_size(1024))
        .await
        .unwrap();
    let result = tokio::time::timeout(WAIT, conn.recv()).await.unwrap();
    assert!(
        matches!(result, Err(ClientError::WebSocket(_))),
        "{result:?}"
    );
    drop(conn);
    hub.finish().await;
}
