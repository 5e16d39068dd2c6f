//! The [`ControlLog`] contract as runnable checks.

use time::Duration;

use crate::control_log::ControlLog;

pub async fn run_all(s: &dyn ControlLog) {
    let start = crate::now_utc() - Duration::seconds(1);
    assert!(s.since(start, 10).await.unwrap().is_empty());
    let a = s.append(r#"{"op":"a"}"#).await.unwrap();
    let b = s.append(r#"{"op":"b"}"#).await.unwrap();
    assert!(b > a, "sequence numbers increase: {a} then {b}");
    let got = s.since(start, 10).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|c| (c.seq, c.command.as_str()))
            .collect::<Vec<_>>(),
        [(a, r#"{"op":"a"}"#), (b, r#"{"op":"b"}"#)],
        "in sequence order, text unchanged"
    );
    assert!(got[0].created_at >= start && got[0].created_at <= crate::now_utc());
    assert_eq!(s.since(start, 1).await.unwrap().len(), 1, "limit");
    let later = crate::now_utc() + Duration::seconds(5);
    assert!(
        s.since(later, 10).await.unwrap().is_empty(),
        "nothing after now"
    );
    // Racing appenders all get distinct numbers.
    let many = futures_util::future::join_all((0..20).map(|i| {
        let text = format!(r#"{{"n":{i}}}"#);
        async move { s.append(&text).await.unwrap() }
    }))
    .await;
    let distinct: std::collections::BTreeSet<i64> = many.iter().copied().collect();
    assert_eq!(distinct.len(), 20);
    assert_eq!(
        s.prune(start).await.unwrap(),
        0,
        "nothing is older than start"
    );
    assert_eq!(s.prune(later).await.unwrap(), 22);
    assert!(s.since(start, 100).await.unwrap().is_empty());
}
