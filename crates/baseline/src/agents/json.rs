//! The agent protocol's JSON encoding as a conventional team writes it: serde structs for the
//! messages the baseline sends and reads, serialized with serde_json.
//!
//! The mapping is the one `docs/protocol.md` defines for JSON frames (kinds 5 and 6): schema
//! field names as keys, a union's active member as one key of its struct, `Data` as a string when
//! it is UTF-8 and `{"base64": ...}` otherwise, 64-bit integers as numbers, fields at their
//! default omitted. Fields the baseline does not use are ignored when reading.

use serde::de::IgnoredAny;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// `Data` bytes, borrowed for sending.
pub struct DataRef<'a>(pub &'a [u8]);

impl Serialize for DataRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use base64::Engine as _;
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(self.0),
                )?;
                m.end()
            }
        }
    }
}

/// `Data` bytes, owned after reading.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DataBuf(pub Vec<u8>);

impl<'de> Deserialize<'de> for DataBuf {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Repr {
            Text(String),
            Base64 { base64: String },
        }
        match Repr::deserialize(d)? {
            Repr::Text(t) => Ok(DataBuf(t.into_bytes())),
            Repr::Base64 { base64 } => {
                use base64::Engine as _;
                base64::engine::general_purpose::STANDARD
                    .decode(base64.as_bytes())
                    .map(DataBuf)
                    .map_err(serde::de::Error::custom)
            }
        }
    }
}

fn is_zero_u64(v: &u64) -> bool {
    *v == 0
}
fn is_zero_u32(v: &u32) -> bool {
    *v == 0
}
fn is_zero_u16(v: &u16) -> bool {
    *v == 0
}
fn is_false(v: &bool) -> bool {
    !*v
}
fn is_empty_str(v: &&str) -> bool {
    v.is_empty()
}
fn is_empty_data(v: &DataRef<'_>) -> bool {
    v.0.is_empty()
}

/// Root of every baseline-to-agent JSON frame.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ProxyToAgent<'a> {
    /// The request (call) this belongs to; 0 = connection-level.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub correlation_id: u64,
    /// The union member.
    #[serde(flatten)]
    pub event: Event<'a>,
}

/// The members of `ProxyToAgent`'s union the baseline sends.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Event<'a> {
    /// Agent configuration, after the handshake.
    Configure(Configure<'a>),
    /// A request's headers.
    RequestHeaders(RequestHeadersEvent<'a>),
    /// A request body chunk.
    RequestBodyChunk(BodyChunk<'a>),
    /// Stop working on a call.
    Cancel(Cancel),
}

/// `ConfigureEvent`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Configure<'a> {
    /// The agent's id.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub agent_id: &'a str,
    /// Its configuration document.
    #[serde(skip_serializing_if = "is_empty_data")]
    pub config: DataRef<'a>,
    /// Reload generation.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub generation: u64,
}

/// `RequestHeadersEvent`.
#[derive(Serialize)]
pub struct RequestHeadersEvent<'a> {
    /// Request context.
    pub metadata: Metadata<'a>,
    /// The HTTP request.
    pub request: HttpRequest<'a>,
}

/// `RequestMetadata`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Metadata<'a> {
    /// Caller's request id.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub request_id: &'a str,
    /// Client IP, 4 or 16 bytes.
    #[serde(skip_serializing_if = "is_empty_data")]
    pub client_ip: DataRef<'a>,
    /// Client port.
    #[serde(skip_serializing_if = "is_zero_u16")]
    pub client_port: u16,
    /// Route id.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub route_id: &'a str,
    /// Unix time of receipt, ms.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub timestamp_ms: u64,
    /// Time the agent has to answer, ms.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub deadline_ms: u32,
}

