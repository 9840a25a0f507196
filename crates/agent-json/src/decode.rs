//! JSON → Cap'n Proto, driven by the schema through capnp's reflection.
//!
//! The JSON text is parsed into a [`Json`] tree first (depth bounded while parsing), then each
//! object is checked against its struct (unknown keys, duplicate keys, two union members) before
//! any of it is written, and every allocation in the message is charged against
//! [`MESSAGE_WORDS_MAX`] before it is made.

use std::borrow::Cow;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use capnp::dynamic_value::{self, Builder as Built, Reader as Value};
use capnp::introspect::{Type, TypeVariant};
use capnp::schema::{EnumSchema, Field, StructSchema};
use capnp::schema_capnp::{field, node};
use capnp::{dynamic_list, dynamic_struct};

use crate::error::JsonError;
use crate::limits::MESSAGE_WORDS_MAX;
use crate::names::{field_name, struct_name};
use crate::tree::{self, Json};

/// Parses `json` and fills `root` with it.
pub(crate) fn read_root(json: &[u8], root: dynamic_struct::Builder<'_>) -> Result<(), JsonError> {
    let tree = tree::parse(json)?;
    let Json::Object(entries) = &tree else {
        return Err(JsonError::WrongType {
            in_struct: struct_name(root.get_schema()),
            field: "(root)".to_owned(),
            expected: "an object",
            got: tree.kind(),
        });
    };
    let mut dec = Decoder {
        words_left: MESSAGE_WORDS_MAX,
    };
    dec.fill_struct(root, entries)
}

struct Decoder {
    /// Words of message the rest of the input may still allocate.
    words_left: u64,
}

/// The struct and field a value is for, for error messages.
#[derive(Clone, Copy)]
struct At {
    schema: StructSchema,
    field: Field,
}

impl At {
    fn in_struct(self) -> String {
        struct_name(self.schema)
    }

    fn field(self) -> String {
        field_name(self.field).to_owned()
    }

    fn wrong(self, expected: &'static str, got: &Json) -> JsonError {
        JsonError::WrongType {
            in_struct: self.in_struct(),
            field: self.field(),
            expected,
            got: got.kind(),
        }
    }

    fn out_of_range(self, n: &serde_json::Number, ty: &'static str) -> JsonError {
        JsonError::OutOfRange {
            in_struct: self.in_struct(),
            field: self.field(),
            value: n.to_string(),
            ty,
        }
    }
}

fn internal(what: &str) -> JsonError {
    JsonError::Capnp(capnp::Error::failed(format!(
        "reflection returned an unexpected value: {what}"
    )))
}

/// A list or text length for a Cap'n Proto builder. Lengths come from a JSON text of at most
/// [`crate::limits::JSON_BYTES_MAX`] bytes and are charged against the budget first, so they fit.
fn len32(n: usize) -> Result<u32, JsonError> {
    u32::try_from(n).map_err(|_| JsonError::MessageTooLarge {
        max: MESSAGE_WORDS_MAX,
    })
}

/// Data and pointer words of one struct of this schema.
fn struct_words(schema: StructSchema) -> Result<u64, JsonError> {
    let node::Struct(st) = schema.get_proto().which()? else {
        return Err(internal("a struct type with a non-struct schema"));
    };
    Ok(u64::from(st.get_data_word_count()) + u64::from(st.get_pointer_count()))
}

/// Words a list of `n` elements of `elem` takes (contents of pointer elements not included).
fn list_words(elem: Type, n: u64) -> Result<u64, JsonError> {
    let bits: u64 = match elem.which() {
        TypeVariant::Void => 0,
        TypeVariant::Bool => 1,
        TypeVariant::Int8 | TypeVariant::UInt8 => 8,
        TypeVariant::Int16 | TypeVariant::UInt16 | TypeVariant::Enum(_) => 16,
        TypeVariant::Int32 | TypeVariant::UInt32 | TypeVariant::Float32 => 32,
        TypeVariant::Struct(s) => {
            // Composite list: a tag word, then whole structs.
            return Ok(1 + n * struct_words(s.into())?);
        }
        _ => 64,
    };
    Ok((n * bits).div_ceil(64))
}

impl Decoder {
    /// Takes `words` from the budget, or fails before anything is allocated.
    fn charge(&mut self, words: u64) -> Result<(), JsonError> {
        match self.words_left.checked_sub(words) {
            Some(left) => {
                self.words_left = left;
                Ok(())
            }
            None => Err(JsonError::MessageTooLarge {
                max: MESSAGE_WORDS_MAX,
            }),
        }
    }

