//! The [`RevocationStore`] contract as runnable checks.

use teamhub_protocol::{TeamId, UserId};
use time::Duration;

use crate::revocations::{Revocation, RevocationStore};

pub async fn run_all(s: &dyn RevocationStore) {
    assert!(s.all().await.unwrap().is_empty());
    let now = crate::now_utc();
    let r = Revocation {
        team: TeamId::new("t").unwrap(),
        user: UserId::new("mallory").unwrap(),
        revoked_at: now,
        revoked_by: UserId::new("admin").unwrap(),
    };
    assert_eq!(s.revoke(&r).await.unwrap(), r);
    // An older revocation does not move it back; a newer one replaces it.
    let older = Revocation {
        revoked_at: now - Duration::seconds(60),
        revoked_by: UserId::new("other").unwrap(),
        ..r.clone()
    };
    assert_eq!(s.revoke(&older).await.unwrap(), r);
    let newer = Revocation {
        revoked_at: now + Duration::seconds(1),
        revoked_by: UserId::new("boss").unwrap(),
        ..r.clone()
    };
    assert_eq!(s.revoke(&newer).await.unwrap(), newer);
    let elsewhere = Revocation {
        team: TeamId::new("u").unwrap(),
        ..r.clone()
    };
    s.revoke(&elsewhere).await.unwrap();
    let mut all = s.all().await.unwrap();
    all.sort_by(|a, b| a.team.cmp(&b.team));
    assert_eq!(all, vec![newer.clone(), elsewhere.clone()]);

    // Pruning drops what is older than the cut-off, except API keys' revocations.
    let old = Revocation {
        user: UserId::new("old-member").unwrap(),
        revoked_at: now - Duration::days(30),
        ..r.clone()
    };
    let old_key = Revocation {
        user: UserId::new("apikey:k1").unwrap(),
        revoked_at: now - Duration::days(30),
        ..r.clone()
    };
    s.revoke(&old).await.unwrap();
    s.revoke(&old_key).await.unwrap();
    assert_eq!(s.prune(now - Duration::days(1)).await.unwrap(), 1);
    assert_eq!(
        s.prune(now - Duration::days(1)).await.unwrap(),
        0,
        "idempotent"
    );
    let mut all = s.all().await.unwrap();
    all.sort_by(|a, b| (&a.team, &a.user).cmp(&(&b.team, &b.user)));
    assert_eq!(all, vec![old_key, newer, elsewhere]);
}
