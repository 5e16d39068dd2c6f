//! The [`WebhookStore`] and [`Outbox`] contracts as runnable checks. They expect a
//! freshly migrated database of their own (the outbox's stats are global).

use std::collections::{HashMap, HashSet};
use std::time::Duration as StdDuration;

use teamhub_protocol::{TeamId, UserId};
use time::{Duration, OffsetDateTime};
use uuid::Uuid;

use crate::Database;
use crate::activity::ActivityEvent;
use crate::webhooks::{
    Attempt, DeliveryStatus, EndpointUpdate, Outbox, ROTATION_OVERLAP, RetryRefused,
    WebhookEndpoint, WebhookEvent, WebhookStore,
};

const LEASE: StdDuration = StdDuration::from_secs(30);

fn team(name: &str) -> TeamId {
    TeamId::new(&format!("{name}-{}", Uuid::new_v4().simple())).unwrap()
}

/// An endpoint of `team` for these prefixes, enabled.
pub fn endpoint(team: &TeamId, events: &[&str]) -> WebhookEndpoint {
    let now = crate::now_utc();
    WebhookEndpoint {
        id: format!("wh_{}", Uuid::now_v7().simple()),
        team: team.clone(),
        url: "https://hooks.example.com/in".to_owned(),
        events: events.iter().map(|s| (*s).to_owned()).collect(),
        description: "test".to_owned(),
        enabled: true,
        secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
        previous_secret: None,
        previous_until: None,
        created_at: now,
        updated_at: now,
    }
}

fn event(team: &TeamId, action: &str) -> ActivityEvent {
    ActivityEvent::new(team.clone(), UserId::new("alice").unwrap(), action)
}

fn later() -> OffsetDateTime {
    crate::now_utc() + Duration::seconds(1)
}

fn no_room() -> HashMap<String, usize> {
    HashMap::new()
}

/// Marks every delivery left by earlier checks delivered, so a check's claims see only
/// its own.
async fn drain(o: &dyn Outbox) {
    let far = crate::now_utc() + Duration::days(2);
    loop {
        let got = o
            .claim("drain", far, LEASE, 500, &no_room(), 500)
            .await
            .unwrap();
        if got.is_empty() {
            return;
        }
        for c in got {
            let done = Attempt {
                status: DeliveryStatus::Delivered,
                status_code: Some(200),
                error: None,
                next_attempt_at: far,
                disable_endpoint: false,
            };
            o.finish(&c.delivery.id, "drain", &done).await.unwrap();
        }
    }
}

/// Runs every check; `other` is a second handle on the same database (another node's
/// pool) for the racing claims.
pub async fn run_all(db: &Database, other: &Database) {
    endpoints_round_trip(db.webhook_store().as_ref()).await;
    activity_batches_fill_the_outbox(db).await;
    claims_lease_and_finish(db).await;
    room_per_endpoint(db).await;
    gone_disables_the_endpoint(db).await;
    manual_retry(db).await;
    enqueue_is_idempotent_by_event(db).await;
    deleting_an_endpoint_deletes_its_deliveries(db).await;
    racing_claims_take_each_delivery_once(db, other).await;
    stats_count_pending(db).await;
}

