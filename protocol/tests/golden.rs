//! Golden JSON fixtures for every frame and body of the wire contract.
//!
//! Each file under `fixtures/` is one example taken from (and shown in)
//! `docs/protocol.md`. [`check`] decodes it with the protocol types, encodes the result
//! again and compares the two as JSON values, so a renamed field, a lost `op` or a
//! mis-decoded reply shape fails here before an independent client notices it.
//!
//! Adding a fixture means adding a line to [`FIXTURES`]; `every_fixture_is_listed`
//! fails until that is done.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use teamhub_protocol::rest::{
    ActivityPageResponse, ApiKeyCreated, ApiKeyList, ConflictBody, CreateWebhookRequest,
    DeliveryList, ErrorBody, HistoryResponse, PatternBody, PresenceResponse, PublishRequest,
    PublishResponse, RevokeResponse, UsageResponse, WebhookCreated, WebhookList,
};
use teamhub_protocol::{
    ClientFrame, ClientOp, ErrorCode, KickReason, ReplyBody, SeedFrame, SeedPublish, ServerFrame,
    decode_client_frame,
};

/// How a fixture is decoded.
#[derive(Clone, Copy, Debug)]
enum Codec {
    /// A `/ws` client frame, through `decode_client_frame` like the hub reads it.
    Client,
    /// A `/ws` server frame, through serde into `ServerFrame` like a client reads it.
    Server,
    /// What a client sends on the seed endpoint `/ws/{team}`.
    SeedPublish,
    /// What a client receives on the seed endpoint.
    Seed,
    RestError,
    RestPublishRequest,
    RestPublishResponse,
    RestPresence,
    RestHistory,
    RestActivityPage,
    RestApiKeyCreated,
    RestApiKeyList,
    RestRevoke,
    RestWebhookCreate,
    RestWebhookCreated,
    RestWebhookList,
    RestWebhookDeliveries,
    RestPattern,
    RestPatternConflict,
    /// `GET /api/v1/teams/{team}/usage`.
    RestUsage,
}

