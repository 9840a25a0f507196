//! The agent protocol's JSON encoding: a schema-driven converter between Cap'n Proto messages
//! and JSON text.
//!
//! Agent Protocol 2.0 keeps JSON as a debugging mode, negotiated at the handshake
//! (`HandshakeRequest.encodings`, `AgentCapabilities.encoding`); the baseline stack uses it. On a
//! JSON connection every message after the handshake travels as JSON text in frames of kind 5
//! (`ProxyToAgent`) and 6 (`AgentToProxy`). This crate owns the conversion in both directions,
//! driven by capnp's runtime reflection (`capnp::dynamic_struct`, `capnp::introspect`) over the
//! schema generated in `turnstile-wire`, so every struct of the schema is covered and a schema
//! change needs no code here.
//!
//! It does no I/O, keeps no state, and must never panic on any input: a problem with the JSON or
//! the Cap'n Proto bytes is a [`JsonError`]. It is not on the Cap'n Proto hot path; a JSON
//! connection pays for the conversion and nothing else does.
//!
//! Data flow: JSON text → [`from_json`] (length checked against [`limits::JSON_BYTES_MAX`], depth
//! bounded while parsing, each object checked against its struct, each allocation charged
//! against [`limits::MESSAGE_WORDS_MAX`]) → a Cap'n Proto builder. The other way: a reader →
//! [`to_json`] → JSON text appended to the caller's buffer. The `*_to_json` / `*_from_json`
//! helpers do the same for the exact payload bytes of a kind 3 or 4 frame.
//!
//! # The mapping
//!
//! This is the contract other implementations (the baseline's serde structs) are written
//! against; `docs/protocol.md` section 12.1 repeats it.
//!
//! | Schema | JSON |
//! |---|---|
//! | struct | object; keys are the field names as written in the schema (camelCase) |
//! | field equal to its default | left out by the encoder; a missing key decodes as the default |
//! | unnamed union | the active member is one key of the struct's own object, always written (even when it is the first, default member) |
//! | named union, group | an object under the group's name, holding its fields / active member |
//! | `Void` | `null` |
//! | `Bool` | `true` / `false` |
//! | integers, 64-bit included | numbers, exact; the decoder takes only integers within the type's range (no `1.0`, no `1e3`) |
//! | `Float32`, `Float64` | numbers, shortest form that reads back exactly; NaN and infinities are an encode error |
//! | enum | the enumerant's name as a string, e.g. `"requestHeaders"`; an unknown name is an error |
//! | `Text` | string |
//! | `Data` | a string when the bytes are UTF-8, otherwise `{"base64": "<standard base64, padded>"}`; the decoder takes both |
//! | `List(T)` | array of `T`'s mapping |
//! | `AnyPointer`, capabilities | error (the agent schema has none) |
//!
//! Defaults: a scalar or enum equal to the schema's default (`0`, `false`, the first enumerant,
//! or the `= value` of the schema), an unset struct pointer, and empty text, data and lists are
//! left out. A set struct is written even when all its fields are defaults (`{}`), and a group
//! whose fields are all left out is left out too. Keys come in the schema's code order.
//!
//! The decoder refuses, with an error naming the key and the struct: an unknown key, a key given
//! twice, two members of one union, a value of the wrong JSON type, a number out of range, bad
//! base64, an unknown enumerant name, JSON nested deeper than [`limits::JSON_DEPTH_MAX`], and
//! anything that is not exactly one JSON value.
//!
//! ```
//! use turnstile_wire::turnstile_capnp::agent_to_proxy;
//! use turnstile_wire::{FrameWriter, limits::FRAME_HEADER_BYTES};
//!
//! let mut scratch = vec![0u8; 4096];
//! let mut frame = Vec::new();
//! FrameWriter::new(&mut scratch).write::<agent_to_proxy::Owned, _>(&mut frame, |mut m| {
//!     m.set_correlation_id(7);
//!     m.init_response().init_verdict().set_allow(());
//!     Ok(())
//! })?;
//! let mut json = Vec::new();
//! turnstile_agent_json::agent_to_proxy_to_json(&frame[FRAME_HEADER_BYTES..], &mut json)?;
//! assert_eq!(json, br#"{"correlationId":7,"response":{"verdict":{"allow":null}}}"#);
//!
//! let mut payload = Vec::new();
//! turnstile_agent_json::agent_to_proxy_from_json(&json, &mut payload)?;
//! assert_eq!(payload, &frame[FRAME_HEADER_BYTES..]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod decode;
mod encode;
mod error;
pub mod limits;
mod names;
mod tree;