/// `HttpRequest`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRequest<'a> {
    /// Method.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub method: &'a str,
    /// Host.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub authority: &'a str,
    /// Path without the query.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub path: &'a str,
    /// Query without '?'.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub query: &'a str,
    /// Header fields in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Header<'a>>,
    /// "ip:port" of the client.
    #[serde(skip_serializing_if = "is_empty_str")]
    pub client_address: &'a str,
    /// "https", "http".
    #[serde(skip_serializing_if = "is_empty_str")]
    pub scheme: &'a str,
    /// "HTTP/1.1", ...
    #[serde(skip_serializing_if = "is_empty_str")]
    pub protocol: &'a str,
}

/// `Header`, borrowed.
#[derive(Serialize)]
pub struct Header<'a> {
    /// Name bytes.
    pub name: DataRef<'a>,
    /// Value bytes.
    pub value: DataRef<'a>,
}

/// `BodyChunk`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct BodyChunk<'a> {
    /// Position within the body.
    #[serde(skip_serializing_if = "is_zero_u32")]
    pub chunk_index: u32,
    /// The bytes.
    #[serde(skip_serializing_if = "is_empty_data")]
    pub data: DataRef<'a>,
    /// No more chunks follow.
    #[serde(skip_serializing_if = "is_false")]
    pub is_last: bool,
    /// Total body size when known.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub total_bytes: u64,
    /// Bytes so far including this chunk.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub bytes_transferred: u64,
}

/// `CancelRequest`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Cancel {
    /// Why.
    pub reason: CancelReason,
    /// Unix time, ms.
    #[serde(skip_serializing_if = "is_zero_u64")]
    pub timestamp_ms: u64,
}

/// `CancelReason` (the members the baseline uses).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub enum CancelReason {
    /// The client went away.
    ClientDisconnect(()),
    /// The call timed out.
    Timeout(()),
    /// Another agent blocked first (its id).
    BlockedByAgent(String),
}

/// Root of every agent-to-baseline JSON frame. Members the baseline does not act on (metrics,
/// logs, config updates, flow control) are read and dropped.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct AgentToProxy {
    /// The call this answers; 0 = connection-level.
    pub correlation_id: u64,
    /// An answer to an event.
    pub response: Option<AgentResponse>,
    /// A health report.
    pub health: Option<Health>,
    /// Metrics (ignored).
    pub metrics: Option<IgnoredAny>,
    /// Config update request (ignored).
    pub config_update: Option<IgnoredAny>,
    /// Flow control (ignored).
    pub flow_control: Option<IgnoredAny>,
    /// Log line (ignored).
    pub log: Option<IgnoredAny>,
}

/// `AgentResponse`.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct AgentResponse {
    /// Unset = allow.
    pub verdict: Option<Verdict>,
    /// Request header mutations.
    pub request_headers: Vec<HeaderOp>,
    /// Response header mutations.
    pub response_headers: Vec<HeaderOp>,
    /// Why.
    pub audit: Option<Audit>,
    /// No decision yet: more body wanted.
    pub need_more: bool,
}

/// `Verdict`: `allow` is `null`, so only block and redirect are looked at.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Verdict {
    /// Refuse.
    pub block: Option<Block>,
    /// Send elsewhere.
    pub redirect: Option<Redirect>,
}

/// `Block`.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Block {
    /// HTTP status (0 = 403).
    pub status: u16,
    /// Response body.
    pub body: DataBuf,
    /// Extra response headers.
    pub headers: Vec<HeaderBuf>,
}

/// `Redirect`.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Redirect {
    /// Location.
    pub location: String,
    /// Status (0 = 302).
    pub status: u16,
}

/// `Header`, owned.
#[derive(Deserialize, Default, Debug, Clone)]
#[serde(default)]
pub struct HeaderBuf {
    /// Name bytes.
    pub name: DataBuf,
    /// Value bytes.
    pub value: DataBuf,
}

/// `HeaderOp`.
#[derive(Deserialize, Debug, Clone)]
#[serde(rename_all = "camelCase")]
pub enum HeaderOp {
    /// Append a field.
    Add(HeaderBuf),
    /// Replace fields of this name.
    Set(HeaderBuf),
    /// Remove fields of this name.
    Remove(DataBuf),
}