pub async fn endpoints_round_trip(s: &dyn WebhookStore) {
    let t = team("round-trip");
    let a = endpoint(&t, &["doc.", "presence."]);
    let mut b = endpoint(&t, &["*"]);
    b.created_at = a.created_at + Duration::milliseconds(1);
    b.updated_at = b.created_at;
    s.create(&a).await.unwrap();
    s.create(&b).await.unwrap();
    assert!(s.create(&a).await.is_err(), "an id is stored once");
    let elsewhere = endpoint(&team("elsewhere"), &["*"]);
    s.create(&elsewhere).await.unwrap();

    assert_eq!(
        s.list(&t).await.unwrap(),
        [a.clone(), b.clone()],
        "oldest first"
    );
    assert_eq!(s.get(&t, &a.id).await.unwrap().as_ref(), Some(&a));
    assert_eq!(
        s.get(&t, &elsewhere.id).await.unwrap(),
        None,
        "teams are isolated"
    );

    let now = crate::now_utc();
    let update = EndpointUpdate {
        url: Some("https://other.example.com/x".to_owned()),
        events: Some(vec!["pattern.".to_owned()]),
        description: None,
        enabled: Some(false),
    };
    let got = s.update(&t, &a.id, &update, now).await.unwrap().unwrap();
    assert_eq!(got.url, "https://other.example.com/x");
    assert_eq!(got.events, ["pattern."]);
    assert_eq!(got.description, "test", "an absent field is kept");
    assert!(!got.enabled);
    assert_eq!(got.updated_at, now);
    assert_eq!(s.get(&t, &a.id).await.unwrap(), Some(got));
    assert_eq!(
        s.update(&t, "wh_none", &update, now).await.unwrap(),
        None,
        "unknown endpoint"
    );

    let rotated = s
        .rotate(&t, &b.id, "whsec_bmV3LXNlY3JldC1vZi0yNC1ieXRlcyE=", now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rotated.secret, "whsec_bmV3LXNlY3JldC1vZi0yNC1ieXRlcyE=");
    assert_eq!(rotated.previous_secret.as_deref(), Some(b.secret.as_str()));
    assert_eq!(rotated.previous_until, Some(now + ROTATION_OVERLAP));
    assert_eq!(
        rotated.signing_secrets(now + Duration::hours(23)),
        [rotated.secret.as_str(), b.secret.as_str()],
        "both sign during the overlap"
    );
    assert_eq!(
        rotated.signing_secrets(now + Duration::hours(25)),
        [rotated.secret.as_str()],
        "only the new one after it"
    );
    assert_eq!(s.rotate(&t, "wh_none", "x", now).await.unwrap(), None);

    assert!(s.delete(&t, &a.id).await.unwrap());
    assert!(!s.delete(&t, &a.id).await.unwrap(), "deleted once");
    assert!(
        !s.delete(&t, &elsewhere.id).await.unwrap(),
        "not another team's"
    );
    assert_eq!(s.list(&t).await.unwrap().len(), 1);
}