use capnp::{dynamic_struct, dynamic_value, message, serialize};
use turnstile_wire::limits::FRAME_BYTES_MAX;
use turnstile_wire::turnstile_capnp::{agent_to_proxy, proxy_to_agent};
use turnstile_wire::{Message, Root};

pub use error::JsonError;

/// Appends the JSON text of `root` (a struct of any schema) to `out`.
///
/// `out` is appended to, so a caller can reuse one buffer; on error it is left as it was. The
/// text is at most [`limits::JSON_BYTES_MAX`] bytes. Reading `root` is bounded by the limits of
/// the message it comes from (for frames, `turnstile_wire::limits::reader_options`).
pub fn to_json(root: dynamic_struct::Reader<'_>, out: &mut Vec<u8>) -> Result<(), JsonError> {
    encode::write_root(root, out)
}

/// Fills `root`, a freshly initialised struct of any schema, from the JSON text `json`.
///
/// Fields whose keys are missing are left as they are (the defaults, in a fresh root). At most
/// [`limits::MESSAGE_WORDS_MAX`] words are allocated in the message. On error `root` may be
/// partly filled and should be discarded.
pub fn from_json(json: &[u8], root: dynamic_struct::Builder<'_>) -> Result<(), JsonError> {
    decode::read_root(json, root)
}

/// The payload of a `ProxyToAgent` frame (kind 3: a Cap'n Proto message, parsed with the wire
/// format's limits) as JSON text (the payload of a kind 5 frame), appended to `out`.
pub fn proxy_to_agent_to_json(payload: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError> {
    payload_to_json::<proxy_to_agent::Owned>(payload, out)
}

/// The JSON text of a `ProxyToAgent` (the payload of a kind 5 frame) as the Cap'n Proto payload
/// of a kind 3 frame, appended to `out`. The result parses with `turnstile_wire::Message::parse`.
pub fn proxy_to_agent_from_json(json: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError> {
    payload_from_json::<proxy_to_agent::Owned>(json, out)
}

/// The payload of an `AgentToProxy` frame (kind 4) as JSON text (kind 6), appended to `out`.
pub fn agent_to_proxy_to_json(payload: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError> {
    payload_to_json::<agent_to_proxy::Owned>(payload, out)
}

/// The JSON text of an `AgentToProxy` (kind 6) as the Cap'n Proto payload of a kind 4 frame,
/// appended to `out`.
pub fn agent_to_proxy_from_json(json: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError> {
    payload_from_json::<agent_to_proxy::Owned>(json, out)
}

fn payload_to_json<R>(payload: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError>
where
    R: Root,
    for<'a> R::Reader<'a>: Into<dynamic_value::Reader<'a>>,
{
    let msg = Message::parse(R::KIND, payload)?;
    let dynamic_value::Reader::Struct(root) = msg.root::<R>()?.into() else {
        return Err(capnp::Error::failed("a root did not read as a struct".into()).into());
    };
    to_json(root, out)
}

fn payload_from_json<R>(json: &[u8], out: &mut Vec<u8>) -> Result<(), JsonError>
where
    R: Root,
    for<'a> R::Builder<'a>: Into<dynamic_value::Builder<'a>>,
{
    let mut message = message::Builder::new_default();
    let dynamic_value::Builder::Struct(root) = message.init_root::<R::Builder<'_>>().into() else {
        return Err(capnp::Error::failed("a root did not build as a struct".into()).into());
    };
    from_json(json, root)?;
    let bytes = serialize::compute_serialized_size_in_words(&message) as u64 * 8;
    if bytes > u64::from(FRAME_BYTES_MAX) {
        return Err(JsonError::MessageTooLarge {
            max: limits::MESSAGE_WORDS_MAX,
        });
    }
    serialize::write_message(&mut *out, &message)?;
    Ok(())
}
