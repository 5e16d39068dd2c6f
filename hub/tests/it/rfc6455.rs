//! RFC 6455 conformance of a real node, over raw sockets: the server-side cases of the
//! Autobahn testsuite's sections 1-7 and 9 that apply to this hub (framing, pings and
//! pongs, reserved bits, opcodes, fragmentation, UTF-8 incl. code points split over
//! fragments, close handling, limits). Every violation must end with a close frame
//! carrying the contract's code (1002, or 1007 for invalid UTF-8), and a client next
//! door must not notice.
//!
//! The test writes a short report (case, expected, got) to
//! `$CARGO_TARGET_TMPDIR/rfc6455-report.txt` and prints it; it fails listing every case
//! that did not match.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(5);

/// A WebSocket client that writes whatever bytes a case needs.
struct Raw {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// What the server sent back, as a case sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Got {
    Close(Option<u16>),
    Pong(Vec<u8>),
    Text(String),
    /// The TCP connection ended without a close frame.
    Eof,
}

impl Raw {
    async fn connect(hub: &TestHub) -> Raw {
        let token = hub.token("raw", &[("t", "editor")]);
        let mut stream = TcpStream::connect(hub.addr).await.unwrap();
        let request = format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\r\n",
            hub.addr
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut raw = Raw {
            stream,
            buf: Vec::new(),
        };
        let head = raw.read_until_headers().await;
        assert!(head.starts_with("HTTP/1.1 101"), "upgrade refused: {head}");
        raw
    }

    async fn read_until_headers(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 4);
                return head;
            }
            self.fill().await.expect("the upgrade response");
        }
    }

    /// Reads more bytes; `None` at end of stream.
    async fn fill(&mut self) -> Option<()> {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout(WAIT, self.stream.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => None,
            Ok(Ok(n)) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Some(())
            }
            Err(_) => panic!("the server said nothing within {WAIT:?}"),
        }
    }

    /// Writes one frame; `mask` as a client must (false to break the rule).
    async fn frame(&mut self, first: u8, payload: &[u8], mask: bool) {
        let mut out = vec![first];
        let mask_bit = if mask { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n <= 0xFFFF => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if mask {
            let key = [0x37, 0xfa, 0x21, 0x3d];
            out.extend_from_slice(&key);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(payload);
        }
        // The server may already have closed (a case's earlier frame): ignore.
        let _ = self.stream.write_all(&out).await;
    }

    /// The next frame the server sends, skipping its pings.
    async fn next(&mut self) -> Got {
        loop {
            let Some((opcode, payload)) = self.parse() else {
                if self.fill().await.is_none() {
                    return Got::Eof;
                }
                continue;
            };
            return match opcode {
                0x8 => Got::Close(
                    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]])),
                ),
                0xA => Got::Pong(payload),
                0x1 => Got::Text(String::from_utf8_lossy(&payload).into_owned()),
                0x9 => continue,
                other => panic!("unexpected opcode {other:#x} from the server"),
            };
        }
    }

    /// One complete server frame from the buffer (servers do not mask).
    fn parse(&mut self) -> Option<(u8, Vec<u8>)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let opcode = b[0] & 0x0F;
        let (len, at) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().ok()?) as usize, 10),
            126 | 127 => return None,
            n => (n as usize, 2),
        };
        if b.len() < at + len {
            return None;
        }
        let payload = b[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Some((opcode, payload))
    }

    /// The close the server ends with (skipping replies to earlier valid frames).
    async fn close_code(&mut self) -> Got {
        loop {
            match self.next().await {
                Got::Text(_) | Got::Pong(_) => continue,
                other => return other,
            }
        }
    }
}

/// One frame a case writes: first byte (FIN, RSV, opcode), payload, masked or not.
type Frame = (u8, Vec<u8>, bool);

const TEXT: u8 = 0x81;
const FIN: u8 = 0x80;

/// A close frame's payload.
fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut p = code.to_be_bytes().to_vec();
    p.extend_from_slice(reason);
    p
}

