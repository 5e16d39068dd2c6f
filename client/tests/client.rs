//! `Client` against the fake hub: correlation, events, positions, closes, timeouts.

mod fake;

use std::time::Duration;

use fake::{FakeHub, GOOD_TOKEN, Peer, WAIT, entry, message};
use teamhub_client::protocol::{
    ClientOp, CloseCode, ErrorCode, ErrorFrame, JoinReply, KickReason, Kicked, PresenceDiff,
    PublishReply, Reconnect, ReplyBody, ServerFrame, Since,
};
use teamhub_client::{Client, ClientError, ClientOptions, ConnectOptions, Event, JoinOptions};
use tokio::sync::mpsc;

async fn connect(hub: &FakeHub) -> Client {
    Client::connect(ConnectOptions::new(hub.url("/ws")).token(GOOD_TOKEN))
        .await
        .unwrap()
}

async fn next_event(events: &mut mpsc::Receiver<Event>) -> Event {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("no event arrived")
        .expect("event stream ended")
}

fn since(epoch: &str, offset: u64) -> Since {
    Since {
        epoch: epoch.into(),
        offset,
    }
}

fn join_reply(team: &str, offset: u64, missed: &[u64]) -> ReplyBody {
    ReplyBody::Join(JoinReply {
        team: team.try_into().unwrap(),
        epoch: "e1".into(),
        offset,
        presence: vec![entry("alice")],
        recovered: !missed.is_empty(),
        missed: missed.iter().map(|&o| message(team, o)).collect(),
    })
}

