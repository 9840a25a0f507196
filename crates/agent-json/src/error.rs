//! The one error type of the JSON encoding.

use turnstile_wire::WireError;

/// Why a message could not be converted, in either direction.
///
/// Every variant is a statement about the input (a peer's JSON or Cap'n Proto bytes, or the
/// caller's message); none of them is a bug, and no input panics. `in_struct` names the schema
/// struct (`HttpRequest`, or `HealthStatus.state` for a group) and `field` the field as written
/// in the schema.
#[derive(Debug, thiserror::Error)]
pub enum JsonError {
    /// The JSON text (input or output) exceeds [`crate::limits::JSON_BYTES_MAX`].
    #[error("JSON text too large: {len} bytes, limit {max}")]
    TooLarge {
        /// Bytes of JSON (as far as written, for the output).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The Cap'n Proto message the JSON describes exceeds [`crate::limits::MESSAGE_WORDS_MAX`].
    #[error("message too large: more than {max} words of Cap'n Proto")]
    MessageTooLarge {
        /// The limit, in 8-byte words.
        max: u64,
    },
    /// Arrays and objects nest deeper than [`crate::limits::JSON_DEPTH_MAX`].
    #[error("JSON nested deeper than {max} levels")]
    TooDeep {
        /// The limit.
        max: usize,
    },
    /// Not JSON: a syntax error, truncated text, invalid UTF-8, trailing characters.
    #[error("invalid JSON: {0}")]
    Syntax(#[source] serde_json::Error),
    /// An object key that names no field of the struct.
    #[error("unknown key `{key}` in {in_struct}")]
    UnknownKey {
        /// The key as written.
        key: String,
        /// The struct.
        in_struct: String,
    },
    /// The same key twice in one object.
    #[error("key `{key}` appears twice in {in_struct}")]
    DuplicateKey {
        /// The key.
        key: String,
        /// The struct.
        in_struct: String,
    },
    /// Two keys of one object name members of the same union.
    #[error("{in_struct} has two members of its union: `{first}` and `{second}`")]
    TwoUnionMembers {
        /// The struct.
        in_struct: String,
        /// The first member named.
        first: String,
        /// The second member named.
        second: String,
    },
    /// A string that names no enumerant of the field's enum.
    #[error("{in_struct}.{field}: `{name}` is not a value of {in_enum}")]
    UnknownEnumName {
        /// The struct.
        in_struct: String,
        /// The field.
        field: String,
        /// The string given.
        name: String,
        /// The enum.
        in_enum: String,
    },
    /// An enum value (in Cap'n Proto) this schema does not name, from a newer peer or garbage.
    #[error("{in_struct}.{field}: enum value {value} is not in the schema")]
    UnknownEnumValue {
        /// The struct.
        in_struct: String,
        /// The field.
        field: String,
        /// The number found.
        value: u16,
    },
    /// A union discriminant (in Cap'n Proto) this schema does not know.
    #[error("{in_struct}: the active union member is not in the schema")]
    UnknownUnionMember {
        /// The struct.
        in_struct: String,
    },
    /// A JSON value of the wrong type for its field.
    #[error("{in_struct}.{field}: expected {expected}, got {got}")]
    WrongType {
        /// The struct.
        in_struct: String,
        /// The field (`(root)` for the message itself).
        field: String,
        /// What the field's type takes.
        expected: &'static str,
        /// What the JSON held.
        got: &'static str,
    },
    /// A number that does not fit the field's type.
    #[error("{in_struct}.{field}: {value} does not fit {ty}")]
    OutOfRange {
        /// The struct.
        in_struct: String,
        /// The field.
        field: String,
        /// The number as written.
        value: String,
        /// The field's type.
        ty: &'static str,
    },
    /// A `{"base64": …}` data value that is not standard, padded base64.
    #[error("{in_struct}.{field}: bad base64: {reason}")]
    BadBase64 {
        /// The struct.
        in_struct: String,
        /// The field.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A Cap'n Proto `Text` value that is not UTF-8: JSON strings cannot carry it.
    #[error("{in_struct}.{field}: text is not valid UTF-8")]
    TextNotUtf8 {
        /// The struct.
        in_struct: String,
        /// The field.
        field: String,
    },
    /// A NaN or infinite float: JSON numbers cannot carry it.
    #[error("{in_struct}.{field}: {value} has no JSON number")]
    NonFinite {
        /// The struct.
        in_struct: String,
        /// The field.
        field: String,
        /// The value.
        value: f64,
    },
    /// An `AnyPointer`, capability or interface field: no JSON mapping exists.
    #[error("{in_struct}.{field}: {what} fields have no JSON encoding")]
    Unsupported {
        /// The struct.
        in_struct: String,
        /// The field.
        field: String,
        /// `AnyPointer` or `capability`.
        what: &'static str,
    },
    /// The Cap'n Proto message could not be read or built (bad pointers, limits).
    #[error("Cap'n Proto: {0}")]
    Capnp(#[from] capnp::Error),
    /// The Cap'n Proto payload is not a valid frame payload.
    #[error("frame payload: {0}")]
    Wire(#[from] WireError),
}

impl From<capnp::NotInSchema> for JsonError {
    fn from(e: capnp::NotInSchema) -> Self {
        JsonError::Capnp(e.into())
    }
}
