//! One WebSocket to the hub, driven by the caller: no background task, no buffering.
//!
//! [`Connection`] exists for callers that want to see the wire as it is: hub
//! integration tests that send malformed frames or assert on close codes, and the load
//! generator, which wants no extra task per socket. [`crate::Client`] is built on top of
//! it.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use teamhub_protocol::{ClientFrame, SUBPROTOCOL, SeedFrame, ServerFrame};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, Uri, header};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::{ClientError, TlsConfig};

/// How long [`Connection::close`] waits for the server's half of the closing handshake.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where the token travels during the upgrade request.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenPlacement {
    /// `Authorization: Bearer <token>`, what services and IDE plugins use.
    #[default]
    Header,
    /// `?token=<token>` (percent-encoded), what browsers must use since they cannot set
    /// headers on a WebSocket.
    Query,
}

/// Everything needed to open a [`Connection`].
///
/// Build with [`ConnectOptions::new`] and the setters, or fill the fields directly.
#[derive(Clone)]
pub struct ConnectOptions {
    /// `ws://host:port/ws`, or `ws://host:port/ws/{team}` for the seed endpoint;
    /// `wss://` speaks TLS, trusting [`ConnectOptions::tls`].
    pub url: String,
    /// A JWT or an API key (`thk_...`). `None` connects without credentials (the hub
    /// answers 401, which is what tests of that path want).
    pub token: Option<String>,
    pub token_in: TokenPlacement,
    /// Offer subprotocol `teamhub.v1` (default true).
    pub subprotocol: bool,
    /// Send an `Origin` header, as a browser would. IDE plugins and services send none.
    pub origin: Option<String>,
    /// Local address to connect from (port chosen by the OS). Load tests spread sockets
    /// over 127.0.0.x this way to get past the ~28k ephemeral ports of one address.
    pub bind_addr: Option<IpAddr>,
    /// Largest message accepted from the server; `None` keeps tungstenite's default
    /// (64 MiB). A larger message makes [`Connection::recv`] fail.
    pub max_message_size: Option<usize>,
    /// The roots a `wss://` URL trusts; `None` trusts the system's
    /// ([`TlsConfig::system_roots`]). Ignored for `ws://`.
    pub tls: Option<TlsConfig>,
}

impl ConnectOptions {
    pub fn new(url: impl Into<String>) -> Self {
        ConnectOptions {
            url: url.into(),
            token: None,
            token_in: TokenPlacement::Header,
            subprotocol: true,
            origin: None,
            bind_addr: None,
            max_message_size: None,
            tls: None,
        }
    }

    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn token_in(mut self, placement: TokenPlacement) -> Self {
        self.token_in = placement;
        self
    }

    pub fn subprotocol(mut self, offer: bool) -> Self {
        self.subprotocol = offer;
        self
    }

    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    pub fn bind_addr(mut self, addr: IpAddr) -> Self {
        self.bind_addr = Some(addr);
        self
    }

    pub fn max_message_size(mut self, bytes: usize) -> Self {
        self.max_message_size = Some(bytes);
        self
    }
}

/// Tokens are credentials: keep them out of logs and panic messages.
impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_in", &self.token_in)
            .field("subprotocol", &self.subprotocol)
            .field("origin", &self.origin)
            .field("bind_addr", &self.bind_addr)
            .field("max_message_size", &self.max_message_size)
            .field("tls", &self.tls)
            .finish()
    }
}

/// What [`Connection::recv`] returns.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A frame of `/ws`.
    Frame(ServerFrame),
    /// A frame of the seed endpoint `/ws/{team}`.
    Seed(SeedFrame),
    /// A text frame that is neither: kept verbatim so tests can see what arrived.
    Text(String),
    /// A binary frame. The hub never sends one; kept rather than dropped so a test sees
    /// it.
    Binary(Vec<u8>),
    /// The connection is closed. `code` is `None` when it ended without a close frame
    /// (reset, EOF), or with a close frame that carried no code.
    Closed { code: Option<u16>, reason: String },
}

impl Incoming {
    /// Decodes a text frame: a `/ws` frame first, then a seed frame, else the raw text.
    pub fn decode(text: &str) -> Incoming {
        if let Ok(frame) = serde_json::from_str::<ServerFrame>(text) {
            return Incoming::Frame(frame);
        }
        if let Ok(seed) = serde_json::from_str::<SeedFrame>(text) {
            return Incoming::Seed(seed);
        }
        Incoming::Text(text.to_owned())
    }
}

