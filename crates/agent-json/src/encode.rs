//! Cap'n Proto → JSON, driven by the schema through capnp's reflection.
//!
//! Writes straight into the caller's buffer; allocates only to sort fields when the schema's
//! field list is not already in code order (never, for `schema/turnstile.capnp`).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use capnp::dynamic_struct;
use capnp::dynamic_value::Reader as Value;
use capnp::schema::{Field, StructSchema};
use capnp::schema_capnp::{field, node, value};
use serde::Serialize;

use crate::error::JsonError;
use crate::limits::{JSON_BYTES_MAX, JSON_DEPTH_MAX};
use crate::names::{field_name, struct_name};

/// Appends the JSON object of `root` to `out`; on error `out` is left as it was.
pub(crate) fn write_root(
    root: dynamic_struct::Reader<'_>,
    out: &mut Vec<u8>,
) -> Result<(), JsonError> {
    let start = out.len();
    let mut enc = Encoder { out, start };
    let r = enc.write_struct(root, 1).and_then(|_| enc.check_size());
    if r.is_err() {
        out.truncate(start);
    }
    r
}

struct Encoder<'o> {
    out: &'o mut Vec<u8>,
    /// Where this message's JSON starts in `out`.
    start: usize,
}

/// The struct and field a value belongs to, for error messages.
#[derive(Clone, Copy)]
struct At {
    schema: StructSchema,
    field: Field,
}

impl At {
    fn names(self) -> (String, String) {
        (struct_name(self.schema), field_name(self.field).to_owned())
    }
}

impl Encoder<'_> {
    fn check_size(&self) -> Result<(), JsonError> {
        let len = self.out.len() - self.start;
        if len > JSON_BYTES_MAX {
            return Err(JsonError::TooLarge {
                len,
                max: JSON_BYTES_MAX,
            });
        }
        Ok(())
    }

    fn check_depth(depth: usize) -> Result<(), JsonError> {
        if depth > JSON_DEPTH_MAX {
            return Err(JsonError::TooDeep {
                max: JSON_DEPTH_MAX,
            });
        }
        Ok(())
    }

    /// Serializes a scalar or string with serde_json (its escaping, its shortest float form).
    fn push<T: Serialize + ?Sized>(&mut self, v: &T) -> Result<(), JsonError> {
        // Writing to a Vec cannot fail; the error path exists only because the API has one.
        serde_json::to_writer(&mut *self.out, v).map_err(JsonError::Syntax)
    }

    /// Writes `s` as an object at nesting `depth`. Returns whether it wrote any key.
    fn write_struct(
        &mut self,
        s: dynamic_struct::Reader<'_>,
        depth: usize,
    ) -> Result<bool, JsonError> {
        Self::check_depth(depth)?;
        let schema = s.get_schema();
        let node::Struct(st) = schema.get_proto().which()? else {
            return Err(capnp::Error::failed(
                "reflection gave a struct reader a non-struct schema".into(),
            )
            .into());
        };
        let active = if st.get_discriminant_count() > 0 {
            match s.which()? {
                Some(f) => Some(f.get_index()),
                None => {
                    return Err(JsonError::UnknownUnionMember {
                        in_struct: struct_name(schema),
                    });
                }
            }
        } else {
            None
        };
        let fields = schema.get_fields()?;
        let n = fields.len();
        let in_code_order = (0..n).all(|i| fields.get(i).get_proto().get_code_order() == i);
        let sorted: Vec<Field>;
        let order: &mut dyn Iterator<Item = Field> = if in_code_order {
            &mut fields.iter()
        } else {
            let mut v: Vec<Field> = fields.iter().collect();
            v.sort_by_key(|f| f.get_proto().get_code_order());
            sorted = v;
            &mut sorted.iter().copied()
        };

        self.out.push(b'{');
        let mut wrote = false;
        for field in order {
            let proto = field.get_proto();
            let in_union = proto.get_discriminant_value() != field::NO_DISCRIMINANT;
            if in_union && active != Some(field.get_index()) {
                continue;
            }
            let at = At { schema, field };
            let before = self.out.len();
            match proto.which()? {
                field::Group(_) => {
                    self.key(wrote, field)?;
                    let Value::Struct(group) = s.get(field)? else {
                        return Err(capnp::Error::failed(
                            "a group did not read as a struct".into(),
                        )
                        .into());
                    };
                    let any = self.write_struct(group, depth + 1)?;
                    if !any && !in_union {
                        // A group whose fields are all defaults is a default too.
                        self.out.truncate(before);
                        continue;
                    }
                }
                field::Slot(slot) => {
                    let value = s.get(field)?;
                    if !in_union && is_default(&s, field, slot, value)? {
                        continue;
                    }
                    self.key(wrote, field)?;
                    self.write_value(value, depth, at)?;
                }
            }
            wrote = true;
            self.check_size()?;
        }
        self.out.push(b'}');
        Ok(wrote)
    }

    fn key(&mut self, comma: bool, field: Field) -> Result<(), JsonError> {
        if comma {
            self.out.push(b',');
        }
        self.push(field_name(field))?;
        self.out.push(b':');
        Ok(())
    }

    /// Writes one value that sits inside a container at nesting `depth`.
    fn write_value(&mut self, v: Value<'_>, depth: usize, at: At) -> Result<(), JsonError> {
        match v {
            Value::Void => self.out.extend_from_slice(b"null"),
            Value::Bool(b) => self
                .out
                .extend_from_slice(if b { b"true" } else { b"false" }),
            Value::Int8(x) => self.push(&x)?,
            Value::Int16(x) => self.push(&x)?,
            Value::Int32(x) => self.push(&x)?,
            Value::Int64(x) => self.push(&x)?,
            Value::UInt8(x) => self.push(&x)?,
            Value::UInt16(x) => self.push(&x)?,
            Value::UInt32(x) => self.push(&x)?,
            Value::UInt64(x) => self.push(&x)?,
            Value::Float32(x) => {
                finite(f64::from(x), at)?;
                self.push(&x)?;
            }
            Value::Float64(x) => {
                finite(x, at)?;
                self.push(&x)?;
            }
            Value::Enum(e) => match e.get_enumerant()? {
                Some(en) => {
                    let name = en
                        .get_proto()
                        .get_name()?
                        .to_str()
                        .map_err(capnp::Error::from)?;
                    self.push(name)?;
                }
                None => {
                    let (in_struct, field) = at.names();
                    return Err(JsonError::UnknownEnumValue {
                        in_struct,
                        field,
                        value: e.get_value(),
                    });
                }
            },
            Value::Text(t) => {
                let Ok(text) = t.to_str() else {
                    let (in_struct, field) = at.names();
                    return Err(JsonError::TextNotUtf8 { in_struct, field });
                };
                self.push(text)?;
            }
            Value::Data(d) => match std::str::from_utf8(d) {
                Ok(text) => self.push(text)?,
                Err(_) => {
                    Self::check_depth(depth + 1)?;
                    self.out.extend_from_slice(b"{\"base64\":\"");
                    let len = self.out.len();
                    let encoded = base64::encoded_len(d.len(), true).unwrap_or(usize::MAX);
                    if encoded > JSON_BYTES_MAX {
                        return Err(JsonError::TooLarge {
                            len: encoded,
                            max: JSON_BYTES_MAX,
                        });
                    }
                    self.out.resize(len + encoded, 0);
                    let n = STANDARD
                        .encode_slice(d, &mut self.out[len..])
                        .map_err(|e| capnp::Error::failed(format!("base64: {e}")))?;
                    self.out.truncate(len + n);
                    self.out.extend_from_slice(b"\"}");
                }
            },
            Value::Struct(s) => {
                self.write_struct(s, depth + 1)?;
            }
            Value::List(l) => {
                Self::check_depth(depth + 1)?;
                self.out.push(b'[');
                for (i, item) in l.iter().enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.write_value(item?, depth + 1, at)?;
                    self.check_size()?;
                }
                self.out.push(b']');
            }
            Value::AnyPointer(_) => return Err(unsupported(at, "AnyPointer")),
            Value::Capability(_) => return Err(unsupported(at, "capability")),
        }
        Ok(())
    }
}