/// `Audit`.
#[derive(Deserialize, Default, Debug)]
#[serde(rename_all = "camelCase", default)]
pub struct Audit {
    /// Tags.
    pub tags: Vec<String>,
    /// Matched rules.
    pub rule_ids: Vec<String>,
    /// Reason codes.
    pub reason_codes: Vec<String>,
    /// `{"unknown": null}` or `{"value": x}`.
    pub confidence: Option<Confidence>,
}

/// `Audit.confidence`.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Confidence {
    /// Set when known.
    pub value: Option<f32>,
}

/// `HealthStatus`: `healthy` is `null`; degraded agents are still called.
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub struct Health {
    /// Set when draining.
    pub draining: Option<IgnoredAny>,
    /// Set when unhealthy.
    pub unhealthy: Option<IgnoredAny>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialize_with_the_union_member_as_a_key() {
        let e = ProxyToAgent {
            correlation_id: 7,
            event: Event::RequestBodyChunk(BodyChunk {
                chunk_index: 0,
                data: DataRef(b"a=1"),
                is_last: true,
                total_bytes: 0,
                bytes_transferred: 3,
            }),
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"correlationId":7,"requestBodyChunk":{"data":"a=1","isLast":true,"bytesTransferred":3}}"#
        );
        let c = ProxyToAgent {
            correlation_id: 9,
            event: Event::Cancel(Cancel {
                reason: CancelReason::BlockedByAgent("waf".into()),
                timestamp_ms: 0,
            }),
        };
        assert_eq!(
            serde_json::to_string(&c).unwrap(),
            r#"{"correlationId":9,"cancel":{"reason":{"blockedByAgent":"waf"}}}"#
        );
    }

    #[test]
    fn non_utf8_data_goes_as_base64_both_ways() {
        let h = Header {
            name: DataRef(b"x-bin"),
            value: DataRef(&[0xff, 0x00, 0x41]),
        };
        let s = serde_json::to_string(&h).unwrap();
        assert_eq!(s, r#"{"name":"x-bin","value":{"base64":"/wBB"}}"#);
        let back: HeaderBuf = serde_json::from_str(&s).unwrap();
        assert_eq!(back.value.0, vec![0xff, 0x00, 0x41]);
        assert!(serde_json::from_str::<DataBuf>(r#"{"base64":"!!"}"#).is_err());
    }

    #[test]
    fn responses_read_verdicts_mutations_and_audit() {
        let r: AgentToProxy = serde_json::from_str(
            r#"{"correlationId":3,"response":{"verdict":{"block":{"status":403,"body":"no"}},
                "requestHeaders":[{"set":{"name":"x-a","value":"1"}},{"remove":"x-b"}],
                "audit":{"ruleIds":["942100"],"confidence":{"value":0.5}}}}"#,
        )
        .unwrap();
        assert_eq!(r.correlation_id, 3);
        let resp = r.response.unwrap();
        let block = resp.verdict.unwrap().block.unwrap();
        assert_eq!((block.status, block.body.0.as_slice()), (403, &b"no"[..]));
        assert!(matches!(resp.request_headers[1], HeaderOp::Remove(ref n) if n.0 == b"x-b"));
        let audit = resp.audit.unwrap();
        assert_eq!(audit.rule_ids, vec!["942100".to_string()]);
        assert_eq!(audit.confidence.unwrap().value, Some(0.5));

        let allow: AgentToProxy =
            serde_json::from_str(r#"{"correlationId":4,"response":{"verdict":{"allow":null}}}"#)
                .unwrap();
        let v = allow.response.unwrap().verdict.unwrap();
        assert!(v.block.is_none() && v.redirect.is_none());

        let health: AgentToProxy =
            serde_json::from_str(r#"{"health":{"unhealthy":{"reason":"db down"}}}"#).unwrap();
        assert!(health.health.unwrap().unhealthy.is_some());
        assert!(
            serde_json::from_str::<AgentToProxy>(r#"{"response":{"needMore":"yes"}}"#).is_err()
        );
    }
}
