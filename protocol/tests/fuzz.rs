//! Property tests of the decoders that take a client's input: text frames and ids.
//!
//! For any input: no panic, and either a value or the contract's error (a
//! `DecodeError` that the hub answers with `bad_request`). What decodes must encode and
//! decode back to itself. `fuzz-corpus/` holds inputs that once mattered (edge cases
//! written by hand and shrunk failures); every test runs them before the random cases.
//! proptest records a new failure's seed in `fuzz.proptest-regressions` beside this
//! file: commit it, and add the shrunk input to the corpus.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use teamhub_protocol::{MessageType, TeamId, UserId, decode_client_frame};

fn corpus(name: &str) -> Vec<String> {
    let path = format!("{}/tests/fuzz-corpus/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Decodes, and when it decodes, checks the round trip.
fn check_frame(text: &str) {
    match decode_client_frame(text) {
        Ok(frame) => {
            let again = serde_json::to_string(&frame).expect("a decoded frame encodes");
            let back = decode_client_frame(&again)
                .unwrap_or_else(|e| panic!("{again} (from {text}) does not decode: {e:?}"));
            assert_eq!(back, frame, "round trip of {text}");
        }
        Err(e) => assert!(!e.message.is_empty(), "{text}: an error says why"),
    }
}

/// JSON values shaped like client frames: the contract's keys and likely values, mixed
/// with anything else.
fn frame_like() -> impl Strategy<Value = Value> {
    let scalar = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z0-9_.:-]{0,12}".prop_map(Value::from),
        any::<String>().prop_map(Value::from),
    ];
    let json = scalar.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let op = prop_oneof![
        Just("join"),
        Just("leave"),
        Just("publish"),
        Just("presence"),
        Just("refresh"),
        Just("ping"),
        Just("other"),
    ];
    let key = prop_oneof![
        Just("id"),
        Just("team"),
        Just("type"),
        Just("data"),
        Just("echo"),
        Just("since"),
        Just("meta"),
        Just("token"),
        Just("epoch"),
        Just("offset"),
    ];
    (
        op,
        prop::collection::vec((key, json), 0..6),
        prop::option::of(any::<u64>()),
    )
        .prop_map(|(op, fields, id)| {
            let mut m = Map::new();
            m.insert("op".into(), json!(op));
            for (k, v) in fields {
                m.insert(k.into(), v);
            }
            if let Some(id) = id {
                m.insert("id".into(), json!(id));
            }
            Value::Object(m)
        })
}

fn valid_id(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

#[test]
fn the_corpus_decodes_or_is_refused() {
    for line in corpus("client-frames.txt") {
        check_frame(&line);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_text_decodes_or_is_refused(text in any::<String>()) {
        check_frame(&text);
    }

    #[test]
    fn frame_shaped_json_decodes_or_is_refused(frame in frame_like()) {
        check_frame(&frame.to_string());
    }

    #[test]
    fn ids_are_exactly_the_contract_alphabet(s in "\\PC{0,3}|[A-Za-z0-9_.:-]{0,130}") {
        prop_assert_eq!(TeamId::new(&s).is_ok(), valid_id(&s, TeamId::MAX_LEN));
        prop_assert_eq!(UserId::new(&s).is_ok(), valid_id(&s, UserId::MAX_LEN));
        prop_assert_eq!(MessageType::new(&s).is_ok(), valid_id(&s, MessageType::MAX_LEN));
    }
}