#[tokio::test]
async fn replies_are_correlated_by_id_not_by_order() {
    let hub = FakeHub::start(|mut peer: Peer| async move {
        let mut frames = Vec::new();
        for _ in 0..3 {
            frames.push(peer.recv_frame().await);
        }
        // Answer in reverse order of arrival.
        for frame in frames.into_iter().rev() {
            match frame.op {
                ClientOp::Join(join) => {
                    assert_eq!(join.team.as_str(), "design");
                    peer.reply(frame.id, join_reply("design", 5, &[])).await;
                }
                ClientOp::Publish(p) => {
                    assert_eq!(p.data.get(), r#"{"text":"hi"}"#);
                    assert!(p.echo);
                    peer.reply(frame.id, ReplyBody::Publish(PublishReply { offset: 6 }))
                        .await;
                }
                ClientOp::Ping => peer.send(&ServerFrame::Pong { id: frame.id }).await,
                other => panic!("unexpected {other:?}"),
            }
        }
        peer.serve("e1", 6).await;
    })
    .await;
    let client = connect(&hub).await;
    let data = serde_json::json!({ "text": "hi" });
    let (joined, offset, rtt) = tokio::join!(
        client.join("design", JoinOptions::default()),
        client.publish("design", "chat.message", &data, true),
        client.ping(),
    );
    assert_eq!(joined.unwrap().offset, 5);
    assert_eq!(offset.unwrap(), 6);
    assert!(rtt.unwrap() < WAIT);
    client.close().await.unwrap();
    hub.finish().await;
}

#[tokio::test]
async fn every_request_gets_its_typed_answer() {
    let hub = FakeHub::start(|peer: Peer| peer.serve("e1", 0)).await;
    let client = connect(&hub).await;
    assert_eq!(client.selected_subprotocol(), Some("teamhub.v1"));
    let meta = serde_json::json!({ "status": "busy" });
    let reply = client
        .join(
            "design",
            JoinOptions {
                since: None,
                meta: Some(meta),
            },
        )
        .await
        .unwrap();
    assert_eq!((reply.epoch.as_str(), reply.offset), ("e1", 0));
    assert!(!reply.recovered);
    let presence = client.presence("design").await.unwrap();
    let users: Vec<&str> = presence.iter().map(|e| e.user.as_str()).collect();
    assert_eq!(users, ["alice", "bob"]);
    assert_eq!(client.refresh("new-token").await.unwrap(), 4_102_444_800);
    assert_eq!(client.publish("design", "a.b", &1, false).await.unwrap(), 1);
    client.leave("design").await.unwrap();
    client.close().await.unwrap();
    hub.finish().await;
}

#[tokio::test]
async fn server_errors_answer_their_request_and_stray_ones_become_events() {
    let hub = FakeHub::start(|mut peer: Peer| async move {
        let frame = peer.recv_frame().await;
        peer.send(&ServerFrame::Error(ErrorFrame {
            id: None,
            code: ErrorCode::BadRequest,
            message: "stray".into(),
        }))
        .await;
        peer.send(&ServerFrame::Error(ErrorFrame {
            id: frame.id,
            code: ErrorCode::Forbidden,
            message: "viewers cannot publish".into(),
        }))
        .await;
        peer.serve("e1", 0).await;
    })
    .await;
    let client = connect(&hub).await;
    let mut events = client.events();
    let err = client
        .publish("design", "chat.message", &"x", false)
        .await
        .unwrap_err();
    assert_eq!(err.server_code(), Some(ErrorCode::Forbidden), "{err:?}");
    assert!(err.to_string().contains("viewers cannot publish"), "{err}");
    match next_event(&mut events).await {
        Event::Error(e) => assert_eq!((e.id, e.code), (None, ErrorCode::BadRequest)),
        other => panic!("expected the stray error, got {other:?}"),
    }
    client.close().await.unwrap();
    hub.finish().await;
}

#[tokio::test]
async fn events_arrive_in_order_and_end_with_the_close_code() {
    let hub = FakeHub::start(|mut peer: Peer| async move {
        let join = peer.recv_frame().await;
        peer.reply(join.id, join_reply("design", 5, &[])).await;
        peer.send(&ServerFrame::Message(message("design", 6))).await;
        peer.send(&ServerFrame::PresenceDiff(PresenceDiff {
            team: "design".try_into().unwrap(),
            joins: vec![entry("carol")],
            leaves: vec![],
        }))
        .await;
        peer.send_text("garbage").await;
        peer.send(&ServerFrame::Kicked(Kicked {
            team: "design".try_into().unwrap(),
            reason: KickReason::Revoked,
        }))
        .await;
        peer.close(1012, "draining").await;
    })
    .await;
    let client = connect(&hub).await;
    let mut events = client.events();
    client.join("design", JoinOptions::default()).await.unwrap();

    assert!(matches!(next_event(&mut events).await, Event::Message(m) if m.offset == 6));
    assert!(matches!(
        next_event(&mut events).await,
        Event::PresenceDiff(d) if d.joins[0].user.as_str() == "carol"
    ));
    assert!(matches!(
        next_event(&mut events).await,
        Event::Unexpected(teamhub_client::Incoming::Text(t)) if t == "garbage"
    ));
    assert!(matches!(
        next_event(&mut events).await,
        Event::Kicked(k) if k.reason == KickReason::Revoked
    ));
    assert_eq!(
        next_event(&mut events).await,
        Event::Closed {
            code: Some(1012),
            reason: "draining".into()
        }
    );
    assert!(client.is_closed());
    assert_eq!(
        CloseCode::from_u16(1012).map(CloseCode::reconnect),
        Some(Reconnect::Immediately)
    );
    // Requests after the close fail with the close that ended the connection.
    let err = client.ping().await.unwrap_err();
    assert_eq!(err.close_code(), Some(CloseCode::Draining), "{err:?}");
    // Closed is the last event: the stream ends after it.
    assert!(
        tokio::time::timeout(WAIT, events.recv())
            .await
            .unwrap()
            .is_none()
    );
    hub.finish().await;
}

#[tokio::test]
async fn positions_follow_join_replies_missed_and_live_messages() {
    let hub = FakeHub::start(|mut peer: Peer| async move {
        // join design: recovered, missed 4 and 5, team at 5.
        let join = peer.recv_frame().await;
        let ClientOp::Join(j) = &join.op else {
            panic!("expected join")
        };
        assert_eq!(j.since, Some(since("e1", 3)));
        peer.reply(join.id, join_reply("design", 5, &[4, 5])).await;
        peer.send(&ServerFrame::Message(message("design", 6))).await;
        // A message for a team this connection never joined moves nothing.
        peer.send(&ServerFrame::Message(message("other", 9))).await;
        // join ops: team at 2, nothing missed.
        let join = peer.recv_frame().await;
        peer.reply(join.id, join_reply("ops", 2, &[])).await;
        peer.send(&ServerFrame::Kicked(Kicked {
            team: "ops".try_into().unwrap(),
            reason: KickReason::RoleRemoved,
        }))
        .await;
        peer.serve("e1", 6).await;
    })
    .await;
    let client = connect(&hub).await;
    let mut events = client.events();
    assert_eq!(client.position("design"), None);

    let reply = client
        .join(
            "design",
            JoinOptions {
                since: Some(since("e1", 3)),
                meta: None,
            },
        )
        .await
        .unwrap();
    assert!(reply.recovered);
    // Known as soon as the join returns, before any event is read.
    assert_eq!(client.position("design"), Some(since("e1", 5)));
    assert!(matches!(next_event(&mut events).await, Event::Message(m) if m.offset == 6));
    assert!(matches!(next_event(&mut events).await, Event::Message(m) if m.offset == 9));
    assert_eq!(client.position("design"), Some(since("e1", 6)));
    assert_eq!(client.position("other"), None);

    client.join("ops", JoinOptions::default()).await.unwrap();
    assert_eq!(client.position("ops"), Some(since("e1", 2)));
    assert!(matches!(next_event(&mut events).await, Event::Kicked(_)));
    assert_eq!(client.position("ops"), None, "kicked forgets the team");

    let mut positions = client.positions();
    positions.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(positions.len(), 1);
    assert_eq!(positions[0].1, since("e1", 6));

    client.leave("design").await.unwrap();
    assert_eq!(client.position("design"), None, "leave forgets the team");
    client.close().await.unwrap();
    hub.finish().await;
}

#[tokio::test]
async fn a_position_survives_the_close_and_recovers_on_a_new_connection() {
    let hub = FakeHub::start(|peer: Peer| peer.serve("e1", 7)).await;
    let first = connect(&hub).await;
    first.join("design", JoinOptions::default()).await.unwrap();
    let mut events = first.events();
    let err = first
        .publish("design", "test.close", &1012, false)
        .await
        .unwrap_err();
    assert_eq!(err.close_code(), Some(CloseCode::Draining), "{err:?}");
    assert!(matches!(
        next_event(&mut events).await,
        Event::Closed {
            code: Some(1012),
            ..
        }
    ));
    let left_at = first.position("design").expect("position kept after close");
    assert_eq!(left_at, since("e1", 7));

    // The fake recovers everything after `since`; nothing was published meanwhile.
    let second = connect(&hub).await;
    let reply = second
        .join(
            "design",
            JoinOptions {
                since: Some(left_at),
                meta: None,
            },
        )
        .await
        .unwrap();
    assert!(reply.recovered);
    assert!(reply.missed.is_empty());
    second.close().await.unwrap();
    hub.finish().await;
}

#[tokio::test]
async fn pending_requests_fail_with_the_close_code() {
    let hub = FakeHub::start(|mut peer: Peer| async move {
        let _unanswered = peer.recv_frame().await;
        peer.close(1013, "outbound queue overflowed").await;
    })
    .await;
    let client = connect(&hub).await;
    let err = client.presence("design").await.unwrap_err();
    let ClientError::Closed { code, reason } = err else {
        panic!("expected Closed, got {err:?}")
    };
    assert_eq!(
        (code, reason.as_str()),
        (Some(1013), "outbound queue overflowed")
    );
    hub.finish().await;
}

#[tokio::test]
async fn requests_time_out_and_late_answers_are_dropped() {
    let hub = FakeHub::start(|mut peer: Peer| async move {
        let slow = peer.recv_frame().await;
        // Only answer once the client has moved on to its next request.
        let next = peer.recv_frame().await;
        peer.send(&ServerFrame::Pong { id: slow.id }).await;
        peer.send(&ServerFrame::Pong { id: next.id }).await;
        peer.serve("e1", 0).await;
    })
    .await;
    let options = ClientOptions {
        request_timeout: Duration::from_millis(200),
        ..ClientOptions::default()
    };
    let client = Client::connect_with(
        ConnectOptions::new(hub.url("/ws")).token(GOOD_TOKEN),
        options,
    )
    .await
    .unwrap();
    let mut events = client.events();
    let err = client.ping().await.unwrap_err();
    assert!(
        matches!(err, ClientError::Timeout { after } if after == Duration::from_millis(200)),
        "{err:?}"
    );
    client.ping().await.unwrap();
    // The late pong became neither an answer nor an event.
    client.close().await.unwrap();
    assert!(matches!(
        next_event(&mut events).await,
        Event::Closed {
            code: Some(1000),
            ..
        }
    ));
    hub.finish().await;
}

#[tokio::test]
async fn invalid_ids_are_refused_before_sending() {
    let hub = FakeHub::start(|mut peer: Peer| async move {
        // The only frame that arrives is the valid ping.
        let ping = peer.recv_frame().await;
        assert_eq!(ping.op, ClientOp::Ping);
        peer.send(&ServerFrame::Pong { id: ping.id }).await;
        peer.serve("e1", 0).await;
    })
    .await;
    let client = connect(&hub).await;
    let err = client.join("no spaces", JoinOptions::default()).await;
    assert!(matches!(err, Err(ClientError::InvalidId(_))), "{err:?}");
    let err = client.publish("design", "bad type!", &0, false).await;
    assert!(matches!(err, Err(ClientError::InvalidId(_))), "{err:?}");
    client.ping().await.unwrap();
    client.close().await.unwrap();
    hub.finish().await;
}

#[tokio::test]
#[should_panic(expected = "only once")]
async fn events_can_be_taken_once() {
    let hub = FakeHub::start(|peer: Peer| peer.serve("e1", 0)).await;
    let client = connect(&hub).await;
    let _events = client.events();
    let _again = client.events();
}

#[tokio::test]
async fn close_does_not_hang_on_a_full_event_buffer() {
    let hub = FakeHub::start(|mut peer: Peer| async move {
        for offset in 1..=3 {
            peer.send(&ServerFrame::Message(message("design", offset)))
                .await;
        }
        // The client stops reading once its one-event buffer is full; wait for it to
        // drop the socket.
        while let Ok(Some(Ok(_))) =
            tokio::time::timeout(WAIT, futures_util::StreamExt::next(&mut peer.ws)).await
        {}
    })
    .await;
    let options = ClientOptions {
        request_timeout: Duration::from_millis(200),
        events_capacity: 1,
    };
    let client = Client::connect_with(
        ConnectOptions::new(hub.url("/ws")).token(GOOD_TOKEN),
        options,
    )
    .await
    .unwrap();
    let mut events = client.events();
    // The buffer fills: the first message is there, the task waits to hand over more.
    assert!(matches!(next_event(&mut events).await, Event::Message(m) if m.offset == 1));
    let err = tokio::time::timeout(WAIT, client.close()).await;
    assert!(matches!(err, Ok(Ok(()))), "close must return");
    assert!(client.is_closed());
    drop(client);
    hub.finish().await;
}
