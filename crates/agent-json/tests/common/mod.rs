//! Helpers shared by the tests: building payloads, and comparing two messages field by field
//! through reflection (independently of the JSON code under test).
#![allow(dead_code, clippy::unwrap_used)]

pub mod fixtures;

use capnp::dynamic_value::Reader as Value;
use capnp::schema_capnp::field;
use turnstile_wire::limits::{FRAME_HEADER_BYTES, WRITER_SCRATCH_BYTES};
use turnstile_wire::{FrameWriter, Message, Root};

/// The Cap'n Proto payload (no frame header) of a message of root `R` built by `fill`.
pub fn payload<R: Root>(fill: impl FnOnce(R::Builder<'_>) -> capnp::Result<()>) -> Vec<u8> {
    let mut scratch = vec![0u8; WRITER_SCRATCH_BYTES];
    let mut writer = FrameWriter::new(&mut scratch);
    let mut out = Vec::new();
    writer.write::<R, _>(&mut out, fill).expect("encode");
    out.split_off(FRAME_HEADER_BYTES)
}

/// Whether two payloads of root `R` hold the same values: every non-union field and the active
/// union member, recursively; null pointers read as their defaults.
pub fn same_payload<R: Root>(a: &[u8], b: &[u8]) -> Result<(), String>
where
    for<'a> R::Reader<'a>: Into<Value<'a>>,
{
    let ma = Message::parse(R::KIND, a).unwrap();
    let mb = Message::parse(R::KIND, b).unwrap();
    same(
        ma.root::<R>().unwrap().into(),
        mb.root::<R>().unwrap().into(),
        "",
    )
}

/// Field-by-field comparison; the error names the first path that differs.
pub fn same(a: Value<'_>, b: Value<'_>, path: &str) -> Result<(), String> {
    let differ = || Err(format!("{path} differs"));
    match (a, b) {
        (Value::Void, Value::Void) => Ok(()),
        (Value::Bool(x), Value::Bool(y)) if x == y => Ok(()),
        (Value::Int8(x), Value::Int8(y)) if x == y => Ok(()),
        (Value::Int16(x), Value::Int16(y)) if x == y => Ok(()),
        (Value::Int32(x), Value::Int32(y)) if x == y => Ok(()),
        (Value::Int64(x), Value::Int64(y)) if x == y => Ok(()),
        (Value::UInt8(x), Value::UInt8(y)) if x == y => Ok(()),
        (Value::UInt16(x), Value::UInt16(y)) if x == y => Ok(()),
        (Value::UInt32(x), Value::UInt32(y)) if x == y => Ok(()),
        (Value::UInt64(x), Value::UInt64(y)) if x == y => Ok(()),
        (Value::Float32(x), Value::Float32(y)) if x.to_bits() == y.to_bits() => Ok(()),
        (Value::Float64(x), Value::Float64(y)) if x.to_bits() == y.to_bits() => Ok(()),
        (Value::Enum(x), Value::Enum(y)) if x.get_value() == y.get_value() => Ok(()),
        (Value::Text(x), Value::Text(y)) if x.as_bytes() == y.as_bytes() => Ok(()),
        (Value::Data(x), Value::Data(y)) if x == y => Ok(()),
        (Value::List(x), Value::List(y)) => {
            if x.len() != y.len() {
                return Err(format!("{path}: list lengths {} and {}", x.len(), y.len()));
            }
            for i in 0..x.len() {
                same(
                    x.get(i).unwrap(),
                    y.get(i).unwrap(),
                    &format!("{path}[{i}]"),
                )?;
            }
            Ok(())
        }
        (Value::Struct(x), Value::Struct(y)) => {
            let schema = x.get_schema();
            let wa = x.which().unwrap().map(|f| f.get_index());
            let wb = y.which().unwrap().map(|f| f.get_index());
            if wa != wb {
                return Err(format!("{path}: union members {wa:?} and {wb:?}"));
            }
            for f in schema.get_fields().unwrap() {
                let proto = f.get_proto();
                if proto.get_discriminant_value() != field::NO_DISCRIMINANT
                    && Some(f.get_index()) != wa
                {
                    continue;
                }
                let name = proto.get_name().unwrap().to_str().unwrap();
                same(
                    x.get(f).unwrap(),
                    y.get(f).unwrap(),
                    &format!("{path}.{name}"),
                )?;
            }
            Ok(())
        }
        _ => differ(),
    }
}
