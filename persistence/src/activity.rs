//! Activity log records and the two seams to storage.
//!
//! [`ActivityEvent`] is what the hub records (one per published message, presence change,
//! pattern change, key change or revocation; PROTOCOL.md section 4). [`ActivitySink`]
//! stores batches of them, [`ActivityReader`] reads them back as [`ActivityRow`]s, the JSON
//! row of the REST API. Each backend implements both traits, and every implementation
//! must pass [`crate::conformance`].
//!
//! The event's id is generated once, when the event is created, and travels with it
//! through every retry: that is what lets a sink make writes idempotent.

use std::borrow::Cow;
use std::fmt;
use std::net::IpAddr;

use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use teamhub_protocol::{TeamId, UserId};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::error::StoreError;
use crate::query::{ActivityPage, ActivityQuery, RetentionScope};
use crate::timestamp;

/// One entry of a team's activity log, as recorded by the hub.
#[derive(Debug, Clone)]
pub struct ActivityEvent {
    /// UUID v7: time-ordered, generated once when the event is created and reused by
    /// every retry, so a retried write never creates a second row.
    pub id: Uuid,
    pub team: TeamId,
    pub user: UserId,
    /// What happened: a message type, or one of the hub's own actions
    /// (`presence.joined`, `pattern.updated`, `apikey.created`, ...).
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// JSON text, stored verbatim. A `RawValue` so the hub can hand over a published
    /// message's data without re-serialising it.
    pub metadata: Box<RawValue>,
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
    /// UTC, microsecond precision (what every backend stores; the constructors and
    /// [`ActivityEvent::with_created_at`] normalise to that, so a stored event reads back
    /// equal).
    pub created_at: OffsetDateTime,
}

/// `{}`: the metadata of an event that has none.
fn empty_object() -> Box<RawValue> {
    // "{}" is valid JSON; from_string only fails on invalid JSON.
    RawValue::from_string("{}".to_owned()).expect("`{}` is valid JSON")
}

impl ActivityEvent {
    /// A new event happening now, with a fresh v7 id, metadata `{}` and no resource or
    /// client information. Use the `with_*` methods to fill those in.
    pub fn new(team: TeamId, user: UserId, action: impl Into<String>) -> Self {
        ActivityEvent {
            // now_v7 keeps ids monotonic within the process, so events created in the
            // same millisecond still sort in creation order (ties on created_at are
            // broken by id).
            id: Uuid::now_v7(),
            team,
            user,
            action: action.into(),
            resource_type: None,
            resource_id: None,
            metadata: empty_object(),
            ip: None,
            user_agent: None,
            created_at: timestamp::normalize(OffsetDateTime::now_utc()),
        }
    }

    /// Sets the resource the action applies to (e.g. `pattern`, `layout-1`).
    pub fn with_resource(
        mut self,
        resource_type: impl Into<String>,
        resource_id: impl Into<String>,
    ) -> Self {
        self.resource_type = Some(resource_type.into());
        self.resource_id = Some(resource_id.into());
        self
    }

    /// Sets the metadata (any JSON value, stored verbatim).
    pub fn with_metadata(mut self, metadata: Box<RawValue>) -> Self {
        self.metadata = metadata;
        self
    }

    /// Sets the client's address and `User-Agent`, when known.
    pub fn with_client(mut self, ip: Option<IpAddr>, user_agent: Option<String>) -> Self {
        self.ip = ip;
        self.user_agent = user_agent;
        self
    }

    /// Sets when the event happened (converted to UTC, truncated to microseconds).
    pub fn with_created_at(mut self, at: OffsetDateTime) -> Self {
        self.created_at = timestamp::normalize(at);
        self
    }

    /// The event for a published message (PROTOCOL.md section 4): `action` is the message
    /// type, `metadata` its data, verbatim, and `created_at` the message's time.
    ///
    /// The resource comes from the data: when the data is an object with a string field
    /// `resource_type` and/or `resource_id`, those strings are the resource (a missing one
    /// stays null: the data named a resource, and the message offset would not identify
    /// it). When the data names neither (or is not an object), the message itself is the
    /// resource: `resource_type = "message"`, `resource_id` = the offset as text.
    /// Only those two fields are decoded; the rest of the data is skipped without
    /// building values.
    pub fn for_message(
        team: TeamId,
        user: UserId,
        ty: &str,
        offset: u64,
        data: &RawValue,
        at: OffsetDateTime,
    ) -> Self {
        let (resource_type, resource_id) = match resource_fields(data) {
            Some(fields) => fields,
            None => (Some("message".to_owned()), Some(offset.to_string())),
        };
        ActivityEvent {
            resource_type,
            resource_id,
            metadata: data.to_owned(),
            ..ActivityEvent::new(team, user, ty).with_created_at(at)
        }
    }
}

