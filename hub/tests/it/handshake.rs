//! Section 2: connecting.

use teamhub_client::{ConnectOptions, TokenPlacement};
use teamhub_protocol::ClientOp;

use crate::harness::*;

async fn refused(hub: &TestHub, opts: ConnectOptions) -> (u16, String) {
    match TestClient::try_connect(opts).await {
        Err(teamhub_client::ClientError::Http { status, body }) => (status, body),
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("expected the handshake to be refused by {}", hub.addr),
    }
}

#[tokio::test]
async fn token_in_header_or_query_and_subprotocol_selection() {
    let hub = TestHub::start().await;
    let token = hub.token("ann", &[("t", "viewer")]);
    let mut a =
        TestClient::connect(header_client(hub.ws_url(), token.clone()).subprotocol(true)).await;
    assert_eq!(a.conn.selected_subprotocol(), Some("teamhub.v1"));
    a.roundtrip().await;
    let mut b = TestClient::connect(
        ConnectOptions::new(hub.ws_url())
            .token(token)
            .token_in(TokenPlacement::Query)
            .subprotocol(false),
    )
    .await;
    assert_eq!(
        b.conn.selected_subprotocol(),
        None,
        "not offered, not selected"
    );
    b.roundtrip().await;
}

#[tokio::test]
async fn bad_tokens_get_401_without_upgrade() {
    let hub = TestHub::start().await;
    let now = teamhub::auth::now_secs();
    let cases: Vec<(&str, Option<String>)> = vec![
        ("missing", None),
        ("malformed", Some("not-a-jwt".into())),
        ("expired", Some(token_with("ann", &[("t", "owner")], |c| c.exp = now - 60))),
        ("bad signature", Some(teamhub_client::mint_hs256(
            &teamhub_client::claims_for("ann", &[], std::time::Duration::from_secs(60)).unwrap(),
            b"a-different-secret-0123456789abc",
        ).unwrap())),
        ("alg none", Some("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJhbm4iLCJleHAiOjk5OTk5OTk5OTksInRlYW1zIjp7fX0.".into())),
        ("unknown api key", Some("thk_0123456789".into())),
    ];
    for (what, token) in cases {
        let mut opts = ConnectOptions::new(hub.ws_url());
        if let Some(t) = token {
            opts = opts.token(t);
        }
        let (status, body) = refused(&hub, opts).await;
        assert_eq!(status, 401, "{what}");
        assert!(body.contains("\"unauthorized\""), "{what}: {body}");
    }
    // Wrong algorithm: HS384 with the right secret.
    let claims =
        teamhub_client::claims_for("ann", &[], std::time::Duration::from_secs(60)).unwrap();
    let hs384 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS384),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap();
    assert_eq!(
        refused(&hub, ConnectOptions::new(hub.ws_url()).token(hs384))
            .await
            .0,
        401,
        "wrong algorithm"
    );
    // Malformed `teams` claim and missing `exp`, signed correctly.
    for claims in [
        serde_json::json!({"sub": "ann", "exp": now + 60, "teams": ["t"]}),
        serde_json::json!({"sub": "ann", "teams": {}}),
        serde_json::json!({"sub": "bad id", "exp": now + 60, "teams": {}}),
    ] {
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(
            refused(&hub, ConnectOptions::new(hub.ws_url()).token(token))
                .await
                .0,
            401,
            "{claims}"
        );
    }
}

#[tokio::test]
async fn origin_allow_list() {
    let hub = TestHub::start_with(&[
        "--allowed-origins",
        "https://app.example.com, https://b.example.com",
    ])
    .await;
    let token = hub.token("ann", &[("t", "viewer")]);
    let opts = ConnectOptions::new(hub.ws_url()).token(token.clone());
    let (status, body) = refused(&hub, opts.clone().origin("https://evil.example.com")).await;
    assert_eq!(status, 403);
    assert!(body.contains("\"forbidden\""), "{body}");
    TestClient::connect(opts.clone().origin("https://b.example.com"))
        .await
        .roundtrip()
        .await;
    TestClient::connect(opts).await.roundtrip().await; // no Origin: IDE plugins, services
}

#[tokio::test]
async fn without_configured_origins_browsers_are_refused() {
    let hub = TestHub::start().await;
    let opts = ConnectOptions::new(hub.ws_url())
        .token(hub.token("ann", &[]))
        .origin("https://app.example.com");
    assert_eq!(refused(&hub, opts).await.0, 403);
}