/// Every fixture, by path under `fixtures/`, with its codec.
const FIXTURES: &[(&str, Codec)] = &[
    ("client/join.json", Codec::Client),
    ("client/join_since_meta.json", Codec::Client),
    ("client/leave.json", Codec::Client),
    ("client/publish.json", Codec::Client),
    ("client/publish_echo.json", Codec::Client),
    ("client/presence.json", Codec::Client),
    ("client/refresh.json", Codec::Client),
    ("client/ping.json", Codec::Client),
    ("client/ping_no_id.json", Codec::Client),
    ("client/seed_publish.json", Codec::SeedPublish),
    ("server/reply_join.json", Codec::Server),
    ("server/reply_join_not_recovered.json", Codec::Server),
    ("server/reply_publish.json", Codec::Server),
    ("server/reply_presence.json", Codec::Server),
    ("server/reply_refresh.json", Codec::Server),
    ("server/reply_leave.json", Codec::Server),
    ("server/pong.json", Codec::Server),
    ("server/pong_no_id.json", Codec::Server),
    ("server/message.json", Codec::Server),
    ("server/presence_diff.json", Codec::Server),
    ("server/kicked_revoked.json", Codec::Server),
    ("server/kicked_role_removed.json", Codec::Server),
    ("server/error.json", Codec::Server),
    ("server/error_null_id.json", Codec::Server),
    ("server/seed_message.json", Codec::Seed),
    ("server/seed_presence_join.json", Codec::Seed),
    ("server/seed_system_error.json", Codec::Seed),
    ("server/rest_error.json", Codec::RestError),
    (
        "server/rest_publish_request.json",
        Codec::RestPublishRequest,
    ),
    (
        "server/rest_publish_response.json",
        Codec::RestPublishResponse,
    ),
    ("server/rest_presence_response.json", Codec::RestPresence),
    ("server/rest_history_response.json", Codec::RestHistory),
    ("server/rest_activity_page.json", Codec::RestActivityPage),
    ("server/rest_apikey_created.json", Codec::RestApiKeyCreated),
    ("server/rest_apikey_list.json", Codec::RestApiKeyList),
    ("server/rest_revoke_response.json", Codec::RestRevoke),
    (
        "server/rest_webhook_create_request.json",
        Codec::RestWebhookCreate,
    ),
    (
        "server/rest_webhook_created.json",
        Codec::RestWebhookCreated,
    ),
    ("server/rest_webhook_list.json", Codec::RestWebhookList),
    (
        "server/rest_webhook_deliveries.json",
        Codec::RestWebhookDeliveries,
    ),
    ("server/rest_pattern.json", Codec::RestPattern),
    (
        "server/rest_pattern_conflict.json",
        Codec::RestPatternConflict,
    ),
    ("server/message_pattern_updated.json", Codec::Server),
    ("server/rest_usage_response.json", Codec::RestUsage),
];

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn read(name: &str) -> String {
    let path = fixtures_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn serde_round_trip<T: DeserializeOwned + Serialize>(text: &str) -> Value {
    let decoded: T = serde_json::from_str(text)
        .unwrap_or_else(|e| panic!("does not decode as {}: {e}", std::any::type_name::<T>()));
    serde_json::to_value(&decoded).unwrap()
}

/// Decodes `text` with `codec` and encodes the result again.
fn round_trip(codec: Codec, text: &str) -> Value {
    match codec {
        Codec::Client => {
            let frame = decode_client_frame(text).unwrap_or_else(|e| panic!("{e}"));
            serde_json::to_value(&frame).unwrap()
        }
        Codec::Server => serde_round_trip::<ServerFrame>(text),
        Codec::SeedPublish => serde_round_trip::<SeedPublish>(text),
        Codec::Seed => serde_round_trip::<SeedFrame>(text),
        Codec::RestError => serde_round_trip::<ErrorBody>(text),
        Codec::RestPublishRequest => serde_round_trip::<PublishRequest>(text),
        Codec::RestPublishResponse => serde_round_trip::<PublishResponse>(text),
        Codec::RestPresence => serde_round_trip::<PresenceResponse>(text),
        Codec::RestHistory => serde_round_trip::<HistoryResponse>(text),
        Codec::RestActivityPage => serde_round_trip::<ActivityPageResponse>(text),
        Codec::RestApiKeyCreated => serde_round_trip::<ApiKeyCreated>(text),
        Codec::RestApiKeyList => serde_round_trip::<ApiKeyList>(text),
        Codec::RestRevoke => serde_round_trip::<RevokeResponse>(text),
        Codec::RestWebhookCreate => serde_round_trip::<CreateWebhookRequest>(text),
        Codec::RestWebhookCreated => serde_round_trip::<WebhookCreated>(text),
        Codec::RestWebhookList => serde_round_trip::<WebhookList>(text),
        Codec::RestWebhookDeliveries => serde_round_trip::<DeliveryList>(text),
        Codec::RestPattern => serde_round_trip::<PatternBody>(text),
        Codec::RestPatternConflict => serde_round_trip::<ConflictBody>(text),
        Codec::RestUsage => serde_round_trip::<UsageResponse>(text),
    }
}

/// The one data-driven check: `name` decodes with its codec and re-encodes to the same
/// JSON value. Returns the fixture text for callers that look closer.
fn check(name: &str) -> String {
    let &(_, codec) = FIXTURES
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("{name} is not listed in FIXTURES"));
    let text = read(name);
    let expected: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"));
    let actual = round_trip(codec, &text);
    assert_eq!(
        actual,
        expected,
        "{name} does not round-trip through {codec:?}\nexpected: {}\n  actual: {}",
        serde_json::to_string_pretty(&expected).unwrap(),
        serde_json::to_string_pretty(&actual).unwrap(),
    );
    text
}

fn server_frame(name: &str) -> ServerFrame {
    serde_json::from_str(&check(name)).unwrap()
}

fn reply_body(name: &str) -> (Option<u64>, ReplyBody) {
    match server_frame(name) {
        ServerFrame::Reply(reply) => {
            assert!(reply.ok, "{name}: replies are ok:true");
            (reply.id, reply.body)
        }
        other => panic!("{name}: expected a reply, got {other:?}"),
    }
}

#[test]
fn every_fixture_round_trips() {
    for (name, _) in FIXTURES {
        check(name);
    }
}

