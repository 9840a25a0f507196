//! Borrowed views of turnstile's events: they read the Cap'n Proto message in place, nothing is
//! copied. A view lives as long as the handler call; copy out what must outlive it.
//!
//! The SDK validates every pointer of a frame before a view is made, so accessors cannot fail on
//! structure; a text field that is not UTF-8 reads as "" and a missing list as empty.

use std::net::IpAddr;

use capnp::struct_list;
use turnstile_wire::turnstile_capnp::{
    GuardrailKind, body_chunk, cancel_reason, guardrail_inspect, header, http_request,
    request_complete, request_headers_event, request_metadata, response_headers_event,
    web_socket_frame,
};

/// Identifies one request: the connection it arrived on and its correlation id there.
/// Correlation ids are unique per connection among requests in flight only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestKey {
    /// The connection (numbered by the SDK from 1).
    pub connection: u64,
    /// turnstile's correlation id (never 0).
    pub correlation_id: u64,
}

fn text(r: capnp::Result<capnp::text::Reader<'_>>) -> &str {
    r.ok().and_then(|t| t.to_str().ok()).unwrap_or("")
}

fn data(r: capnp::Result<&[u8]>) -> &[u8] {
    r.unwrap_or(&[])
}

/// HTTP header fields in received order, names and values as bytes.
#[derive(Clone, Copy)]
pub struct Headers<'a> {
    list: Option<struct_list::Reader<'a, header::Owned>>,
}

impl<'a> Headers<'a> {
    fn new(list: capnp::Result<struct_list::Reader<'a, header::Owned>>) -> Self {
        Headers { list: list.ok() }
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.list.map_or(0, |l| l.len() as usize)
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first field named `name` (ASCII case-insensitive).
    pub fn get(&self, name: &str) -> Option<&'a [u8]> {
        self.get_all(name).next()
    }

    /// Every field named `name` (ASCII case-insensitive), in order.
    pub fn get_all<'n>(&self, name: &'n str) -> impl Iterator<Item = &'a [u8]> + 'n
    where
        'a: 'n,
    {
        self.iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
            .map(|(_, v)| v)
    }

    /// The fields as `(name, value)`.
    pub fn iter(&self) -> HeadersIter<'a> {
        HeadersIter {
            list: self.list,
            next: 0,
        }
    }
}

impl std::fmt::Debug for Headers<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.iter().map(|(n, v)| {
                (
                    String::from_utf8_lossy(n).into_owned(),
                    String::from_utf8_lossy(v).into_owned(),
                )
            }))
            .finish()
    }
}