/// What a page whose socket never opened asks: would this origin be let in?
#[tokio::test]
async fn origin_check_answers_whether_the_handshake_would_take_an_origin() {
    let hub = TestHub::start_with(&["--allowed-origins", "http://127.0.0.1:8080"]).await;
    let check = |origin: &str| {
        let url = format!("{}?origin={}", hub.http("/origin-check"), origin);
        async move {
            let resp = reqwest::get(url).await.unwrap();
            assert_eq!(resp.status(), 200);
            assert_eq!(resp.headers()["access-control-allow-origin"], "*");
            resp.json::<serde_json::Value>().await.unwrap()
        }
    };
    assert_eq!(
        check("http://localhost:8080").await,
        serde_json::json!({"origin": "http://localhost:8080", "allowed": false})
    );
    assert_eq!(
        check("http%3A%2F%2F127.0.0.1%3A8080").await["allowed"],
        true
    );
    let resp = reqwest::get(hub.http("/origin-check")).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
}

#[tokio::test]
async fn plain_http_to_ws_is_a_clear_400() {
    let hub = TestHub::start().await;
    let resp = reqwest::get(hub.http("/ws")).await.unwrap();
    assert_eq!(resp.status(), 400);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "bad_request");
}

#[tokio::test]
async fn a_token_that_expires_closes_4001_unless_refreshed() {
    let hub = TestHub::start_with(&["--jwt-leeway", "0"]).await;
    let now = teamhub::auth::now_secs();
    let short = |secs: u64| token_with("ann", &[("t", "viewer")], move |c| c.exp = now + secs);
    let mut doomed = TestClient::connect(ConnectOptions::new(hub.ws_url()).token(short(2))).await;
    let mut saved = TestClient::connect(ConnectOptions::new(hub.ws_url()).token(short(2))).await;
    let id = saved
        .send(ClientOp::Refresh(teamhub_protocol::Refresh {
            token: short(3600),
        }))
        .await;
    match saved.expect_reply(id).await {
        teamhub_protocol::ReplyBody::Refresh(r) => assert!(r.exp >= now + 3600),
        other => panic!("{other:?}"),
    }
    assert_eq!(doomed.expect_close().await.0, Some(4001));
    saved.roundtrip().await;
}

/// Reads until the server closes the connection; how long that took, or `None` when
/// it kept the connection open past `within`.
async fn closed_within(
    stream: &mut tokio::net::TcpStream,
    within: std::time::Duration,
) -> Option<std::time::Duration> {
    use tokio::io::AsyncReadExt;
    let started = tokio::time::Instant::now();
    let mut buf = [0u8; 1024];
    let closed = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {} // an error response before the close is fine
            }
        }
    };
    tokio::time::timeout(within, closed)
        .await
        .ok()
        .map(|()| started.elapsed())
}

/// Slow clients at the HTTP layer: a request whose headers never complete, or trickle
/// in one byte at a time, is cut after `--handshake-timeout`; hundreds of such
/// half-open handshakes at once do not keep a real client from connecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_half_open_handshakes_are_cut_and_starve_nobody() {
    use tokio::io::AsyncWriteExt;
    let hub = TestHub::start_with(&["--handshake-timeout", "1"]).await;
    let patience = std::time::Duration::from_secs(5);

    // 300 connections that start a WebSocket upgrade and never finish its headers.
    let mut half_open = Vec::new();
    for _ in 0..300 {
        let mut s = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
        s.write_all(b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n")
            .await
            .unwrap();
        half_open.push(s);
    }
    // Meanwhile a real client connects and works at once.
    let mut ann = hub.connect("ann", &[("t", "editor")]).await;
    ann.join("t").await;
    ann.roundtrip().await;

    for (i, s) in half_open.iter_mut().enumerate() {
        let took = closed_within(s, patience)
            .await
            .unwrap_or_else(|| panic!("half-open handshake {i} still open after {patience:?}"));
        assert!(took < patience, "{took:?}");
    }

    // One that trickles a header byte every 50 ms (it would take 10 s) is cut too.
    let mut trickle = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    let request = format!(
        "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: {}\r\n\r\n",
        "a".repeat(200)
    );
    let started = tokio::time::Instant::now();
    let mut cut = false;
    for byte in request.as_bytes() {
        if trickle.write_all(&[*byte]).await.is_err() {
            cut = true;
            break;
        }
        // The pace of the trickle itself, not a wait for an event.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        if started.elapsed() > patience {
            break;
        }
    }
    if !cut {
        cut = closed_within(&mut trickle, std::time::Duration::from_millis(100))
            .await
            .is_some();
    }
    assert!(
        cut,
        "a trickled request head was not cut within {patience:?}"
    );
    // The node still serves.
    ann.roundtrip().await;
}