/// The string `resource_type` / `resource_id` fields of a JSON object, or `None` when
/// `data` is not an object or has neither as a string.
fn resource_fields(data: &RawValue) -> Option<(Option<String>, Option<String>)> {
    // A derived struct visitor would also accept a JSON array positionally; only objects
    // carry named fields.
    if !data.get().trim_start().starts_with('{') {
        return None;
    }
    let fields: ResourceFields<'_> = serde_json::from_str(data.get()).ok()?;
    let resource_type = fields.resource_type.0.map(Cow::into_owned);
    let resource_id = fields.resource_id.0.map(Cow::into_owned);
    if resource_type.is_none() && resource_id.is_none() {
        return None;
    }
    Some((resource_type, resource_id))
}

/// The two fields `for_message` reads; unknown fields are skipped with `IgnoredAny`.
#[derive(Deserialize)]
struct ResourceFields<'a> {
    #[serde(default, borrow)]
    resource_type: StringField<'a>,
    #[serde(default, borrow)]
    resource_id: StringField<'a>,
}

/// A field that counts only when it is a JSON string; any other value is skipped
/// (without allocating) and reads as absent. Borrows from the input unless the string
/// has escapes.
#[derive(Default)]
struct StringField<'a>(Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for StringField<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = StringField<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(StringField(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(StringField(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(StringField(Some(Cow::Owned(v))))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(StringField(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(StringField(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(StringField(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(StringField(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(StringField(None))
            }
            fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
                Ok(StringField(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(StringField(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(StringField(None))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// One activity log entry as read back: the JSON "Activity row" of PROTOCOL.md section 4
/// (`{"id","team","user","action","resource_type","resource_id","metadata","ip",
/// "user_agent","created_at"}`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActivityRow {
    pub id: Uuid,
    pub team: TeamId,
    pub user: UserId,
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    pub metadata: serde_json::Value,
    /// The client address in its usual text form (`203.0.113.7`, `2001:db8::1`).
    pub ip: Option<String>,
    pub user_agent: Option<String>,
    /// Serialised as RFC 3339 in the fixed-width UTC form `2025-01-31T09:05:03.000120Z`
    /// (always microseconds), so the strings sort like the times.
    #[serde(serialize_with = "timestamp::serde_fixed::serialize")]
    pub created_at: OffsetDateTime,
}

impl ActivityRow {
    /// The row a reader returns for `event` (what a webhook delivery carries as `data`).
    pub fn from_event(event: &ActivityEvent) -> ActivityRow {
        ActivityRow {
            id: event.id,
            team: event.team.clone(),
            user: event.user.clone(),
            action: event.action.clone(),
            resource_type: event.resource_type.clone(),
            resource_id: event.resource_id.clone(),
            metadata: serde_json::from_str(event.metadata.get()).unwrap_or(serde_json::Value::Null),
            ip: event.ip.map(|ip| ip.to_string()),
            user_agent: event.user_agent.clone(),
            created_at: event.created_at,
        }
    }

    /// `created_at` in the row's text form (`2025-01-31T09:05:03.000120Z`), for exports
    /// that write it outside JSON.
    pub fn created_at_text(&self) -> String {
        timestamp::format(self.created_at).unwrap_or_else(|_| self.created_at.to_string())
    }
}

/// Stores activity events. The hub never calls this on a hot path: it goes through
/// [`crate::ActivityWriter`], which batches and retries.
#[async_trait::async_trait]
pub trait ActivitySink: Send + Sync + 'static {
    /// Writes a batch, atomically where the backend allows (SQLite and Postgres: one
    /// transaction). Idempotent by `id`: writing an event twice (a retry after a timeout
    /// whose write did land) never creates two rows, and the first stored version wins.
    /// An empty batch is a no-op.
    ///
    /// Errors: [`StoreError::Unavailable`] when a retry may succeed,
    /// [`StoreError::Rejected`] when some event in the batch can never be stored.
    async fn write_batch(&self, events: &[ActivityEvent]) -> Result<(), StoreError>;

    /// Cheap reachability check, used by `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Reads activity back (the REST activity endpoint and its exports).
#[async_trait::async_trait]
pub trait ActivityReader: Send + Sync + 'static {
    /// The `limit` most recent rows of `team`, newest first: by `created_at`, ties broken
    /// by `id` (also descending), the order of the activity indexes.
    async fn recent(&self, team: &TeamId, limit: u32) -> Result<Vec<ActivityRow>, StoreError>;

    /// One page of `query.team`'s rows matching every filter of `query`, newest first
    /// (same order as [`ActivityReader::recent`]), starting after `query.after`. The
    /// page's `next` is set exactly when more matching rows follow, and is where the
    /// next page starts; rows written meanwhile are never repeated nor make a later
    /// page skip one (see [`crate::query`]). Served by the activity indexes: a deep page
    /// costs what the first does.
    async fn page(&self, query: &ActivityQuery) -> Result<ActivityPage, StoreError>;
}

/// Deletes rows whose team's retention has passed.
#[async_trait::async_trait]
pub trait ActivityRetention: Send + Sync + 'static {
    /// Deletes at most `max_rows` rows of `scope` created before `before`, oldest
    /// first, in one short transaction (so writers wait at most for one batch); returns
    /// how many were deleted. A return below `max_rows` means none are left.
    async fn delete_expired(
        &self,
        scope: RetentionScope<'_>,
        before: OffsetDateTime,
        max_rows: u32,
    ) -> Result<u64, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn msg(data: &str) -> ActivityEvent {
        ActivityEvent::for_message(
            TeamId::new("t").unwrap(),
            UserId::new("u").unwrap(),
            "doc.edit",
            42,
            &raw(data),
            OffsetDateTime::now_utc(),
        )
    }

    fn resource(e: &ActivityEvent) -> (Option<&str>, Option<&str>) {
        (e.resource_type.as_deref(), e.resource_id.as_deref())
    }

    #[test]
    fn message_resource_comes_from_the_data() {
        let e = msg(r#"{"big":[1,{"x":"y"}],"resource_id":"d\u00e91","resource_type":"doc"}"#);
        assert_eq!(resource(&e), (Some("doc"), Some("dé1")));
        assert_eq!(e.action, "doc.edit");
        assert_eq!(
            e.metadata.get(),
            r#"{"big":[1,{"x":"y"}],"resource_id":"d\u00e91","resource_type":"doc"}"#
        );
    }

    #[test]
    fn message_without_resource_fields_is_its_own_resource() {
        for data in [
            r#"{"text":"hi"}"#,
            "[\"doc\",\"d1\"]",
            "\"doc\"",
            "7",
            "null",
        ] {
            assert_eq!(
                resource(&msg(data)),
                (Some("message"), Some("42")),
                "{data}"
            );
        }
    }

    #[test]
    fn non_string_resource_fields_do_not_count() {
        assert_eq!(
            resource(&msg(r#"{"resource_type":{"a":1},"resource_id":5}"#)),
            (Some("message"), Some("42"))
        );
        assert_eq!(
            resource(&msg(r#"{"resource_type":"doc","resource_id":5}"#)),
            (Some("doc"), None)
        );
        assert_eq!(
            resource(&msg(r#"{"resource_id":"d1"}"#)),
            (None, Some("d1"))
        );
    }

    #[test]
    fn constructors_normalise_time_and_ids() {
        let at = time::macros::datetime!(2025-01-31 10:00:00.123_456_789 +01:00);
        let a = ActivityEvent::new(TeamId::new("t").unwrap(), UserId::new("u").unwrap(), "x")
            .with_created_at(at);
        assert_eq!(
            a.created_at,
            time::macros::datetime!(2025-01-31 09:00:00.123_456 UTC)
        );
        assert_eq!(a.metadata.get(), "{}");
        let b = ActivityEvent::new(TeamId::new("t").unwrap(), UserId::new("u").unwrap(), "x");
        assert_eq!(a.id.get_version_num(), 7);
        assert!(b.id > a.id, "v7 ids increase");
    }

    #[test]
    fn row_serialises_with_the_contract_field_names() {
        let row = ActivityRow {
            id: Uuid::nil(),
            team: TeamId::new("t").unwrap(),
            user: UserId::new("u").unwrap(),
            action: "doc.edit".into(),
            resource_type: None,
            resource_id: Some("42".into()),
            metadata: serde_json::json!({"a": [1]}),
            ip: Some("2001:db8::1".into()),
            user_agent: None,
            created_at: time::macros::datetime!(2025-01-31 09:05:03.00012 UTC),
        };
        assert_eq!(
            serde_json::to_value(&row).unwrap(),
            serde_json::json!({
                "id": "00000000-0000-0000-0000-000000000000",
                "team": "t",
                "user": "u",
                "action": "doc.edit",
                "resource_type": null,
                "resource_id": "42",
                "metadata": {"a": [1]},
                "ip": "2001:db8::1",
                "user_agent": null,
                "created_at": "2025-01-31T09:05:03.000120Z",
            })
        );
    }
}