/// What [`Connection::recv_raw`] returns: a frame as it came off the wire.
#[derive(Debug, Clone, PartialEq)]
pub enum RawIncoming {
    /// A text frame, not decoded (valid UTF-8: tungstenite checked it).
    Text(tungstenite::Utf8Bytes),
    /// A binary frame.
    Binary(tungstenite::Bytes),
    /// The connection is closed; as [`Incoming::Closed`].
    Closed { code: Option<u16>, reason: String },
}

/// An open WebSocket to the hub.
///
/// Reading drives the socket: tungstenite answers the server's pings while
/// [`Connection::recv`] is being awaited, so a caller that stops reading will
/// eventually be closed as idle (1001).
pub struct Connection {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    subprotocol: Option<String>,
    local_addr: SocketAddr,
    /// Set once the connection ended; later `recv` calls report the same close.
    closed: Option<(Option<u16>, String)>,
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("local_addr", &self.local_addr)
            .field("subprotocol", &self.subprotocol)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Opens the TCP socket (from `bind_addr` when given) and performs the upgrade.
    ///
    /// An upgrade refused with an HTTP status (401 bad token, 403 refused origin) is
    /// [`ClientError::Http`].
    pub async fn connect(opts: ConnectOptions) -> Result<Connection, ClientError> {
        let target = Target::parse(&opts.url)?;
        let mut url = opts.url.clone();
        if let (Some(token), TokenPlacement::Query) = (&opts.token, opts.token_in) {
            url.push(if target.has_query { '&' } else { '?' });
            url.push_str("token=");
            percent_encode_into(token, &mut url);
        }
        let mut request = url.as_str().into_client_request()?;
        let headers = request.headers_mut();
        if let (Some(token), TokenPlacement::Header) = (&opts.token, opts.token_in) {
            headers.insert(
                header::AUTHORIZATION,
                header_value(&format!("Bearer {token}"))?,
            );
        }
        if opts.subprotocol {
            headers.insert(
                header::SEC_WEBSOCKET_PROTOCOL,
                HeaderValue::from_static(SUBPROTOCOL),
            );
        }
        if let Some(origin) = &opts.origin {
            headers.insert(header::ORIGIN, header_value(origin)?);
        }

        let stream = open_tcp(&target, opts.bind_addr).await?;
        let local_addr = stream.local_addr()?;
        let stream = if target.secure {
            let tls = match &opts.tls {
                Some(tls) => tls.clone(),
                None => TlsConfig::system_roots()?,
            };
            MaybeTlsStream::Rustls(open_tls(&target, &tls, stream).await?)
        } else {
            MaybeTlsStream::Plain(stream)
        };
        // tungstenite's 128 KiB default read buffer is zero-filled on every read: with
        // thousands of sockets per process that memset dominates the CPU profile.
        let mut config = WebSocketConfig::default().read_buffer_size(4096);
        if let Some(max) = opts.max_message_size {
            config = config.max_message_size(Some(max));
        }
        let (ws, response) =
            tokio_tungstenite::client_async_with_config(request, stream, Some(config))
                .await
                .map_err(|e| match e {
                    tungstenite::Error::Http(response) => ClientError::Http {
                        status: response.status().as_u16(),
                        body: response
                            .body()
                            .as_deref()
                            .map(|b| String::from_utf8_lossy(b).into_owned())
                            .unwrap_or_default(),
                    },
                    e => e.into(),
                })?;
        let subprotocol = response
            .headers()
            .get(header::SEC_WEBSOCKET_PROTOCOL)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Ok(Connection {
            ws,
            subprotocol,
            local_addr,
            closed: None,
        })
    }

    /// The subprotocol the server selected (`teamhub.v1` when offered), if any.
    pub fn selected_subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The local end of the socket (shows the effect of `bind_addr`).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Sends one client frame.
    pub async fn send(&mut self, frame: &ClientFrame) -> Result<(), ClientError> {
        let text = serde_json::to_string(frame)?;
        self.send_message(Message::text(text)).await
    }

    /// Sends any text as one frame, valid JSON or not: for tests of bad input.
    pub async fn send_text(&mut self, text: &str) -> Result<(), ClientError> {
        self.send_message(Message::text(text)).await
    }

    /// Sends a binary frame (which the hub refuses with `bad_request`).
    pub async fn send_binary(&mut self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.send_message(Message::binary(bytes)).await
    }

    async fn send_message(&mut self, message: Message) -> Result<(), ClientError> {
        if let Some((code, reason)) = &self.closed {
            return Err(ClientError::Closed {
                code: *code,
                reason: reason.clone(),
            });
        }
        match self.ws.send(message).await {
            Ok(()) => Ok(()),
            Err(e) => match peer_gone(&e) {
                Some(reason) => {
                    let (code, reason) = self.mark_closed(None, reason);
                    Err(ClientError::Closed { code, reason })
                }
                None => Err(e.into()),
            },
        }
    }