impl<'a> IntoIterator for Headers<'a> {
    type Item = (&'a [u8], &'a [u8]);
    type IntoIter = HeadersIter<'a>;
    fn into_iter(self) -> HeadersIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Headers`].
pub struct HeadersIter<'a> {
    list: Option<struct_list::Reader<'a, header::Owned>>,
    next: u32,
}

impl<'a> Iterator for HeadersIter<'a> {
    type Item = (&'a [u8], &'a [u8]);
    fn next(&mut self) -> Option<Self::Item> {
        let list = self.list?;
        if self.next >= list.len() {
            return None;
        }
        let h = list.get(self.next);
        self.next += 1;
        Some((data(h.get_name()), data(h.get_value())))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.list.map_or(0, |l| l.len().saturating_sub(self.next)) as usize;
        (n, Some(n))
    }
}

/// The context of a request (`RequestMetadata`).
#[derive(Clone, Copy)]
pub struct Metadata<'a> {
    r: request_metadata::Reader<'a>,
}

impl<'a> Metadata<'a> {
    /// The caller's request id, may be "".
    pub fn request_id(&self) -> &'a str {
        text(self.r.get_request_id())
    }
    /// The client's IP address, when turnstile sent 4 or 16 bytes.
    pub fn client_ip(&self) -> Option<IpAddr> {
        let b = data(self.r.get_client_ip());
        if let Ok(v4) = <[u8; 4]>::try_from(b) {
            Some(IpAddr::from(v4))
        } else {
            <[u8; 16]>::try_from(b).ok().map(IpAddr::from)
        }
    }
    /// The client's port.
    pub fn client_port(&self) -> u16 {
        self.r.get_client_port()
    }
    /// TLS SNI, "" = none.
    pub fn server_name(&self) -> &'a str {
        text(self.r.get_server_name())
    }
    /// TLS version, "" = plaintext.
    pub fn tls_version(&self) -> &'a str {
        text(self.r.get_tls_version())
    }
    /// The route being decided.
    pub fn route_id(&self) -> &'a str {
        text(self.r.get_route_id())
    }
    /// The upstream, "" = unknown.
    pub fn upstream_id(&self) -> &'a str {
        text(self.r.get_upstream_id())
    }
    /// Unix time (ms) turnstile received the request.
    pub fn timestamp_ms(&self) -> u64 {
        self.r.get_timestamp_ms()
    }
    /// W3C trace context, "" = none.
    pub fn traceparent(&self) -> &'a str {
        text(self.r.get_traceparent())
    }
    /// Time the agent has to answer, relative to receipt; 0 = not stated.
    pub fn deadline_ms(&self) -> u32 {
        self.r.get_deadline_ms()
    }
}

/// A request's headers (`requestHeaders` event).
pub struct RequestHeaders<'a> {
    key: RequestKey,
    meta: request_metadata::Reader<'a>,
    req: http_request::Reader<'a>,
}

impl<'a> RequestHeaders<'a> {
    pub(crate) fn new(key: RequestKey, ev: request_headers_event::Reader<'a>) -> Option<Self> {
        Some(RequestHeaders {
            key,
            meta: ev.get_metadata().ok()?,
            req: ev.get_request().ok()?,
        })
    }
    /// Which request this is.
    pub fn key(&self) -> RequestKey {
        self.key
    }
    /// The request context.
    pub fn metadata(&self) -> Metadata<'a> {
        Metadata { r: self.meta }
    }
    /// "GET", "POST", ...
    pub fn method(&self) -> &'a str {
        text(self.req.get_method())
    }
    /// host\[:port\].
    pub fn authority(&self) -> &'a str {
        text(self.req.get_authority())
    }
    /// Path without the query, percent-encoding as received.
    pub fn path(&self) -> &'a str {
        text(self.req.get_path())
    }
    /// Query without the `?`, "" when absent.
    pub fn query(&self) -> &'a str {
        text(self.req.get_query())
    }
    /// "https", "http".
    pub fn scheme(&self) -> &'a str {
        text(self.req.get_scheme())
    }
    /// "HTTP/1.1", "HTTP/2", "HTTP/3".
    pub fn protocol(&self) -> &'a str {
        text(self.req.get_protocol())
    }
    /// "ip:port" of the client as the proxy saw it.
    pub fn client_address(&self) -> &'a str {
        text(self.req.get_client_address())
    }
    /// The client's IP: from the metadata, else parsed from [`Self::client_address`].
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.metadata().client_ip().or_else(|| {
            let a = self.client_address();
            a.parse::<std::net::SocketAddr>()
                .map(|s| s.ip())
                .ok()
                .or_else(|| a.parse().ok())
        })
    }
    /// The header fields.
    pub fn headers(&self) -> Headers<'a> {
        Headers::new(self.req.get_headers())
    }
    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&'a [u8]> {
        self.headers().get(name)
    }
    /// The first header named `name`, if it is UTF-8.
    pub fn header_str(&self, name: &str) -> Option<&'a str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok())
    }
}

/// A piece of a request or response body.
pub struct BodyChunk<'a> {
    key: RequestKey,
    r: body_chunk::Reader<'a>,
}

impl<'a> BodyChunk<'a> {
    pub(crate) fn new(key: RequestKey, r: body_chunk::Reader<'a>) -> Self {
        BodyChunk { key, r }
    }
    /// Which request this belongs to.
    pub fn key(&self) -> RequestKey {
        self.key
    }
    /// 0-based position within its body.
    pub fn index(&self) -> u32 {
        self.r.get_chunk_index()
    }
    /// The bytes.
    pub fn data(&self) -> &'a [u8] {
        data(self.r.get_data())
    }
    /// No more chunks follow.
    pub fn is_last(&self) -> bool {
        self.r.get_is_last()
    }
    /// Total body size when known, 0 = unknown.
    pub fn total_bytes(&self) -> u64 {
        self.r.get_total_bytes()
    }
    /// Bytes of this body so far, this chunk included.
    pub fn bytes_transferred(&self) -> u64 {
        self.r.get_bytes_transferred()
    }
    /// The proxy's remaining buffer for this body, 0 = not reported.
    pub fn proxy_buffer_available_bytes(&self) -> u64 {
        self.r.get_proxy_buffer_available_bytes()
    }
}

/// The upstream's response headers (`responseHeaders` event).
pub struct ResponseHeaders<'a> {
    key: RequestKey,
    status: u16,
    headers: Headers<'a>,
    meta: request_metadata::Reader<'a>,
    req: http_request::Reader<'a>,
}

impl<'a> ResponseHeaders<'a> {
    pub(crate) fn new(key: RequestKey, ev: response_headers_event::Reader<'a>) -> Option<Self> {
        let r = ev.get_response().ok()?;
        Some(ResponseHeaders {
            key,
            status: r.get_status(),
            headers: Headers::new(r.get_headers()),
            meta: ev.get_metadata().ok()?,
            req: ev.get_request().ok()?,
        })
    }
    /// Context of the request this response answers (request id, route, client).
    pub fn metadata(&self) -> Metadata<'a> {
        Metadata { r: self.meta }
    }
    /// Method of the request this response answers ("" when the proxy did not send it).
    pub fn request_method(&self) -> &'a str {
        text(self.req.get_method())
    }
    /// Path of the request this response answers ("" when the proxy did not send it).
    pub fn request_path(&self) -> &'a str {
        text(self.req.get_path())
    }
    /// Header fields of the request this response answers (empty when not sent).
    pub fn request_headers(&self) -> Headers<'a> {
        Headers::new(self.req.get_headers())
    }
    /// Which request this belongs to.
    pub fn key(&self) -> RequestKey {
        self.key
    }
    /// HTTP status.
    pub fn status(&self) -> u16 {
        self.status
    }
    /// The header fields.
    pub fn headers(&self) -> Headers<'a> {
        self.headers
    }
}

/// One WebSocket frame.
pub struct WebSocketFrame<'a> {
    key: RequestKey,
    r: web_socket_frame::Reader<'a>,
}

impl<'a> WebSocketFrame<'a> {
    pub(crate) fn new(key: RequestKey, r: web_socket_frame::Reader<'a>) -> Self {
        WebSocketFrame { key, r }
    }
    /// Which request (upgraded connection) this belongs to.
    pub fn key(&self) -> RequestKey {
        self.key
    }
    /// RFC 6455 opcode.
    pub fn opcode(&self) -> u8 {
        self.r.get_opcode()
    }
    /// The FIN bit.
    pub fn fin(&self) -> bool {
        self.r.get_fin()
    }
    /// Direction: client to server.
    pub fn client_to_server(&self) -> bool {
        self.r.get_client_to_server()
    }
    /// 0-based index in its direction.
    pub fn index(&self) -> u64 {
        self.r.get_frame_index()
    }
    /// Unmasked payload.
    pub fn data(&self) -> &'a [u8] {
        data(self.r.get_data())
    }
}

/// Content submitted for guardrail inspection.
pub struct GuardrailInspect<'a> {
    key: RequestKey,
    r: guardrail_inspect::Reader<'a>,
}

impl<'a> GuardrailInspect<'a> {
    pub(crate) fn new(key: RequestKey, r: guardrail_inspect::Reader<'a>) -> Self {
        GuardrailInspect { key, r }
    }
    /// Which request this belongs to.
    pub fn key(&self) -> RequestKey {
        self.key
    }
    /// What to look for; an unknown kind reads as `Custom`.
    pub fn kind(&self) -> GuardrailKind {
        self.r.get_kind().unwrap_or(GuardrailKind::Custom)
    }
    /// The text or bytes to inspect.
    pub fn content(&self) -> &'a [u8] {
        data(self.r.get_content())
    }
    /// Model output (true) or prompt (false).
    pub fn is_response(&self) -> bool {
        self.r.get_is_response()
    }
    /// Model name, "" = unknown.
    pub fn model(&self) -> &'a str {
        text(self.r.get_model())
    }
    /// Policy ids to apply, empty = agent defaults.
    pub fn policies(&self) -> impl Iterator<Item = &'a str> {
        let list = self.r.get_policies().ok();
        let n = list.map_or(0, |l| l.len());
        (0..n).filter_map(move |i| list.map(|l| text(l.get(i))))
    }
}

/// The request finished (`requestComplete` event).
pub struct RequestComplete<'a> {
    key: RequestKey,
    r: request_complete::Reader<'a>,
}

impl<'a> RequestComplete<'a> {
    pub(crate) fn new(key: RequestKey, r: request_complete::Reader<'a>) -> Self {
        RequestComplete { key, r }
    }
    /// Which request this was.
    pub fn key(&self) -> RequestKey {
        self.key
    }
    /// Final status sent downstream, 0 = none (aborted).
    pub fn status(&self) -> u16 {
        self.r.get_status()
    }
    /// Duration as measured by turnstile.
    pub fn duration_us(&self) -> u64 {
        self.r.get_duration_us()
    }
    /// Request body bytes.
    pub fn request_body_bytes(&self) -> u64 {
        self.r.get_request_body_bytes()
    }
    /// Response body bytes.
    pub fn response_body_bytes(&self) -> u64 {
        self.r.get_response_body_bytes()
    }
    /// "" when the request completed normally.
    pub fn error(&self) -> &'a str {
        text(self.r.get_error())
    }
}

/// Why a request was cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelReason {
    /// The client went away.
    ClientDisconnect,
    /// turnstile's timeout for this agent expired.
    Timeout,
    /// Another agent (this id) blocked first.
    BlockedByAgent(String),
    /// The upstream failed.
    UpstreamError,
    /// turnstile is shutting down.
    ProxyShutdown,
    /// An operator cancelled it, for this reason.
    Manual(String),
    /// The connection closed with the request open (no cancel frame).
    ConnectionClosed,
    /// A reason this build does not know.
    Unknown,
}

impl CancelReason {
    pub(crate) fn read(r: capnp::Result<cancel_reason::Reader<'_>>) -> Self {
        use cancel_reason::Which;
        let Ok(r) = r else {
            return CancelReason::Unknown;
        };
        match r.which() {
            Ok(Which::ClientDisconnect(())) => CancelReason::ClientDisconnect,
            Ok(Which::Timeout(())) => CancelReason::Timeout,
            Ok(Which::BlockedByAgent(t)) => CancelReason::BlockedByAgent(text(t).to_owned()),
            Ok(Which::UpstreamError(())) => CancelReason::UpstreamError,
            Ok(Which::ProxyShutdown(())) => CancelReason::ProxyShutdown,
            Ok(Which::Manual(t)) => CancelReason::Manual(text(t).to_owned()),
            Err(_) => CancelReason::Unknown,
        }
    }
}