#[test]
fn every_fixture_is_listed() {
    let mut on_disk = BTreeSet::new();
    for dir in ["client", "server"] {
        for entry in std::fs::read_dir(fixtures_dir().join(dir)).unwrap() {
            let file = entry.unwrap().file_name().into_string().unwrap();
            on_disk.insert(format!("{dir}/{file}"));
        }
    }
    let listed: BTreeSet<String> = FIXTURES.iter().map(|(n, _)| n.to_string()).collect();
    let unlisted: Vec<_> = on_disk.difference(&listed).collect();
    let missing: Vec<_> = listed.difference(&on_disk).collect();
    assert!(unlisted.is_empty(), "fixtures without a case: {unlisted:?}");
    assert!(missing.is_empty(), "cases without a fixture: {missing:?}");
    // Nothing else hides in fixtures/: every subdirectory is scanned above.
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        assert!(
            ["client", "server"].contains(&name.as_str()),
            "unexpected fixtures/{name}"
        );
    }
}

// Client frames decode to the op their file is named after.

fn client_frame(name: &str) -> ClientFrame {
    decode_client_frame(&check(name)).unwrap()
}

#[test]
fn client_join_carries_since_and_meta() {
    let ClientOp::Join(plain) = client_frame("client/join.json").op else {
        panic!("not a join")
    };
    assert!(plain.since.is_none() && plain.meta.is_none());

    let frame = client_frame("client/join_since_meta.json");
    assert_eq!(frame.id, Some(2));
    let ClientOp::Join(join) = frame.op else {
        panic!("not a join")
    };
    assert_eq!(join.since.as_ref().map(|s| s.offset), Some(41));
    let meta = join.meta_object().unwrap().unwrap();
    assert_eq!(meta["status"], "busy");
}

#[test]
fn client_publish_echo_defaults_to_false() {
    let ClientOp::Publish(p) = client_frame("client/publish.json").op else {
        panic!("not a publish")
    };
    assert!(!p.echo);
    assert_eq!(p.ty.as_str(), "chat.message");
    let ClientOp::Publish(p) = client_frame("client/publish_echo.json").op else {
        panic!("not a publish")
    };
    assert!(p.echo);
}

#[test]
fn client_ping_id_is_optional() {
    assert_eq!(client_frame("client/ping.json").id, Some(8));
    let frame = client_frame("client/ping_no_id.json");
    assert_eq!((frame.id, frame.op), (None, ClientOp::Ping));
}

#[test]
fn client_other_ops() {
    assert!(matches!(
        client_frame("client/leave.json").op,
        ClientOp::Leave(_)
    ));
    assert!(matches!(
        client_frame("client/presence.json").op,
        ClientOp::Presence(_)
    ));
    assert!(matches!(
        client_frame("client/refresh.json").op,
        ClientOp::Refresh(_)
    ));
}

// The five reply shapes. `ReplyBody` is untagged, so each shape must land in its own
// variant, not in the first one that happens to fit.

#[test]
fn reply_join_with_presence_and_missed() {
    let (id, body) = reply_body("server/reply_join.json");
    assert_eq!(id, Some(2));
    let ReplyBody::Join(join) = body else {
        panic!("not a join reply: {body:?}")
    };
    assert!(join.recovered);
    assert_eq!(join.offset, 43);
    assert_eq!(join.presence.len(), 2);
    assert_eq!(join.presence[1].name, None);
    let offsets: Vec<u64> = join.missed.iter().map(|m| m.offset).collect();
    assert_eq!(offsets, [42, 43]);
}

#[test]
fn reply_join_not_recovered() {
    let (_, body) = reply_body("server/reply_join_not_recovered.json");
    let ReplyBody::Join(join) = body else {
        panic!("not a join reply: {body:?}")
    };
    assert!(!join.recovered && join.missed.is_empty());
    assert_eq!(join.offset, 0);
}

#[test]
fn reply_publish() {
    let (id, body) = reply_body("server/reply_publish.json");
    assert_eq!(id, Some(4));
    assert!(
        matches!(body, ReplyBody::Publish(ref p) if p.offset == 44),
        "{body:?}"
    );
}

#[test]
fn reply_presence() {
    let (_, body) = reply_body("server/reply_presence.json");
    assert!(
        matches!(body, ReplyBody::Presence(ref p) if p.presence.len() == 2),
        "{body:?}"
    );
}

#[test]
fn reply_refresh() {
    let (_, body) = reply_body("server/reply_refresh.json");
    assert!(
        matches!(body, ReplyBody::Refresh(ref r) if r.exp == 1_795_341_600),
        "{body:?}"
    );
}

#[test]
fn reply_leave_is_empty() {
    let (id, body) = reply_body("server/reply_leave.json");
    assert_eq!(id, Some(3));
    assert!(matches!(body, ReplyBody::Empty {}), "{body:?}");
}