    /// Waits for the next frame from the server and decodes it ([`Incoming::decode`]).
    ///
    /// Pings and pongs are handled inside (tungstenite queues the pong and sends it on
    /// the next read or write). Once the connection has ended this keeps returning the
    /// same [`Incoming::Closed`].
    ///
    /// Cancel safety: this method is cancel safe (see [`Connection::recv_raw`]).
    pub async fn recv(&mut self) -> Result<Incoming, ClientError> {
        Ok(match self.recv_raw().await? {
            RawIncoming::Text(text) => Incoming::decode(text.as_str()),
            RawIncoming::Binary(bytes) => Incoming::Binary(bytes.to_vec()),
            RawIncoming::Closed { code, reason } => Incoming::Closed { code, reason },
        })
    }

    /// Waits for the next frame from the server and hands it over undecoded.
    ///
    /// For callers that decode only the fields they need (the load generator reads
    /// hundreds of thousands of frames a second on one thread) or that speak another
    /// framing over the same socket. Pings, pongs and the close handshake are handled
    /// as in [`Connection::recv`].
    ///
    /// Cancel safety: this method is cancel safe. Each await point is a
    /// `StreamExt::next`, and a frame is returned as soon as it is taken, so dropping
    /// the future (in a `select!`) loses nothing.
    pub async fn recv_raw(&mut self) -> Result<RawIncoming, ClientError> {
        loop {
            if let Some((code, reason)) = &self.closed {
                return Ok(RawIncoming::Closed {
                    code: *code,
                    reason: reason.clone(),
                });
            }
            let message = match self.ws.next().await {
                Some(Ok(message)) => message,
                None => {
                    self.mark_closed(None, "connection ended without a close frame".into());
                    continue;
                }
                Some(Err(e)) => match peer_gone(&e) {
                    Some(reason) => {
                        self.mark_closed(None, reason);
                        continue;
                    }
                    None => return Err(e.into()),
                },
            };
            match message {
                Message::Text(text) => return Ok(RawIncoming::Text(text)),
                Message::Binary(bytes) => return Ok(RawIncoming::Binary(bytes)),
                Message::Close(frame) => {
                    // tungstenite has queued our half of the closing handshake; push it
                    // out now rather than on a read that may never come.
                    let _ = self.ws.flush().await;
                    let (code, reason) = match frame {
                        Some(f) => (Some(u16::from(f.code)), f.reason.as_str().to_owned()),
                        None => (None, String::new()),
                    };
                    self.mark_closed(code, reason);
                }
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => {}
            }
        }
    }

    /// Closes with 1000 and waits (at most 5 s) for the server's close frame, skipping
    /// any frames still in flight. Closing an already closed connection is a no-op.
    pub async fn close(&mut self) -> Result<(), ClientError> {
        if self.closed.is_some() {
            return Ok(());
        }
        let normal = CloseFrame {
            code: WsCloseCode::Normal,
            reason: "".into(),
        };
        if let Err(e) = self.ws.close(Some(normal)).await
            && peer_gone(&e).is_none()
        {
            return Err(e.into());
        }
        let drain = async {
            loop {
                if let Incoming::Closed { .. } = self.recv().await? {
                    return Ok::<_, ClientError>(());
                }
            }
        };
        match tokio::time::timeout(CLOSE_TIMEOUT, drain).await {
            Ok(result) => result,
            // The server did not finish the handshake; dropping the socket is all that
            // is left to do.
            Err(_) => {
                self.mark_closed(None, "close handshake timed out".into());
                Ok(())
            }
        }
    }

    /// The close code and reason, once the connection has ended.
    pub fn close_info(&self) -> Option<(Option<u16>, &str)> {
        self.closed
            .as_ref()
            .map(|(code, reason)| (*code, reason.as_str()))
    }

    fn mark_closed(&mut self, code: Option<u16>, reason: String) -> (Option<u16>, String) {
        self.closed.get_or_insert((code, reason)).clone()
    }
}

/// The parts of the URL this client needs before tungstenite sees it.
struct Target {
    host: String,
    port: u16,
    has_query: bool,
    /// `wss://`.
    secure: bool,
}

impl Target {
    fn parse(url: &str) -> Result<Target, ClientError> {
        let invalid = |reason: &str| ClientError::InvalidUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url.parse().map_err(|e| invalid(&format!("{e}")))?;
        let secure = match uri.scheme_str() {
            Some("ws") => false,
            Some("wss") => true,
            _ => return Err(invalid("expected a ws:// or wss:// URL")),
        };
        let host = uri.host().ok_or_else(|| invalid("no host"))?;
        // `Uri::host` keeps the brackets of an IPv6 literal; the resolver wants none.
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        Ok(Target {
            host,
            port: uri.port_u16().unwrap_or(if secure { 443 } else { 80 }),
            has_query: uri.query().is_some(),
            secure,
        })
    }
}

