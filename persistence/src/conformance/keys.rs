//! The [`KeyStore`] contract as runnable checks.

use teamhub_protocol::{Role, TeamId, UserId};

use crate::error::StoreError;
use crate::keys::{ApiKeyRecord, KeyStore};

fn record(id: &str, team: &str, role: Role) -> ApiKeyRecord {
    ApiKeyRecord {
        id: id.to_owned(),
        team: TeamId::new(team).unwrap(),
        name: format!("key {id}"),
        role,
        prefix: format!("thk_{id}"),
        created_by: UserId::new("admin").unwrap(),
        created_at: crate::now_utc(),
    }
}

pub async fn run_all(s: &dyn KeyStore) {
    let t = TeamId::new("keys").unwrap();
    assert!(s.list(&t).await.unwrap().is_empty());
    let a = record("a1", "keys", Role::Editor);
    let b = record("b2", "keys", Role::Viewer);
    let other = record("c3", "keys-other", Role::Admin);
    s.create(&a, "hash-a").await.unwrap();
    s.create(&b, "hash-b").await.unwrap();
    s.create(&other, "hash-c").await.unwrap();
    assert_eq!(s.list(&t).await.unwrap(), vec![a.clone(), b.clone()]);
    assert_eq!(s.find_by_hash("hash-a").await.unwrap(), Some(a.clone()));
    assert_eq!(s.find_by_hash("nope").await.unwrap(), None);
    // Ids and hashes are unique.
    assert!(matches!(
        s.create(&record("a1", "keys", Role::Viewer), "hash-z")
            .await,
        Err(StoreError::Rejected(_))
    ));
    assert!(matches!(
        s.create(&record("z9", "keys", Role::Viewer), "hash-a")
            .await,
        Err(StoreError::Rejected(_))
    ));
    // Deleting is scoped to the team.
    assert_eq!(s.delete(&t, "c3").await.unwrap(), None);
    assert!(s.find_by_hash("hash-c").await.unwrap().is_some());
    assert_eq!(s.delete(&t, "a1").await.unwrap(), Some(a));
    assert_eq!(s.delete(&t, "a1").await.unwrap(), None);
    assert_eq!(s.find_by_hash("hash-a").await.unwrap(), None);
    assert_eq!(s.list(&t).await.unwrap(), vec![b]);
}
