//! Member revocation, on SQLite and on Postgres.

use serde_json::json;
use teamhub_client::ConnectOptions;
use teamhub_protocol::{ClientOp, ErrorCode, KickReason};

use crate::harness::*;

fn join_op(team: &str) -> ClientOp {
    ClientOp::Join(serde_json::from_value(json!({"team": team})).unwrap())
}

/// A token for `user` issued one second from now, so it is newer than a revocation
/// that just happened (revocations refuse tokens up to their whole second).
fn fresh_token(user: &str, teams: &[(&str, &str)]) -> String {
    token_with(user, teams, |c| c.iat = Some(teamhub::auth::now_secs() + 1))
}

async fn revocation(backend: Db) {
    let mut hub = TestHub::start_on(backend, &[]).await;
    let admin = hub.token("ad", &[("t", "admin")]);
    let old = hub.token("mal", &[("t", "editor"), ("u", "editor")]);
    let mut watcher = hub.connect("w", &[("t", "viewer")]).await;
    watcher.join("t").await;
    let mut a1 = TestClient::connect(ConnectOptions::new(hub.ws_url()).token(old.clone())).await;
    a1.join("t").await;
    a1.join("u").await;
    let mut a2 = TestClient::connect(ConnectOptions::new(hub.ws_url()).token(old.clone())).await;
    a2.join("t").await;
    let joined = watcher.expect_diff().await;
    assert_eq!(joined.joins[0].user.as_str(), "mal");

    let a = call(
        &hub,
        "POST",
        "/api/v1/teams/t/members/mal/revoke",
        Some(&admin),
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(
        (a.body["team"].clone(), a.body["user"].clone()),
        (json!("t"), json!("mal"))
    );
    assert!(a.body["revoked_at"].as_str().unwrap().ends_with('Z'));

    for c in [&mut a1, &mut a2] {
        let k = c.expect_kicked().await;
        assert_eq!((k.team.as_str(), k.reason), ("t", KickReason::Revoked));
    }
    let left = watcher.expect_diff().await;
    assert_eq!(
        (left.leaves.len(), left.leaves[0].user.as_str()),
        (1, "mal")
    );
    // Still connected and still in the other team.
    a1.publish("u", "x", json!(1), false).await;
    // Old tokens cannot join again, nor call REST for that team.
    let id = a1.send(join_op("t")).await;
    a1.expect_error(Some(id), ErrorCode::Forbidden).await;
    let mut late = TestClient::connect(ConnectOptions::new(hub.ws_url()).token(old.clone())).await;
    let id = late.send(join_op("t")).await;
    late.expect_error(Some(id), ErrorCode::Forbidden).await;
    let a = call(
        &hub,
        "POST",
        "/api/v1/teams/t/messages",
        Some(&old),
        &[],
        Some(json!({"type": "x", "data": 1})),
    )
    .await;
    assert_eq!((a.status, a.code()), (403, "forbidden"));
    let a = call(
        &hub,
        "POST",
        "/api/v1/teams/u/messages",
        Some(&old),
        &[],
        Some(json!({"type": "x", "data": 1})),
    )
    .await;
    assert_eq!(a.status, 200, "other teams are not affected");
    let no_iat = token_with("mal", &[("t", "viewer")], |c| c.iat = None);
    let a = call(
        &hub,
        "GET",
        "/api/v1/teams/t/presence",
        Some(&no_iat),
        &[],
        None,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (401, "unauthorized"),
        "with a lifetime bound (the default), a token must say when it was issued"
    );
    // Nor through the seed endpoint, which joins at once.
    let seed = format!("ws://{}/ws/t?token={old}", hub.addr);
    let mut seeded = TestClient::connect(ConnectOptions::new(seed)).await;
    let (code, reason) = seeded.expect_close().await;
    assert_eq!((code, reason.as_str()), (Some(1008), "not a team member"));
    // A token issued after the revocation works.
    let fresh = fresh_token("mal", &[("t", "editor")]);
    let mut back =
        TestClient::connect(ConnectOptions::new(hub.ws_url()).token(fresh.clone())).await;
    back.join("t").await;
    let a = call(
        &hub,
        "GET",
        "/api/v1/teams/t/presence",
        Some(&fresh),
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, 200);

    // Refusals.
    let editor = hub.token("ed", &[("t", "editor")]);
    let a = call(
        &hub,
        "POST",
        "/api/v1/teams/t/members/x/revoke",
        Some(&editor),
        &[],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (403, "forbidden"));
    let a = call(
        &hub,
        "POST",
        "/api/v1/teams/t/members/x/revoke",
        None,
        &[],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (401, "unauthorized"));
    let a = call(
        &hub,
        "POST",
        "/api/v1/teams/t/members/bad%20user/revoke",
        Some(&admin),
        &[],
        None,
    )
    .await;
    assert_eq!((a.status, a.code()), (400, "bad_request"));

    // Another node on the same database (a restart) knows the revocation.
    let url = hub.database_url();
    let second = match &hub.pg {
        Some(pg) => TestHub::start_shared(pg.clone(), &[]).await,
        None => TestHub::start_db_url(&[], &url).await,
    };
    let a = call(
        &second,
        "GET",
        "/api/v1/teams/t/presence",
        Some(&old),
        &[],
        None,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (403, "forbidden"),
        "revocations survive restarts"
    );
    let a = call(
        &second,
        "GET",
        "/api/v1/teams/t/presence",
        Some(&fresh),
        &[],
        None,
    )
    .await;
    assert_eq!(a.status, 200);
    drop(second);

    let rows = hub.activity_after_drain("t").await;
    let revoked: Vec<_> = rows
        .iter()
        .filter(|r| r.action == "member.revoked")
        .collect();
    assert_eq!(revoked.len(), 1);
    assert_eq!(
        (revoked[0].user.as_str(), revoked[0].resource_id.as_deref()),
        ("ad", Some("mal"))
    );
}

/// With `--max-token-lifetime`, a revocation goes once every token it refuses has
/// expired: from the database, by the node's pruning round. An API key's revocation
/// stays (a key never expires).
async fn pruning(backend: Db) {
    let hub = TestHub::start_on(
        backend,
        &[
            "--max-token-lifetime",
            "2",
            "--jwt-leeway",
            "0",
            "--retention-interval",
            "1",
        ],
    )
    .await;
    let short = |user: &str, teams: &[(&str, &str)]| {
        token_with(user, teams, |c| {
            c.exp = c.iat.expect("harness tokens have iat") + 2
        })
    };
    let admin = short("ad", &[("t", "admin")]);
    let long = token_with("ad", &[("t", "admin")], |_| {});
    let a = call(
        &hub,
        "GET",
        "/api/v1/teams/t/presence",
        Some(&long),
        &[],
        None,
    )
    .await;
    assert_eq!(
        (a.status, a.code()),
        (401, "unauthorized"),
        "a token living past the bound is refused"
    );
    for user in ["mal", "apikey:k1"] {
        let path = format!("/api/v1/teams/t/members/{user}/revoke");
        let a = call(&hub, "POST", &path, Some(&admin), &[], None).await;
        assert_eq!(a.status, 200, "revoking {user}: {:?}", a.body);
    }
    let users = || async {
        let mut all: Vec<String> = hub
            .node
            .revocation_store
            .all()
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.user.to_string())
            .collect();
        all.sort();
        all
    };
    assert_eq!(users().await, ["apikey:k1", "mal"]);
    // Pruned after the 2 s lifetime, on one of the 1 s rounds.
    let deadline = tokio::time::Instant::now() + WAIT;
    while users().await != ["apikey:k1"] {
        assert!(
            tokio::time::Instant::now() < deadline,
            "mal's revocation was not pruned within {WAIT:?}: {:?}",
            users().await
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

crate::on_both_backends!(revocation, pruning);
