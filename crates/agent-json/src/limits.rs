//! Every bound of the JSON encoding, named once. Units come last in the name.

use turnstile_wire::limits::FRAME_BYTES_MAX;

/// Largest JSON text the decoder accepts and the encoder produces: one frame's payload, the same
/// limit as every other frame ([`turnstile_wire::limits::FRAME_BYTES_MAX`]).
///
/// Checked against the input's length before parsing, and against the output's length after
/// every value written.
pub const JSON_BYTES_MAX: usize = FRAME_BYTES_MAX as usize;

/// Deepest nesting of JSON arrays and objects, the outermost object counting as 1.
///
/// Checked while parsing, before the nested value is allocated, and while encoding. The schema's
/// deepest agent message (`AgentToProxy` → `response` → `verdict` → `block` → `headers` → one
/// `Header` → `{"base64":…}`) nests 7 levels.
pub const JSON_DEPTH_MAX: usize = 32;

/// Most 8-byte words of Cap'n Proto the decoder builds from one JSON text: a frame's worth.
///
/// Every struct, list, text and data value is charged before it is allocated, so a small JSON
/// text cannot make a large message (`[{},{},…]` would otherwise cost a whole struct per three
/// bytes of input).
pub const MESSAGE_WORDS_MAX: u64 = FRAME_BYTES_MAX as u64 / 8;

// serde_json refuses nesting past 128 levels on its own; ours must be the bound that applies.
const _: () = assert!(JSON_DEPTH_MAX >= 8 && JSON_DEPTH_MAX < 128);
const _: () = assert!(MESSAGE_WORDS_MAX * 8 <= FRAME_BYTES_MAX as u64);
