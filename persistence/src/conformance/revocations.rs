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
    assert_eq!(all, vec![newer, elsewhere]);
}
