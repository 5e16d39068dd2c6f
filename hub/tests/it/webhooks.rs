//! Webhooks (contract section 10) against real nodes and a real HTTP receiver on a
//! loopback port, which records every request it gets; every delivery it records is
//! checked against its Standard Webhooks signature (`teamhub::webhooks::sign`, tested
//! against the specification's example; `scripts/checks/webhooks.sh` checks the same
//! with the reference library).
//!
//! Waiting is for an event (a request reaching the receiver, a delivery's state in
//! the log) with a deadline, never a sleep.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use teamhub::webhooks::sign;
use tokio::sync::mpsc;

use crate::harness::{Answer, Db, TestHub, call};
use crate::on_both_backends;

const TEAM: &str = "hooks";

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: i64,
    pub signature: String,
    pub content_type: String,
    pub body: String,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap()
    }

    /// Panics unless a `v1` entry of the signature verifies with `secret`.
    pub fn verify(&self, secret: &str) {
        assert!(
            sign::verify(
                secret,
                &self.id,
                self.timestamp,
                self.body.as_bytes(),
                &self.signature
            ),
            "delivery {} does not verify with {secret}: {}",
            self.id,
            self.signature
        );
    }
}

/// What the receiver answers to one request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    /// A status with `Retry-After: <secs>`.
    RetryAfter(u16, u64),
    /// Never answers (until the connection is dropped).
    Hang,
}

/// An HTTP receiver on a loopback port: answers from its script, then 204.
pub struct Receiver {
    pub url: String,
    rx: mpsc::UnboundedReceiver<Received>,
    _server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start(script: &[Reply]) -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let script = Arc::new(Mutex::new(script.iter().cloned().collect::<VecDeque<_>>()));
        let handler = {
            let script = script.clone();
            move |headers: HeaderMap, body: Bytes| {
                let (tx, script) = (tx.clone(), script.clone());
                async move {
                    let h = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned()
                    };
                    let got = Received {
                        id: h("webhook-id"),
                        timestamp: h("webhook-timestamp").parse().unwrap_or(-1),
                        signature: h("webhook-signature"),
                        content_type: h("content-type"),
                        body: String::from_utf8_lossy(&body).into_owned(),
                        at: Instant::now(),
                    };
                    let _ = tx.send(got);
                    let reply = script.lock().unwrap().pop_front();
                    let response: Response = match reply {
                        None => StatusCode::NO_CONTENT.into_response(),
                        Some(Reply::Status(s)) => StatusCode::from_u16(s).unwrap().into_response(),
                        Some(Reply::RetryAfter(s, secs)) => (
                            StatusCode::from_u16(s).unwrap(),
                            [("retry-after", secs.to_string())],
                        )
                            .into_response(),
                        Some(Reply::Hang) => std::future::pending().await,
                    };
                    response
                }
            }
        };
        let app = axum::Router::new().fallback(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Receiver {
            url,
            rx,
            _server: server,
        }
    }

    /// The next request, within `within`.
    pub async fn next_within(&mut self, within: Duration) -> Received {
        tokio::time::timeout(within, self.rx.recv())
            .await
            .expect("a delivery in time")
            .expect("receiver running")
    }

    pub async fn next(&mut self) -> Received {
        self.next_within(Duration::from_secs(15)).await
    }

    /// Requests already received and not yet taken.
    pub fn drain(&mut self) -> Vec<Received> {
        std::iter::from_fn(|| self.rx.try_recv().ok()).collect()
    }
}

fn admin(hub: &TestHub) -> String {
    hub.token("root", &[(TEAM, "admin")])
}

/// Creates an endpoint; returns `(id, secret)`.
pub async fn create(hub: &TestHub, url: &str, events: &[&str]) -> (String, String) {
    let a = call(
        hub,
        "POST",
        &format!("/api/v1/teams/{TEAM}/webhooks"),
        Some(&admin(hub)),
        &[],
        Some(json!({"url": url, "events": events, "description": "test receiver"})),
    )
    .await;
    assert_eq!(a.status, 201, "{a:?}");
    (
        a.body["id"].as_str().unwrap().to_owned(),
        a.body["secret"].as_str().unwrap().to_owned(),
    )
}