// The other server frames.

#[test]
fn pong_echoes_the_id_or_null() {
    assert!(matches!(
        server_frame("server/pong.json"),
        ServerFrame::Pong { id: Some(8) }
    ));
    assert!(matches!(
        server_frame("server/pong_no_id.json"),
        ServerFrame::Pong { id: None }
    ));
}

#[test]
fn message_frame() {
    let ServerFrame::Message(m) = server_frame("server/message.json") else {
        panic!("not a message")
    };
    assert_eq!(
        (m.offset, m.user.as_str(), m.ts.as_str()),
        (44, "alice", "2026-11-22T10:00:00.123Z")
    );
}

#[test]
fn presence_diff_frame() {
    let ServerFrame::PresenceDiff(d) = server_frame("server/presence_diff.json") else {
        panic!("not a presence_diff")
    };
    assert_eq!(
        (d.joins.len(), d.leaves.len(), d.joins[0].user.as_str()),
        (1, 1, "carol")
    );
}

#[test]
fn kicked_both_reasons() {
    for (name, reason) in [
        ("server/kicked_revoked.json", KickReason::Revoked),
        ("server/kicked_role_removed.json", KickReason::RoleRemoved),
    ] {
        let ServerFrame::Kicked(k) = server_frame(name) else {
            panic!("{name}: not kicked")
        };
        assert_eq!(k.reason, reason);
    }
}

#[test]
fn error_with_and_without_id() {
    let ServerFrame::Error(e) = server_frame("server/error.json") else {
        panic!("not an error")
    };
    assert_eq!((e.id, e.code), (Some(4), ErrorCode::Forbidden));
    let ServerFrame::Error(e) = server_frame("server/error_null_id.json") else {
        panic!("not an error")
    };
    assert_eq!((e.id, e.code), (None, ErrorCode::BadRequest));
}

#[test]
fn seed_frames_have_exactly_three_fields() {
    for name in [
        "server/seed_message.json",
        "server/seed_presence_join.json",
        "server/seed_system_error.json",
    ] {
        let text = check(name);
        assert!(
            serde_json::from_str::<ServerFrame>(&text).is_err(),
            "{name} must not pass for a /ws frame"
        );
        let mut extra: Value = serde_json::from_str(&text).unwrap();
        extra["ts"] = "2026-11-22T10:00:00.123Z".into();
        assert!(
            serde_json::from_value::<SeedFrame>(extra).is_err(),
            "{name}: a fourth field must be refused"
        );
    }
}

#[test]
fn rest_history_messages_are_message_frames() {
    let history: HistoryResponse =
        serde_json::from_str(&check("server/rest_history_response.json")).unwrap();
    assert!(history.messages.iter().all(|m| m.op == "message"));
    // The same bytes decode as a live `message` frame.
    let first = serde_json::to_string(&history.messages[0]).unwrap();
    assert!(matches!(
        serde_json::from_str::<ServerFrame>(&first).unwrap(),
        ServerFrame::Message(_)
    ));
}

/// `docs/protocol.md` shows every fixture, and nothing but fixtures, so the examples a
/// client author copies are the ones tested here.
#[test]
fn the_protocol_doc_shows_exactly_the_fixtures() {
    let doc_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/protocol.md");
    let doc = std::fs::read_to_string(&doc_path)
        .unwrap_or_else(|e| panic!("{}: {e}", doc_path.display()));
    let mut examples = Vec::new();
    let mut rest = doc.as_str();
    while let Some(start) = rest.find("```json\n") {
        let body = &rest[start + "```json\n".len()..];
        let end = body.find("```").expect("unterminated json block");
        let value: Value = serde_json::from_str(&body[..end])
            .unwrap_or_else(|e| panic!("a json block in docs/protocol.md is invalid: {e}"));
        examples.push(value);
        rest = &body[end + 3..];
    }
    let fixtures: Vec<(&str, Value)> = FIXTURES
        .iter()
        .map(|(name, _)| (*name, serde_json::from_str(&read(name)).unwrap()))
        .collect();
    for example in &examples {
        assert!(
            fixtures.iter().any(|(_, f)| f == example),
            "docs/protocol.md shows an example that is no fixture: {example}"
        );
    }
    for (name, fixture) in &fixtures {
        assert!(
            examples.contains(fixture),
            "docs/protocol.md does not show {name}"
        );
    }
}