    /// Fills a struct (already allocated and charged) from an object's entries.
    fn fill_struct(
        &mut self,
        mut b: dynamic_struct::Builder<'_>,
        entries: &[(String, Json)],
    ) -> Result<(), JsonError> {
        let schema = b.get_schema();
        // Check every key before writing anything: the first unknown key, repeated key or
        // second union member is the error.
        let mut union_member: Option<&str> = None;
        for (i, (key, _)) in entries.iter().enumerate() {
            let Some(field) = schema.find_field_by_name(key)? else {
                return Err(JsonError::UnknownKey {
                    key: key.clone(),
                    in_struct: struct_name(schema),
                });
            };
            // Keys before this one are distinct fields, so this is at most O(fields²).
            if entries[..i].iter().any(|(k, _)| k == key) {
                return Err(JsonError::DuplicateKey {
                    key: key.clone(),
                    in_struct: struct_name(schema),
                });
            }
            if field.get_proto().get_discriminant_value() != field::NO_DISCRIMINANT {
                if let Some(first) = union_member {
                    return Err(JsonError::TwoUnionMembers {
                        in_struct: struct_name(schema),
                        first: first.to_owned(),
                        second: key.clone(),
                    });
                }
                union_member = Some(key);
            }
        }
        for (key, value) in entries {
            let field = schema.get_field_by_name(key)?;
            self.set_field(b.reborrow(), field, value)?;
        }
        Ok(())
    }

    fn set_field(
        &mut self,
        mut b: dynamic_struct::Builder<'_>,
        field: Field,
        v: &Json,
    ) -> Result<(), JsonError> {
        let at = At {
            schema: b.get_schema(),
            field,
        };
        if let field::Group(_) = field.get_proto().which()? {
            let Json::Object(entries) = v else {
                return Err(at.wrong("an object", v));
            };
            // `init` selects the group if it is a union member and clears it.
            let Built::Struct(group) = b.init(field)? else {
                return Err(internal("a group did not build as a struct"));
            };
            return self.fill_struct(group, entries);
        }
        let ty = field.get_type();
        match ty.which() {
            TypeVariant::Struct(s) => {
                let Json::Object(entries) = v else {
                    return Err(at.wrong("an object", v));
                };
                self.charge(struct_words(s.into())?)?;
                let Built::Struct(child) = b.init(field)? else {
                    return Err(internal("a struct field did not build as a struct"));
                };
                self.fill_struct(child, entries)
            }
            TypeVariant::List(elem) => {
                let Json::Array(items) = v else {
                    return Err(at.wrong("an array", v));
                };
                self.charge(list_words(elem, items.len() as u64)?)?;
                let Built::List(list) = b.initn(field, len32(items.len())?)? else {
                    return Err(internal("a list field did not build as a list"));
                };
                self.fill_list(list, items, at)
            }
            TypeVariant::Text => {
                let Json::String(s) = v else {
                    return Err(at.wrong("a string", v));
                };
                self.charge_text(s.len())?;
                Ok(b.set(field, Value::Text(s.as_str().into()))?)
            }
            TypeVariant::Data => {
                let bytes = data_bytes(v, at)?;
                self.charge_data(bytes.len())?;
                Ok(b.set(field, Value::Data(&bytes))?)
            }
            other => Ok(b.set(field, scalar(other, v, at)?)?),
        }
    }

    fn charge_text(&mut self, len: usize) -> Result<(), JsonError> {
        // Text carries a NUL terminator.
        self.charge((len as u64 + 1).div_ceil(8))
    }

    fn charge_data(&mut self, len: usize) -> Result<(), JsonError> {
        self.charge((len as u64).div_ceil(8))
    }

    /// Fills a list (already allocated and charged) from an array's items.
    fn fill_list(
        &mut self,
        mut list: dynamic_list::Builder<'_>,
        items: &[Json],
        at: At,
    ) -> Result<(), JsonError> {
        let elem = list.element_type();
        for (i, item) in items.iter().enumerate() {
            let i = len32(i)?;
            match elem.which() {
                TypeVariant::Struct(_) => {
                    let Json::Object(entries) = item else {
                        return Err(at.wrong("an array of objects", item));
                    };
                    // Charged with the list.
                    let Built::Struct(s) = list.reborrow().get(i)? else {
                        return Err(internal("a struct list element did not build as a struct"));
                    };
                    self.fill_struct(s, entries)?;
                }
                TypeVariant::List(inner) => {
                    let Json::Array(inner_items) = item else {
                        return Err(at.wrong("an array of arrays", item));
                    };
                    self.charge(list_words(inner, inner_items.len() as u64)?)?;
                    let Built::List(inner_list) =
                        list.reborrow().init(i, len32(inner_items.len())?)?
                    else {
                        return Err(internal("a list list element did not build as a list"));
                    };
                    self.fill_list(inner_list, inner_items, at)?;
                }
                TypeVariant::Text => {
                    let Json::String(s) = item else {
                        return Err(at.wrong("an array of strings", item));
                    };
                    self.charge_text(s.len())?;
                    list.set(i, Value::Text(s.as_str().into()))?;
                }
                TypeVariant::Data => {
                    let bytes = data_bytes(item, at)?;
                    self.charge_data(bytes.len())?;
                    list.set(i, Value::Data(&bytes))?;
                }
                other => list.set(i, scalar(other, item, at)?)?,
            }
        }
        Ok(())
    }
}