async fn open_tcp(target: &Target, bind_addr: Option<IpAddr>) -> Result<TcpStream, ClientError> {
    let stream = match bind_addr {
        None => TcpStream::connect((target.host.as_str(), target.port)).await?,
        Some(local) => {
            let remote = tokio::net::lookup_host((target.host.as_str(), target.port))
                .await?
                .find(|a| a.is_ipv4() == local.is_ipv4())
                .ok_or_else(|| {
                    std::io::Error::new(
                        std::io::ErrorKind::AddrNotAvailable,
                        format!(
                            "{} has no address of the same family as {local}",
                            target.host
                        ),
                    )
                })?;
            let socket = if local.is_ipv4() {
                TcpSocket::new_v4()?
            } else {
                TcpSocket::new_v6()?
            };
            socket.bind(SocketAddr::new(local, 0))?;
            socket.connect(remote).await?
        }
    };
    // Frames are small and latency-sensitive (ping rtt is measured through this).
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The TLS handshake, verifying the server's certificate for the URL's host. A
/// certificate that does not verify is [`ClientError::Tls`]: trying again cannot help.
async fn open_tls(
    target: &Target,
    tls: &TlsConfig,
    stream: TcpStream,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ClientError> {
    let name = rustls::pki_types::ServerName::try_from(target.host.clone()).map_err(|e| {
        ClientError::Tls {
            reason: format!("{:?} is not a valid TLS server name: {e}", target.host),
        }
    })?;
    TlsConnector::from(tls.0.clone())
        .connect(name, stream)
        .await
        .map_err(|e| {
            let refused = e
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .map(|tls| format!("TLS handshake with {} failed: {tls}", target.host));
            match refused {
                Some(reason) => ClientError::Tls { reason },
                None => ClientError::Io(e),
            }
        })
}

/// Errors that only mean the peer is gone, as opposed to a protocol or capacity fault.
fn peer_gone(e: &tungstenite::Error) -> Option<String> {
    use std::io::ErrorKind;
    use tungstenite::error::ProtocolError;
    match e {
        tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed => {
            Some("connection closed".into())
        }
        tungstenite::Error::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
            Some("connection reset without a close frame".into())
        }
        tungstenite::Error::Io(io)
            if matches!(
                io.kind(),
                ErrorKind::ConnectionReset
                    | ErrorKind::ConnectionAborted
                    | ErrorKind::UnexpectedEof
                    | ErrorKind::BrokenPipe
            ) =>
        {
            Some(format!("connection lost: {io}"))
        }
        _ => None,
    }
}

fn header_value(s: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_str(s).map_err(|e| tungstenite::Error::from(e).into())
}

/// Percent-encodes everything but RFC 3986 unreserved characters. `%20` rather than
/// `+` for spaces, so both form decoders and plain URI decoders get the token back.
fn percent_encode_into(s: &str, out: &mut String) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_in_queries_are_percent_encoded() {
        let mut out = String::new();
        percent_encode_into("thk_a b+c/=é.-~", &mut out);
        assert_eq!(out, "thk_a%20b%2Bc%2F%3D%C3%A9.-~");
    }

    #[test]
    fn urls_are_checked() {
        let t = Target::parse("ws://[::1]:9000/ws/team-1?x=1").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.has_query), ("::1", 9000, true));
        assert_eq!(Target::parse("ws://localhost/ws").unwrap().port, 80);
        let secure = Target::parse("wss://hub.example.com/ws").unwrap();
        assert_eq!((secure.port, secure.secure), (443, true));
        for bad in ["https://h/ws", "http://h/ws", "not a url", "/ws"] {
            assert!(
                matches!(Target::parse(bad), Err(ClientError::InvalidUrl { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn incoming_decodes_in_order() {
        assert!(matches!(
            Incoming::decode(r#"{"op":"pong","id":1}"#),
            Incoming::Frame(ServerFrame::Pong { id: Some(1) })
        ));
        assert!(matches!(
            Incoming::decode(r#"{"type":"a.b","user_id":"u","data":null}"#),
            Incoming::Seed(_)
        ));
        assert_eq!(
            Incoming::decode(r#"{"op":"nope"}"#),
            Incoming::Text(r#"{"op":"nope"}"#.into())
        );
    }

    #[test]
    fn debug_hides_the_token() {
        let opts = ConnectOptions::new("ws://h/ws").token("secret-token");
        assert!(!format!("{opts:?}").contains("secret-token"));
    }
}