async fn publish(hub: &TestHub, ty: &str, data: Value) {
    let editor = hub.token("ed", &[(TEAM, "editor")]);
    let a = call(
        hub,
        "POST",
        &format!("/api/v1/teams/{TEAM}/messages"),
        Some(&editor),
        &[],
        Some(json!({"type": ty, "data": data})),
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
}

async fn deliveries(hub: &TestHub, id: &str) -> Vec<Value> {
    let a = call(
        hub,
        "GET",
        &format!("/api/v1/teams/{TEAM}/webhooks/{id}/deliveries?limit=1000"),
        Some(&admin(hub)),
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{a:?}");
    a.body["deliveries"].as_array().unwrap().clone()
}

/// Waits until the endpoint's deliveries log satisfies `done`.
async fn log_until(
    hub: &TestHub,
    id: &str,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = deliveries(hub, id).await;
        if done(&got) {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: deliveries log is {got:#?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the team's activity log holds a row of `action`.
async fn activity_until(hub: &TestHub, action: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let path = format!("/api/v1/teams/{TEAM}/activity?action={action}");
    loop {
        let a = call(hub, "GET", &path, Some(&admin(hub)), &[], None).await;
        assert_eq!(a.status, 200, "{a:?}");
        if a.body
            .to_string()
            .contains(&format!("\"action\":\"{action}\""))
        {
            return;
        }
        assert!(Instant::now() < deadline, "no {action} row: {:?}", a.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn allow() -> Vec<&'static str> {
    vec!["--webhook-allow-private"]
}

// --- REST -----------------------------------------------------------------------

async fn endpoints_are_managed_over_rest(db: Db) {
    let hub = TestHub::start_on(db, &allow()).await;
    let root = admin(&hub);
    let path = format!("/api/v1/teams/{TEAM}/webhooks");
    let (id, secret) = create(&hub, "http://127.0.0.1:9/in", &["doc.", "presence."]).await;
    assert!(id.starts_with("wh_"), "{id}");
    let key = sign::key_of(&secret).expect("whsec_ + standard base64");
    assert!(secret.starts_with("whsec_") && key.len() >= 24, "{secret}");

    let list = call(&hub, "GET", &path, Some(&root), &[], None).await;
    assert_eq!(list.status, 200);
    assert_eq!(list.body["team"], TEAM);
    let first = &list.body["webhooks"][0];
    assert_eq!(first["id"], id.as_str());
    assert_eq!(first["events"], json!(["doc.", "presence."]));
    assert_eq!(first["enabled"], true);
    assert_eq!(first["description"], "test receiver");
    assert!(first.get("secret").is_none(), "no secret in a listing");
    assert!(!list.body.to_string().contains(&secret));

    let one = format!("{path}/{id}");
    let patched = call(
        &hub,
        "PATCH",
        &one,
        Some(&root),
        &[],
        Some(json!({"events": ["*"], "enabled": false})),
    )
    .await;
    assert_eq!(patched.status, 200, "{patched:?}");
    assert_eq!(patched.body["events"], json!(["*"]));
    assert_eq!(patched.body["enabled"], false);
    assert_eq!(patched.body["url"], "http://127.0.0.1:9/in");
    assert!(patched.body.get("secret").is_none());

    let rotated = call(
        &hub,
        "POST",
        &format!("{one}/rotate-secret"),
        Some(&root),
        &[],
        None,
    )
    .await;
    assert_eq!(rotated.status, 200);
    let new = rotated.body["secret"].as_str().unwrap();
    assert!(new.starts_with("whsec_") && new != secret);

    let none = call(
        &hub,
        "GET",
        &format!("{one}/deliveries"),
        Some(&root),
        &[],
        None,
    )
    .await;
    assert_eq!(
        (none.status, none.body.clone()),
        (200, json!({"deliveries": []}))
    );

    // Only admins; bad input is 400; unknown ids 404.
    let editor = hub.token("ed", &[(TEAM, "editor")]);
    let body = json!({"url": "http://127.0.0.1:9/", "events": ["*"]});
    let refused = call(&hub, "POST", &path, Some(&editor), &[], Some(body.clone())).await;
    assert_eq!(refused.status, 403);
    assert_eq!(
        call(&hub, "GET", &path, Some(&editor), &[], None)
            .await
            .status,
        403
    );
    for bad in [
        json!({"url": "ftp://example.com/", "events": ["*"]}),
        json!({"url": "not a url", "events": ["*"]}),
        json!({"url": "http://127.0.0.1:9/", "events": []}),
        json!({"url": "http://127.0.0.1:9/", "events": ["bad prefix!"]}),
        json!({"events": ["*"]}),
    ] {
        let a = call(&hub, "POST", &path, Some(&root), &[], Some(bad.clone())).await;
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{bad}");
    }
    let missing = format!("{path}/wh_missing");
    for (method, p) in [
        ("PATCH", missing.clone()),
        ("DELETE", missing.clone()),
        ("POST", format!("{missing}/rotate-secret")),
        ("GET", format!("{missing}/deliveries")),
        ("POST", format!("{one}/deliveries/msg_missing/retry")),
    ] {
        let body = (method == "PATCH").then(|| json!({"enabled": true}));
        let a = call(&hub, method, &p, Some(&root), &[], body).await;
        assert_eq!(a.status, 404, "{method} {p}: {a:?}");
    }

    assert_eq!(
        call(&hub, "DELETE", &one, Some(&root), &[], None)
            .await
            .status,
        204
    );
    assert_eq!(
        call(&hub, "DELETE", &one, Some(&root), &[], None)
            .await
            .status,
        404
    );
    let list = call(&hub, "GET", &path, Some(&root), &[], None).await;
    assert_eq!(list.body["webhooks"], json!([]));
}

// --- Deliveries -----------------------------------------------------------------

async fn deliveries_are_signed_and_carry_the_activity_row(db: Db) {
    let hub = TestHub::start_on(db, &allow()).await;
    let mut rx = Receiver::start(&[]).await;
    let (id, secret) = create(&hub, &rx.url, &["doc."]).await;
    publish(&hub, "chat.said", json!({"text": "not for this endpoint"})).await;
    publish(
        &hub,
        "doc.edit",
        json!({"resource_type": "document", "resource_id": "d1", "n": 1}),
    )
    .await;

    let got = rx.next().await;
    got.verify(&secret);
    assert_eq!(got.content_type, "application/json");
    assert!(got.id.starts_with("msg_"), "{}", got.id);
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!(
        (now - got.timestamp).abs() < 60,
        "webhook-timestamp is now: {}",
        got.timestamp
    );
    assert_eq!(
        got.signature.split(' ').count(),
        1,
        "one secret, one signature"
    );
    let body = got.json();
    assert_eq!(body["type"], "doc.edit");
    assert_eq!(body["data"]["action"], "doc.edit");
    assert_eq!(body["data"]["team"], TEAM);
    assert_eq!(body["data"]["user"], "ed");
    assert_eq!(body["data"]["resource_id"], "d1");
    assert_eq!(body["data"]["metadata"]["n"], 1);
    assert_eq!(body["timestamp"], body["data"]["created_at"]);

    let log = log_until(&hub, &id, "delivered", |d| {
        d.len() == 1 && d[0]["status"] == "delivered"
    })
    .await;
    assert_eq!(
        log[0]["id"],
        got.id.as_str(),
        "the log's id is the webhook-id"
    );
    assert_eq!(log[0]["type"], "doc.edit");
    assert_eq!(log[0]["attempts"], 1);
    assert_eq!(log[0]["last_status_code"], 204);
    assert!(rx.drain().is_empty(), "chat.said is not for this endpoint");

    // The delivery counts in the team's usage (counted before it is recorded as
    // delivered, and flushed before a usage request is answered).
    let usage = call(
        &hub,
        "GET",
        &format!("/api/v1/teams/{TEAM}/usage"),
        Some(&admin(&hub)),
        &[],
        None,
    )
    .await;
    assert_eq!(usage.status, 200, "{usage:?}");
    let days = usage.body["days"].as_array().unwrap();
    let total: u64 = days
        .iter()
        .map(|d| d["webhook_deliveries"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 1, "one delivery made: {days:?}");
}

/// 500, then a timeout, then 204: three attempts of one delivery, same id, on the
/// short schedule.
async fn failed_attempts_are_retried_on_the_schedule(db: Db) {
    let hub = TestHub::start_on(
        db,
        &[
            "--webhook-allow-private",
            "--webhook-retry-schedule",
            "100ms,100ms",
            "--webhook-timeout",
            "1",
        ],
    )
    .await;
    let mut rx = Receiver::start(&[Reply::Status(500), Reply::Hang]).await;
    let (id, secret) = create(&hub, &rx.url, &["*"]).await;
    publish(&hub, "doc.edit", json!({})).await;
    let attempts = [rx.next().await, rx.next().await, rx.next().await];
    for a in &attempts {
        a.verify(&secret);
        assert_eq!(a.id, attempts[0].id, "one webhook-id for every attempt");
        assert_eq!(a.body, attempts[0].body, "the same body");
    }
    assert!(
        attempts[2].at - attempts[1].at >= Duration::from_millis(900),
        "the timeout passed"
    );
    let log = log_until(&hub, &id, "delivered on the third attempt", |d| {
        d.first().is_some_and(|d| d["status"] == "delivered")
    })
    .await;
    assert_eq!(
        (
            log[0]["attempts"].clone(),
            log[0]["last_status_code"].clone()
        ),
        (json!(3), json!(204))
    );
}

/// Always 500: one attempt plus one per delay, then `failed`; a manual retry sends it
/// once more.
async fn exhausted_deliveries_fail_and_can_be_retried(db: Db) {
    let hub = TestHub::start_on(
        db,
        &[
            "--webhook-allow-private",
            "--webhook-retry-schedule",
            "50ms,50ms",
        ],
    )
    .await;
    let mut rx =
        Receiver::start(&[Reply::Status(500), Reply::Status(502), Reply::Status(500)]).await;
    let (id, _) = create(&hub, &rx.url, &["*"]).await;
    publish(&hub, "doc.edit", json!({})).await;
    for _ in 0..3 {
        rx.next().await;
    }
    let log = log_until(&hub, &id, "failed", |d| {
        d.first().is_some_and(|d| d["status"] == "failed")
    })
    .await;
    assert_eq!(log[0]["attempts"], 3);
    assert_eq!(log[0]["last_status_code"], 500);
    let delivery = log[0]["id"].as_str().unwrap().to_owned();

    let retry = format!("/api/v1/teams/{TEAM}/webhooks/{id}/deliveries/{delivery}/retry");
    let a = call(&hub, "POST", &retry, Some(&admin(&hub)), &[], None).await;
    assert_eq!(a.status, 202, "{a:?}");
    let again = rx.next().await;
    assert_eq!(again.id, delivery);
    log_until(&hub, &id, "delivered after the retry", |d| {
        d[0]["status"] == "delivered"
    })
    .await;
    let a: Answer = call(&hub, "POST", &retry, Some(&admin(&hub)), &[], None).await;
    assert_eq!(
        (a.status, a.code()),
        (409, "conflict"),
        "only a failed delivery is retried"
    );
}

/// A 429 with `Retry-After: 2` waits two seconds although the schedule says 50 ms.
async fn retry_after_is_honoured(db: Db) {
    let hub = TestHub::start_on(
        db,
        &[
            "--webhook-allow-private",
            "--webhook-retry-schedule",
            "50ms,50ms",
        ],
    )
    .await;
    let mut rx = Receiver::start(&[Reply::RetryAfter(429, 2), Reply::RetryAfter(503, 1)]).await;
    create(&hub, &rx.url, &["*"]).await;
    publish(&hub, "doc.edit", json!({})).await;
    let (a, b, c) = (rx.next().await, rx.next().await, rx.next().await);
    assert!(
        b.at - a.at >= Duration::from_secs(2),
        "429: {:?}",
        b.at - a.at
    );
    assert!(
        c.at - b.at >= Duration::from_secs(1),
        "503: {:?}",
        c.at - b.at
    );
}

/// `410 Gone` fails the delivery and disables the endpoint: events while it is
/// disabled are not queued for it; once enabled again, new events go out.
async fn gone_disables_the_endpoint(db: Db) {
    let hub = TestHub::start_on(db, &allow()).await;
    let mut rx = Receiver::start(&[Reply::Status(410)]).await;
    let (id, _) = create(&hub, &rx.url, &["*"]).await;
    publish(&hub, "doc.one", json!({})).await;
    let gone = rx.next().await;
    let log = log_until(&hub, &id, "failed", |d| {
        d.first().is_some_and(|d| d["status"] == "failed")
    })
    .await;
    assert_eq!(log[0]["last_status_code"], 410);
    let path = format!("/api/v1/teams/{TEAM}/webhooks");
    let list = call(&hub, "GET", &path, Some(&admin(&hub)), &[], None).await;
    assert_eq!(list.body["webhooks"][0]["enabled"], false, "disabled");

    publish(&hub, "doc.two", json!({})).await;
    // Deliveries are queued when the event's activity row is written: wait for it.
    activity_until(&hub, "doc.two").await;
    let on = call(
        &hub,
        "PATCH",
        &format!("{path}/{id}"),
        Some(&admin(&hub)),
        &[],
        Some(json!({"enabled": true})),
    )
    .await;
    assert_eq!((on.status, on.body["enabled"].clone()), (200, json!(true)));
    publish(&hub, "doc.three", json!({})).await;
    let next = rx.next().await;
    assert_ne!(next.id, gone.id);
    assert_eq!(
        next.json()["type"],
        "doc.three",
        "neither doc.one again nor doc.two"
    );
    let log = log_until(&hub, &id, "delivered", |d| d[0]["status"] == "delivered").await;
    let types: Vec<&str> = log.iter().map(|d| d["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["doc.three", "doc.one"], "doc.two was never queued");
}

/// After a rotation deliveries carry two signatures, one per secret.
async fn a_rotated_secret_signs_beside_the_old_one(db: Db) {
    let hub = TestHub::start_on(db, &allow()).await;
    let mut rx = Receiver::start(&[]).await;
    let (id, old) = create(&hub, &rx.url, &["*"]).await;
    let rotated = call(
        &hub,
        "POST",
        &format!("/api/v1/teams/{TEAM}/webhooks/{id}/rotate-secret"),
        Some(&admin(&hub)),
        &[],
        None,
    )
    .await;
    let new = rotated.body["secret"].as_str().unwrap().to_owned();
    publish(&hub, "doc.edit", json!({})).await;
    let got = rx.next().await;
    assert_eq!(got.signature.split(' ').count(), 2, "{}", got.signature);
    got.verify(&new);
    got.verify(&old);
    assert!(!sign::verify(
        &sign::generate_secret(),
        &got.id,
        got.timestamp,
        got.body.as_bytes(),
        &got.signature
    ));
}

on_both_backends!(
    endpoints_are_managed_over_rest,
    pending_deliveries_survive_a_restart,
    deliveries_are_signed_and_carry_the_activity_row,
    failed_attempts_are_retried_on_the_schedule,
    exhausted_deliveries_fail_and_can_be_retried,
    retry_after_is_honoured,
    gone_disables_the_endpoint,
    a_rotated_secret_signs_beside_the_old_one,
);

// --- SSRF -----------------------------------------------------------------------

/// Without `--webhook-allow-private`, URLs that lead to loopback, private, link-local
/// or unspecified addresses are refused with 400, and nothing is contacted: a
/// listener on the loopback port they name never sees a connection.
#[tokio::test]
async fn private_addresses_are_refused_without_contacting_them() {
    let hub = TestHub::start().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let path = format!("/api/v1/teams/{TEAM}/webhooks");
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://localhost:{port}/"),
        format!("http://[::1]:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://0.0.0.0:{port}/"),
        "http://10.1.2.3/".to_owned(),
        "http://172.16.0.1/".to_owned(),
        "http://192.168.0.1/".to_owned(),
        "http://169.254.169.254/latest/meta-data/".to_owned(),
        "http://[fc00::1]/".to_owned(),
        "http://[fe80::1]/".to_owned(),
    ] {
        let a = call(
            &hub,
            "POST",
            &path,
            Some(&admin(&hub)),
            &[],
            Some(json!({"url": url, "events": ["*"]})),
        )
        .await;
        assert_eq!((a.status, a.code()), (400, "bad_request"), "{url}: {a:?}");
        let patch = call(
            &hub,
            "PATCH",
            &format!("{path}/wh_x"),
            Some(&admin(&hub)),
            &[],
            Some(json!({"url": url})),
        )
        .await;
        assert_eq!(patch.status, 400, "a PATCH to {url} too");
    }
    let list = call(&hub, "GET", &path, Some(&admin(&hub)), &[], None).await;
    assert_eq!(list.body["webhooks"], json!([]));
    assert!(
        futures_util::FutureExt::now_or_never(listener.accept()).is_none(),
        "nothing connected to the loopback listener"
    );
}

/// An endpoint stored while private addresses were allowed (or whose name resolves
/// to a private address later) is refused at delivery time, by the resolver the
/// client connects through: the attempt fails and the listener sees nothing.
#[tokio::test]
async fn deliveries_to_private_addresses_are_refused_at_connection_time() {
    let first = TestHub::start_with(&allow()).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (by_name, _) = create(&first, &format!("http://localhost:{port}/"), &["*"]).await;
    let (by_ip, _) = create(&first, &format!("http://127.0.0.1:{port}/"), &["*"]).await;
    let url = first.database_url();
    let mut first = first;
    first.drain().await;

    let hub = TestHub::start_db_url(&["--webhook-retry-schedule", "1h"], &url).await;
    publish(&hub, "doc.edit", json!({})).await;
    for id in [&by_name, &by_ip] {
        let log = log_until(&hub, id, "attempted once", |d| {
            d.first().is_some_and(|d| d["attempts"] == 1)
        })
        .await;
        assert_eq!(log[0]["status"], "pending", "retried later");
        assert_eq!(
            log[0]["last_status_code"],
            Value::Null,
            "no answer: never sent"
        );
    }
    assert!(
        futures_util::FutureExt::now_or_never(listener.accept()).is_none(),
        "nothing connected to the loopback listener"
    );
}

// --- Durability and the cluster --------------------------------------------------

/// A delivery pending when its node drains is sent by the next node started on the
/// same database.
async fn pending_deliveries_survive_a_restart(db: Db) {
    let mut rx = Receiver::start(&[Reply::Status(500)]).await;
    let args = ["--webhook-allow-private", "--webhook-retry-schedule", "2s"];
    let mut hub = TestHub::start_on(db, &args).await;
    let (id, secret) = create(&hub, &rx.url, &["*"]).await;
    publish(&hub, "doc.edit", json!({})).await;
    let first = rx.next().await;
    log_until(&hub, &id, "first attempt recorded", |d| {
        d[0]["attempts"] == 1
    })
    .await;
    let url = hub.database_url();
    let pg = hub.pg.clone();
    hub.drain().await;

    let restarted = match pg {
        Some(pg) => TestHub::start_shared(pg, &args).await,
        None => TestHub::start_db_url(&args, &url).await,
    };
    let again = rx.next().await;
    again.verify(&secret);
    assert_eq!(again.id, first.id);
    log_until(&restarted, &id, "delivered by the new node", |d| {
        d[0]["status"] == "delivered"
    })
    .await;
}

/// Two nodes on one database and one Redis: every event reaches the receiver once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_event_is_delivered_once_across_two_nodes() {
    let redis = std::env::var("TEAMHUB_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("th-wh-{}", uuid::Uuid::new_v4().simple());
    let args = [
        "--webhook-allow-private",
        "--redis-url",
        &redis,
        "--redis-key-prefix",
        &prefix,
    ];
    let pg = TestHub::postgres_schema().await;
    let a = TestHub::start_shared(pg.clone(), &args).await;
    let b = TestHub::start_shared(pg.clone(), &args).await;
    let mut rx = Receiver::start(&[]).await;
    let (id, secret) = create(&a, &rx.url, &["doc."]).await;
    const N: usize = 40;
    for i in 0..N {
        let node = if i % 2 == 0 { &a } else { &b };
        publish(node, "doc.edit", json!({"i": i})).await;
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    while seen.len() < N {
        let got = rx.next().await;
        got.verify(&secret);
        *seen.entry(got.id).or_default() += 1;
    }
    log_until(&b, &id, "all delivered", |d| {
        d.len() == N && d.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    for late in rx.drain() {
        *seen.entry(late.id).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    assert_eq!(seen.len(), N);
}

/// A node that dies mid-delivery leaves a lease; when it expires another node sends
/// the delivery (same id).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_nodes_delivery_is_taken_over_after_its_lease() {
    let pg = TestHub::postgres_schema().await;
    let args = [
        "--webhook-allow-private",
        "--webhook-timeout",
        "1",
        "--webhook-retry-schedule",
        "1h",
    ];
    let mut a = TestHub::start_shared(pg.clone(), &args).await;
    // The first request is never answered: `a` is mid-delivery when it stops.
    let mut rx = Receiver::start(&[Reply::Hang]).await;
    let (id, _) = create(&a, &rx.url, &["*"]).await;
    publish(&a, "doc.edit", json!({})).await;
    let first = rx.next().await;
    a.drain().await;
    let log = deliveries_of(&pg, &id).await;
    assert_eq!(log, 0, "the drained node recorded no attempt");

    let b = TestHub::start_shared(pg.clone(), &args).await;
    let again = rx.next_within(Duration::from_secs(20)).await;
    assert_eq!(again.id, first.id);
    // The lease (timeout 1 s + 5 s) was taken just before the first request arrived.
    assert!(
        again.at - first.at >= Duration::from_secs(5),
        "not before the lease expired: {:?}",
        again.at - first.at
    );
    log_until(&b, &id, "delivered by b", |d| d[0]["status"] == "delivered").await;
}

/// Attempts recorded for `endpoint`, read from the database directly.
async fn deliveries_of(pg: &teamhub_persistence::testing::PostgresSchema, endpoint: &str) -> u32 {
    let db = teamhub_persistence::connect(pg.url()).await.unwrap();
    let got = db
        .outbox()
        .deliveries(&teamhub_protocol::TeamId::new(TEAM).unwrap(), endpoint, 10)
        .await
        .unwrap();
    db.close().await;
    got.iter().map(|d| d.attempts).sum()
}

/// Postgres cut (through a proxy) while events are published: they wait in the
/// activity writer, reach the outbox when the database is back, and are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_published_during_a_database_outage_are_delivered() {
    let upstream = teamhub_persistence::testing::test_database_url();
    let rest = upstream.split_once("://").map(|(_, r)| r).unwrap();
    let (auth, after) = rest.split_once('@').unwrap_or(("", rest));
    let (host, path) = after.split_once('/').unwrap();
    let proxy = teamhub_redis::testing::CutProxy::start(&format!("redis://{host}")).await;
    let proxied_host = proxy.url().trim_start_matches("redis://");
    let at = if auth.is_empty() {
        String::new()
    } else {
        format!("{auth}@")
    };
    let base = format!("postgres://{at}{proxied_host}/{path}");
    let pg = Arc::new(
        teamhub_persistence::testing::PostgresSchema::create(&base)
            .await
            .unwrap(),
    );
    let hub = TestHub::start_shared(pg.clone(), &allow()).await;
    let mut rx = Receiver::start(&[]).await;
    let (_, secret) = create(&hub, &rx.url, &["*"]).await;

    proxy.set_down(true);
    proxy.cut();
    for i in 0..5 {
        publish(&hub, "doc.edit", json!({"i": i})).await;
    }
    proxy.set_down(false);

    let mut got: Vec<i64> = Vec::new();
    while got.len() < 5 {
        let r = rx.next_within(Duration::from_secs(30)).await;
        r.verify(&secret);
        got.push(r.json()["data"]["metadata"]["i"].as_i64().unwrap());
    }
    got.sort_unstable();
    assert_eq!(got, [0, 1, 2, 3, 4]);
}

// --- Occupancy ------------------------------------------------------------------

/// The first connection's join occupies the team and the last one's leave vacates it;
/// joins and leaves in between are neither.
#[tokio::test]
async fn the_first_join_and_the_last_leave_are_delivered() {
    let hub = TestHub::start_with(&allow()).await;
    let mut rx = Receiver::start(&[]).await;
    let (id, secret) = create(&hub, &rx.url, &["team."]).await;
    let mut ann = hub.connect("ann", &[(TEAM, "viewer")]).await;
    ann.join(TEAM).await;
    let occupied = rx.next().await;
    occupied.verify(&secret);
    assert_eq!(occupied.json()["type"], "team.occupied");
    assert_eq!(occupied.json()["data"], json!({"team": TEAM}));
    let mut bob = hub.connect("bob", &[(TEAM, "viewer")]).await;
    bob.join(TEAM).await;
    drop(ann);
    drop(bob);
    let vacated = rx.next().await;
    assert_eq!(vacated.json()["type"], "team.vacated");
    let log = log_until(&hub, &id, "both delivered", |d| {
        d.len() == 2 && d.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    let types: Vec<&str> = log.iter().map(|d| d["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["team.vacated", "team.occupied"], "nothing for bob");
}

/// Two nodes: each change is reported by the node that made it (from the change and
/// from its own event) and by any other node hosting the team, and delivered once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn occupancy_is_delivered_once_across_two_nodes() {
    let redis = std::env::var("TEAMHUB_TEST_REDIS_URL")
        .unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    let prefix = format!("th-occ-{}", uuid::Uuid::new_v4().simple());
    let args = [
        "--webhook-allow-private",
        "--redis-url",
        &redis,
        "--redis-key-prefix",
        &prefix,
    ];
    let pg = TestHub::postgres_schema().await;
    let a = TestHub::start_shared(pg.clone(), &args).await;
    let b = TestHub::start_shared(pg.clone(), &args).await;
    let mut rx = Receiver::start(&[]).await;
    let (id, _) = create(&a, &rx.url, &["team."]).await;
    let mut on_b = b.connect("bob", &[(TEAM, "viewer")]).await;
    on_b.join(TEAM).await;
    let mut on_a = a.connect("ann", &[(TEAM, "viewer")]).await;
    on_a.join(TEAM).await;
    assert_eq!(rx.next().await.json()["type"], "team.occupied");
    // Both nodes host the team now; bob leaves on b, then ann, the last, on a.
    drop(on_b);
    on_a.expect_diff().await;
    drop(on_a);
    assert_eq!(rx.next().await.json()["type"], "team.vacated");
    log_until(&a, &id, "two changes, each delivered", |d| {
        d.len() == 2 && d.iter().all(|d| d["status"] == "delivered")
    })
    .await;
    assert!(rx.drain().is_empty(), "nothing twice");
}