/// A `Data` value: a string's UTF-8 bytes, or `{"base64": "…"}` decoded.
fn data_bytes(v: &Json, at: At) -> Result<Cow<'_, [u8]>, JsonError> {
    match v {
        Json::String(s) => Ok(Cow::Borrowed(s.as_bytes())),
        Json::Object(entries) => match entries.as_slice() {
            [(key, Json::String(b64))] if key == "base64" => STANDARD
                .decode(b64)
                .map(Cow::Owned)
                .map_err(|e| JsonError::BadBase64 {
                    in_struct: at.in_struct(),
                    field: at.field(),
                    reason: e.to_string(),
                }),
            _ => Err(at.wrong("a string or {\"base64\": string}", v)),
        },
        _ => Err(at.wrong("a string or {\"base64\": string}", v)),
    }
}

/// A scalar or enum value of type `ty` from JSON.
fn scalar(ty: TypeVariant, v: &Json, at: At) -> Result<Value<'static>, JsonError> {
    macro_rules! int {
        ($variant:ident, $t:ty, $name:literal) => {{
            let Json::Number(n) = v else {
                return Err(at.wrong(concat!("an integer (", $name, ")"), v));
            };
            let x = if let Some(u) = n.as_u64() {
                <$t>::try_from(u).ok()
            } else if let Some(i) = n.as_i64() {
                <$t>::try_from(i).ok()
            } else {
                return Err(at.wrong(concat!("an integer (", $name, ")"), v));
            };
            match x {
                Some(x) => Value::$variant(x),
                None => return Err(at.out_of_range(n, $name)),
            }
        }};
    }
    Ok(match ty {
        TypeVariant::Void => match v {
            Json::Null => Value::Void,
            _ => return Err(at.wrong("null", v)),
        },
        TypeVariant::Bool => match v {
            Json::Bool(b) => Value::Bool(*b),
            _ => return Err(at.wrong("a boolean", v)),
        },
        TypeVariant::Int8 => int!(Int8, i8, "Int8"),
        TypeVariant::Int16 => int!(Int16, i16, "Int16"),
        TypeVariant::Int32 => int!(Int32, i32, "Int32"),
        TypeVariant::Int64 => int!(Int64, i64, "Int64"),
        TypeVariant::UInt8 => int!(UInt8, u8, "UInt8"),
        TypeVariant::UInt16 => int!(UInt16, u16, "UInt16"),
        TypeVariant::UInt32 => int!(UInt32, u32, "UInt32"),
        TypeVariant::UInt64 => int!(UInt64, u64, "UInt64"),
        TypeVariant::Float32 => {
            let Json::Number(n) = v else {
                return Err(at.wrong("a number", v));
            };
            let x = n.as_f64().ok_or_else(|| at.wrong("a number", v))?;
            if x.abs() > f64::from(f32::MAX) {
                return Err(at.out_of_range(n, "Float32"));
            }
            // In range; rounds to the nearest f32 (exact for the encoder's shortest form).
            Value::Float32(x as f32)
        }
        TypeVariant::Float64 => {
            let Json::Number(n) = v else {
                return Err(at.wrong("a number", v));
            };
            Value::Float64(n.as_f64().ok_or_else(|| at.wrong("a number", v))?)
        }
        TypeVariant::Enum(raw) => {
            let Json::String(name) = v else {
                return Err(at.wrong("a string (enumerant name)", v));
            };
            let schema = EnumSchema::from(raw);
            match enumerant(schema, name)? {
                Some(ordinal) => Value::Enum(dynamic_value::Enum::new(ordinal, schema)),
                None => {
                    return Err(JsonError::UnknownEnumName {
                        in_struct: at.in_struct(),
                        field: at.field(),
                        name: name.clone(),
                        in_enum: enum_name(schema),
                    });
                }
            }
        }
        TypeVariant::AnyPointer => return Err(unsupported(at, "AnyPointer")),
        TypeVariant::Capability => return Err(unsupported(at, "capability")),
        TypeVariant::Text | TypeVariant::Data | TypeVariant::Struct(_) | TypeVariant::List(_) => {
            return Err(internal("a pointer type where a scalar was expected"));
        }
    })
}

fn unsupported(at: At, what: &'static str) -> JsonError {
    JsonError::Unsupported {
        in_struct: at.in_struct(),
        field: at.field(),
        what,
    }
}

/// The ordinal of the enumerant called `name`.
fn enumerant(schema: EnumSchema, name: &str) -> Result<Option<u16>, JsonError> {
    for e in schema.get_enumerants()?.iter() {
        if e.get_proto().get_name()?.as_bytes() == name.as_bytes() {
            return Ok(Some(e.get_ordinal()));
        }
    }
    Ok(None)
}

fn enum_name(schema: EnumSchema) -> String {
    let name = schema
        .get_proto()
        .get_display_name()
        .ok()
        .and_then(|n| n.to_str().ok())
        .unwrap_or("?");
    name.split_once(':').map_or(name, |(_, n)| n).to_owned()
}