fn finite(x: f64, at: At) -> Result<(), JsonError> {
    if x.is_finite() {
        return Ok(());
    }
    let (in_struct, field) = at.names();
    Err(JsonError::NonFinite {
        in_struct,
        field,
        value: x,
    })
}

fn unsupported(at: At, what: &'static str) -> JsonError {
    let (in_struct, field) = at.names();
    JsonError::Unsupported {
        in_struct,
        field,
        what,
    }
}

/// Whether a non-union slot field holds its default, so that it can be left out: scalars and
/// enums equal to the schema's default, unset pointers, and empty text, data and lists (when
/// the schema's default for them is empty too).
fn is_default(
    s: &dynamic_struct::Reader<'_>,
    field: Field,
    slot: field::slot::Reader<'_>,
    v: Value<'_>,
) -> Result<bool, JsonError> {
    let d = slot.get_default_value()?.which()?;
    Ok(match (v, d) {
        (Value::Void, _) => true,
        (Value::Bool(x), value::Bool(y)) => x == y,
        (Value::Int8(x), value::Int8(y)) => x == y,
        (Value::Int16(x), value::Int16(y)) => x == y,
        (Value::Int32(x), value::Int32(y)) => x == y,
        (Value::Int64(x), value::Int64(y)) => x == y,
        (Value::UInt8(x), value::Uint8(y)) => x == y,
        (Value::UInt16(x), value::Uint16(y)) => x == y,
        (Value::UInt32(x), value::Uint32(y)) => x == y,
        (Value::UInt64(x), value::Uint64(y)) => x == y,
        // Bits, not values: -0.0 is not 0.0 and a NaN default is still a default.
        (Value::Float32(x), value::Float32(y)) => x.to_bits() == y.to_bits(),
        (Value::Float64(x), value::Float64(y)) => x.to_bits() == y.to_bits(),
        (Value::Enum(e), value::Enum(y)) => e.get_value() == y,
        (Value::Text(t), d) => !s.has(field)? || (t.is_empty() && default_is_empty(d)),
        (Value::Data(x), d) => !s.has(field)? || (x.is_empty() && default_is_empty(d)),
        (Value::List(l), d) => !s.has(field)? || (l.is_empty() && default_is_empty(d)),
        // Unset pointers (structs, and AnyPointer/capabilities, which are refused when set).
        (Value::Struct(_) | Value::AnyPointer(_) | Value::Capability(_), _) => !s.has(field)?,
        // A default of another type than the field: never produced by capnpc; keep the value.
        _ => false,
    })
}

/// Whether a pointer field's schema default is empty (or absent).
fn default_is_empty(d: value::WhichReader<'_>) -> bool {
    match d {
        value::Text(t) => t.is_ok_and(|t| t.is_empty()),
        value::Data(b) => b.is_ok_and(|b| b.is_empty()),
        value::List(l) => l.is_null(),
        _ => true,
    }
}