#[tokio::test]
async fn violations_get_their_close_code_and_valid_framing_works() {
    let hub = TestHub::start().await;
    // A client next door, to show that nothing else on the node is disturbed.
    let mut neighbour = hub.connect("ann", &[("t", "editor")]).await;
    neighbour.join("t").await;

    let join = json!({"op": "join", "id": 1, "team": "t", "meta": {"n": "é"}}).to_string();
    let split_at = join.find('é').unwrap() + 1; // inside the two bytes of é
    let cases: Vec<(&str, Vec<Frame>, Got)> = vec![
        (
            "1.x unmasked client text frame",
            vec![(TEXT, b"{}".to_vec(), false)],
            Got::Close(Some(1002)),
        ),
        (
            "3.x reserved bit RSV1 set",
            vec![(TEXT | 0x40, b"{}".to_vec(), true)],
            Got::Close(Some(1002)),
        ),
        (
            "3.x reserved bits RSV2+RSV3 set on a ping",
            vec![(FIN | 0x30 | 0x9, b"x".to_vec(), true)],
            Got::Close(Some(1002)),
        ),
        (
            "4.x reserved data opcode 0x3",
            vec![(FIN | 0x3, b"x".to_vec(), true)],
            Got::Close(Some(1002)),
        ),
        (
            "4.x reserved control opcode 0xB",
            vec![(FIN | 0xB, b"x".to_vec(), true)],
            Got::Close(Some(1002)),
        ),
        (
            "2.x ping with a 126-byte payload",
            vec![(FIN | 0x9, vec![b'p'; 126], true)],
            Got::Close(Some(1002)),
        ),
        (
            "5.x fragmented ping",
            vec![(0x9, b"half".to_vec(), true)],
            Got::Close(Some(1002)),
        ),
        (
            "5.x continuation with nothing to continue",
            vec![(FIN, b"x".to_vec(), true)],
            Got::Close(Some(1002)),
        ),
        (
            "5.x new text frame inside a fragmented message",
            vec![
                (0x1, b"{\"op\"".to_vec(), true),
                (TEXT, b"{}".to_vec(), true),
            ],
            Got::Close(Some(1002)),
        ),
        (
            "6.x invalid UTF-8 in a text frame",
            vec![(TEXT, vec![b'"', 0xFF, b'"'], true)],
            Got::Close(Some(1007)),
        ),
        (
            "6.x invalid UTF-8 in the last fragment",
            vec![(0x1, b"\"ok".to_vec(), true), (FIN, vec![0xC3, 0x28], true)],
            Got::Close(Some(1007)),
        ),
        (
            "7.x close with a 1-byte payload",
            vec![(FIN | 0x8, vec![0x03], true)],
            Got::Close(Some(1002)),
        ),
        (
            "7.x close with a reserved code (1004)",
            vec![(FIN | 0x8, close_payload(1004, b""), true)],
            Got::Close(Some(1002)),
        ),
        (
            "7.x close with a reason that is not UTF-8",
            vec![(FIN | 0x8, close_payload(1000, &[0xFF, 0xFE]), true)],
            Got::Close(Some(1007)),
        ),
        (
            "7.x normal close is echoed",
            vec![(FIN | 0x8, close_payload(1000, b"bye"), true)],
            Got::Close(Some(1000)),
        ),
        (
            "9.x text frame over the size limit",
            vec![(TEXT, vec![b' '; 70 * 1024], true)],
            Got::Close(Some(1009)),
        ),
        (
            "2.x ping is answered with the same payload",
            vec![(FIN | 0x9, b"hello".to_vec(), true)],
            Got::Pong(b"hello".to_vec()),
        ),
        (
            "6.x a code point split over fragments is one valid message",
            vec![
                (0x1, join.as_bytes()[..split_at].to_vec(), true),
                (0x0, join.as_bytes()[split_at..split_at + 3].to_vec(), true),
                (FIN, join.as_bytes()[split_at + 3..].to_vec(), true),
            ],
            Got::Text("reply to id 1".into()),
        ),
    ];

    let mut report = String::from("case | expected | got\n---|---|---\n");
    let mut failed = Vec::new();
    for (name, frames, expected) in cases {
        let mut raw = Raw::connect(&hub).await;
        for (first, payload, mask) in frames {
            raw.frame(first, &payload, mask).await;
        }
        let got = match &expected {
            Got::Pong(_) => raw.next().await,
            Got::Text(_) => match raw.next().await {
                Got::Text(t) if t.contains("\"id\":1") && !t.contains("\"op\":\"error\"") => {
                    Got::Text("reply to id 1".into())
                }
                other => other,
            },
            _ => raw.close_code().await,
        };
        report.push_str(&format!("{name} | {expected:?} | {got:?}\n"));
        if got != expected {
            failed.push(format!("{name}: expected {expected:?}, got {got:?}"));
        }
    }
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("rfc6455-report.txt");
    std::fs::write(&path, &report).unwrap();
    println!("{report}(written to {})", path.display());
    assert!(
        failed.is_empty(),
        "cases that did not match:\n{}",
        failed.join("\n")
    );

    // The neighbour never noticed.
    neighbour
        .publish("t", "chat", json!("still here"), true)
        .await;
    assert_eq!(neighbour.expect_message().await.data, json!("still here"));
}