/// An activity batch creates one delivery per (event, matching enabled endpoint), with
/// the contract's body; writing the batch again adds none.
pub async fn activity_batches_fill_the_outbox(db: &Database) {
    let (s, o) = (db.webhook_store(), db.outbox());
    let t = team("batch");
    let docs = endpoint(&t, &["doc."]);
    let all = endpoint(&t, &[""]);
    let mut off = endpoint(&t, &["*"]);
    off.enabled = false;
    for e in [&docs, &all, &off] {
        s.create(e).await.unwrap();
    }
    let other = team("batch-other");
    let edit = event(&t, "doc.edit").with_resource("document", "d1");
    let batch = [
        edit.clone(),
        event(&t, "presence.joined"),
        event(&other, "doc.edit"),
    ];
    let sink = db.activity_sink();
    sink.write_batch(&batch).await.unwrap();
    sink.write_batch(&batch).await.unwrap();

    let got = o.deliveries(&t, &docs.id, 10).await.unwrap();
    assert_eq!(got.len(), 1, "{got:#?}");
    let d = &got[0];
    assert_eq!(d.event_id, edit.id);
    assert_eq!(d.event_type, "doc.edit");
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.attempts, 0);
    assert!(d.id.starts_with("msg_"), "{}", d.id);
    let body: serde_json::Value = serde_json::from_str(&d.payload).unwrap();
    assert_eq!(body["type"], "doc.edit");
    assert_eq!(body["data"]["id"], edit.id.to_string());
    assert_eq!(body["data"]["resource_id"], "d1");
    assert_eq!(body["data"]["team"], t.as_str());
    let at = time::OffsetDateTime::parse(
        body["timestamp"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(at, edit.created_at, "timestamp is the event's time");

    let got = o.deliveries(&t, &all.id, 10).await.unwrap();
    assert_eq!(got.len(), 2, "every type: {got:#?}");
    assert!(
        o.deliveries(&t, &off.id, 10).await.unwrap().is_empty(),
        "disabled"
    );
}

/// A claim leases a due delivery to one owner; others see nothing until it is
/// finished or the lease expires; finishing records the attempt.
pub async fn claims_lease_and_finish(db: &Database) {
    drain(db.outbox().as_ref()).await;
    let (s, o) = (db.webhook_store(), db.outbox());
    let t = team("claim");
    let e = endpoint(&t, &["*"]);
    s.create(&e).await.unwrap();
    db.activity_sink()
        .write_batch(&[event(&t, "doc.edit")])
        .await
        .unwrap();
    let now = later();
    let got = o.claim("a", now, LEASE, 10, &no_room(), 4).await.unwrap();
    assert_eq!(got.len(), 1);
    let id = got[0].delivery.id.clone();
    assert_eq!(got[0].endpoint, e);
    assert!(
        o.claim("b", now, LEASE, 10, &no_room(), 4)
            .await
            .unwrap()
            .is_empty(),
        "leased to a"
    );
    let retry_at = now + Duration::minutes(5);
    let attempt = Attempt {
        status: DeliveryStatus::Pending,
        status_code: Some(500),
        error: Some("HTTP 500".to_owned()),
        next_attempt_at: retry_at,
        disable_endpoint: false,
    };
    assert!(!o.finish(&id, "b", &attempt).await.unwrap(), "not b's");
    assert!(o.finish(&id, "a", &attempt).await.unwrap());
    assert!(
        !o.finish(&id, "a", &attempt).await.unwrap(),
        "lease released"
    );
    let d = &o.deliveries(&t, &e.id, 1).await.unwrap()[0];
    assert_eq!(
        (d.status, d.attempts, d.last_status_code, d.next_attempt_at),
        (DeliveryStatus::Pending, 1, Some(500), retry_at)
    );
    assert!(
        o.claim("a", now, LEASE, 10, &no_room(), 4)
            .await
            .unwrap()
            .is_empty(),
        "not due yet"
    );

    // Due again; a's lease then expires (a died) and b takes it.
    let due = retry_at + Duration::seconds(1);
    assert_eq!(
        o.claim("a", due, LEASE, 10, &no_room(), 4)
            .await
            .unwrap()
            .len(),
        1
    );
    let expired = due + Duration::try_from(LEASE).unwrap() + Duration::seconds(1);
    assert!(
        o.claim("b", due, LEASE, 10, &no_room(), 4)
            .await
            .unwrap()
            .is_empty()
    );
    let taken = o
        .claim("b", expired, LEASE, 10, &no_room(), 4)
        .await
        .unwrap();
    assert_eq!(taken.len(), 1, "an expired lease is taken over");
    assert!(!o.finish(&id, "a", &attempt).await.unwrap(), "a lost it");
    let done = Attempt {
        status: DeliveryStatus::Delivered,
        status_code: Some(204),
        error: None,
        next_attempt_at: expired,
        disable_endpoint: false,
    };
    assert!(o.finish(&id, "b", &done).await.unwrap());
    let d = &o.deliveries(&t, &e.id, 1).await.unwrap()[0];
    assert_eq!((d.status, d.attempts), (DeliveryStatus::Delivered, 2));
    assert!(
        o.claim("c", expired + Duration::hours(1), LEASE, 10, &no_room(), 4)
            .await
            .unwrap()
            .is_empty(),
        "delivered is never claimed again"
    );
}

/// `room` bounds what one claim takes per endpoint.
pub async fn room_per_endpoint(db: &Database) {
    drain(db.outbox().as_ref()).await;
    let (s, o) = (db.webhook_store(), db.outbox());
    let t = team("room");
    let (a, b) = (endpoint(&t, &["*"]), endpoint(&t, &["*"]));
    s.create(&a).await.unwrap();
    s.create(&b).await.unwrap();
    let events: Vec<_> = (0..5).map(|i| event(&t, &format!("n.{i}"))).collect();
    db.activity_sink().write_batch(&events).await.unwrap();
    let room = HashMap::from([(b.id.clone(), 1)]);
    let got = o.claim("x", later(), LEASE, 100, &room, 2).await.unwrap();
    let per: HashMap<&str, usize> = got.iter().fold(HashMap::new(), |mut m, c| {
        *m.entry(c.endpoint.id.as_str()).or_default() += 1;
        m
    });
    assert_eq!(per.get(a.id.as_str()), Some(&2), "{per:?}");
    assert_eq!(per.get(b.id.as_str()), Some(&1), "{per:?}");
    let got = o
        .claim("x", later(), LEASE, 1, &HashMap::new(), 10)
        .await
        .unwrap();
    assert_eq!(got.len(), 1, "limit");
}

/// An attempt that disables the endpoint (410) stops claims of its other deliveries
/// until it is enabled again.
pub async fn gone_disables_the_endpoint(db: &Database) {
    drain(db.outbox().as_ref()).await;
    let (s, o) = (db.webhook_store(), db.outbox());
    let t = team("gone");
    let e = endpoint(&t, &["*"]);
    s.create(&e).await.unwrap();
    db.activity_sink()
        .write_batch(&[event(&t, "a"), event(&t, "b")])
        .await
        .unwrap();
    let got = o
        .claim("x", later(), LEASE, 1, &no_room(), 4)
        .await
        .unwrap();
    let gone = Attempt {
        status: DeliveryStatus::Failed,
        status_code: Some(410),
        error: Some("HTTP 410".to_owned()),
        next_attempt_at: later(),
        disable_endpoint: true,
    };
    assert!(o.finish(&got[0].delivery.id, "x", &gone).await.unwrap());
    assert!(!s.get(&t, &e.id).await.unwrap().unwrap().enabled);
    assert!(
        o.claim("x", later(), LEASE, 10, &no_room(), 4)
            .await
            .unwrap()
            .is_empty(),
        "nothing is sent to a disabled endpoint"
    );
    let on = EndpointUpdate {
        enabled: Some(true),
        ..EndpointUpdate::default()
    };
    s.update(&t, &e.id, &on, crate::now_utc()).await.unwrap();
    assert_eq!(
        o.claim("x", later(), LEASE, 10, &no_room(), 4)
            .await
            .unwrap()
            .len(),
        1,
        "the other delivery waited"
    );
}

pub async fn manual_retry(db: &Database) {
    drain(db.outbox().as_ref()).await;
    let (s, o) = (db.webhook_store(), db.outbox());
    let t = team("retry");
    let e = endpoint(&t, &["*"]);
    s.create(&e).await.unwrap();
    db.activity_sink()
        .write_batch(&[event(&t, "a")])
        .await
        .unwrap();
    let id = o.deliveries(&t, &e.id, 1).await.unwrap()[0].id.clone();
    let now = later();
    assert_eq!(
        o.retry(&t, &e.id, &id, now).await.unwrap(),
        Err(RetryRefused::NotFailed)
    );
    assert_eq!(
        o.retry(&t, &e.id, "msg_none", now).await.unwrap(),
        Err(RetryRefused::NotFound)
    );
    assert_eq!(
        o.retry(&team("x"), &e.id, &id, now).await.unwrap(),
        Err(RetryRefused::NotFound),
        "not another team's"
    );
    let got = o.claim("x", now, LEASE, 1, &no_room(), 4).await.unwrap();
    let failed = Attempt {
        status: DeliveryStatus::Failed,
        status_code: None,
        error: Some("timed out".to_owned()),
        next_attempt_at: now,
        disable_endpoint: false,
    };
    o.finish(&got[0].delivery.id, "x", &failed).await.unwrap();
    let d = &o.deliveries(&t, &e.id, 1).await.unwrap()[0];
    assert_eq!(d.status, DeliveryStatus::Failed);
    assert_eq!(d.last_error.as_deref(), Some("timed out"));
    let retried = o.retry(&t, &e.id, &id, now).await.unwrap().unwrap();
    assert_eq!(retried.status, DeliveryStatus::Pending);
    assert_eq!(
        o.claim("x", now, LEASE, 1, &no_room(), 4)
            .await
            .unwrap()
            .len(),
        1,
        "claimable again"
    );
}

pub async fn enqueue_is_idempotent_by_event(db: &Database) {
    let (s, o) = (db.webhook_store(), db.outbox());
    let t = team("enqueue");
    let occupied = endpoint(&t, &["team."]);
    let docs = endpoint(&t, &["doc."]);
    s.create(&occupied).await.unwrap();
    s.create(&docs).await.unwrap();
    let ev = WebhookEvent {
        id: Uuid::new_v4(),
        team: t.clone(),
        ty: "team.occupied".to_owned(),
        at: crate::now_utc(),
        data: serde_json::json!({"team": t.as_str()}),
    };
    assert_eq!(o.enqueue(&ev).await.unwrap(), 1);
    assert_eq!(o.enqueue(&ev).await.unwrap(), 0, "the same event again");
    let d = &o.deliveries(&t, &occupied.id, 10).await.unwrap()[0];
    let body: serde_json::Value = serde_json::from_str(&d.payload).unwrap();
    assert_eq!(body["type"], "team.occupied");
    assert_eq!(body["data"], serde_json::json!({"team": t.as_str()}));
}

pub async fn deleting_an_endpoint_deletes_its_deliveries(db: &Database) {
    let (s, o) = (db.webhook_store(), db.outbox());
    let t = team("delete");
    let e = endpoint(&t, &["*"]);
    s.create(&e).await.unwrap();
    db.activity_sink()
        .write_batch(&[event(&t, "a")])
        .await
        .unwrap();
    assert!(s.delete(&t, &e.id).await.unwrap());
    assert!(o.deliveries(&t, &e.id, 10).await.unwrap().is_empty());
    assert!(
        o.claim("x", later(), LEASE, 100, &no_room(), 100)
            .await
            .unwrap()
            .iter()
            .all(|c| c.endpoint.id != e.id)
    );
}

/// Two handles on one database claim at once: every delivery is claimed exactly once.
pub async fn racing_claims_take_each_delivery_once(db: &Database, other: &Database) {
    drain(db.outbox().as_ref()).await;
    let s = db.webhook_store();
    let t = team("race");
    let e = endpoint(&t, &["*"]);
    s.create(&e).await.unwrap();
    let events: Vec<_> = (0..60).map(|i| event(&t, &format!("n.{i}"))).collect();
    db.activity_sink().write_batch(&events).await.unwrap();
    let now = later();
    let eid = e.id.as_str();
    let claimer = |outbox: std::sync::Arc<dyn Outbox>, owner: &'static str| async move {
        let mut mine = Vec::new();
        loop {
            let got = outbox
                .claim(owner, now, LEASE, 3, &no_room(), 100)
                .await
                .unwrap();
            if got.is_empty() {
                return mine;
            }
            mine.extend(
                got.into_iter()
                    .filter(|c| c.endpoint.id == eid)
                    .map(|c| c.delivery.id),
            );
        }
    };
    let (a, b, c) = tokio::join!(
        claimer(db.outbox(), "a"),
        claimer(other.outbox(), "b"),
        claimer(other.outbox(), "c"),
    );
    let total = a.len() + b.len() + c.len();
    let distinct: HashSet<&String> = a.iter().chain(&b).chain(&c).collect();
    assert_eq!(
        total,
        60,
        "every delivery claimed: {} {} {}",
        a.len(),
        b.len(),
        c.len()
    );
    assert_eq!(distinct.len(), 60, "none twice");
}

pub async fn stats_count_pending(db: &Database) {
    let o = db.outbox();
    let before = o.stats().await.unwrap();
    let (s, t) = (db.webhook_store(), team("stats"));
    let e = endpoint(&t, &["*"]);
    s.create(&e).await.unwrap();
    let start = crate::now_utc();
    db.activity_sink()
        .write_batch(&[event(&t, "a"), event(&t, "b")])
        .await
        .unwrap();
    let after = o.stats().await.unwrap();
    assert_eq!(after.pending, before.pending + 2);
    let oldest = after.oldest_pending.unwrap();
    assert!(oldest <= crate::now_utc());
    if before.pending == 0 {
        assert!(oldest >= start);
    }
}
