//! JSON text → a small tree, with the nesting depth bounded while parsing.
//!
//! serde_json parses; a [`DeserializeSeed`] carries the depth down and refuses an array or object
//! past [`JSON_DEPTH_MAX`] before allocating it. Objects keep their keys in order and with
//! duplicates, so the decoder can refuse a duplicate key (serde_json's own map would keep only
//! the last one).

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::error::JsonError;
use crate::limits::{JSON_BYTES_MAX, JSON_DEPTH_MAX};

/// One parsed JSON value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(serde_json::Number),
    String(String),
    Array(Vec<Json>),
    /// Keys in input order, duplicates kept.
    Object(Vec<(String, Json)>),
}

impl Json {
    /// What this value is, for error messages.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Json::Null => "null",
            Json::Bool(_) => "a boolean",
            Json::Number(_) => "a number",
            Json::String(_) => "a string",
            Json::Array(_) => "an array",
            Json::Object(_) => "an object",
        }
    }
}

/// Parses one JSON text (nothing but whitespace may follow it).
pub(crate) fn parse(json: &[u8]) -> Result<Json, JsonError> {
    if json.len() > JSON_BYTES_MAX {
        return Err(JsonError::TooLarge {
            len: json.len(),
            max: JSON_BYTES_MAX,
        });
    }
    let too_deep = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(json);
    let seed = Seed {
        depth: 0,
        too_deep: &too_deep,
    };
    let value = seed.deserialize(&mut de).map_err(|e| {
        if too_deep.get() {
            JsonError::TooDeep {
                max: JSON_DEPTH_MAX,
            }
        } else {
            JsonError::Syntax(e)
        }
    })?;
    de.end().map_err(JsonError::Syntax)?;
    Ok(value)
}

/// Deserializes one value at `depth` (arrays and objects around it).
#[derive(Clone, Copy)]
struct Seed<'c> {
    depth: usize,
    /// Set when the depth bound is what failed, so the error can say so.
    too_deep: &'c Cell<bool>,
}

impl Seed<'_> {
    /// The seed for the members of an array or object at this level, or an error past the bound.
    fn enter<E: de::Error>(self) -> Result<Self, E> {
        let depth = self.depth + 1;
        if depth > JSON_DEPTH_MAX {
            self.too_deep.set(true);
            return Err(E::custom(format_args!(
                "nested deeper than {JSON_DEPTH_MAX} levels"
            )));
        }
        Ok(Seed { depth, ..self })
    }
}

impl<'de> DeserializeSeed<'de> for Seed<'_> {
    type Value = Json;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Json, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Seed<'_> {
    type Value = Json;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Json, E> {
        Ok(Json::Null)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Json, E> {
        Ok(Json::Bool(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Json, E> {
        Ok(Json::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Json, E> {
        serde_json::Number::from_f64(v)
            .map(Json::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Json, E> {
        Ok(Json::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Json, E> {
        Ok(Json::String(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
        let inner = self.enter()?;
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(inner)? {
            items.push(item);
        }
        Ok(Json::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
        let inner = self.enter()?;
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(inner)?;
            entries.push((key, value));
        }
        Ok(Json::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_every_kind_and_keeps_key_order_and_duplicates() {
        let v = parse(br#" {"b":[1,-2,1.5,true,null,"x"],"a":{},"b":0} "#).unwrap();
        let Json::Object(entries) = v else {
            panic!("not an object")
        };
        let keys: Vec<&str> = entries.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["b", "a", "b"]);
        let Json::Array(items) = &entries[0].1 else {
            panic!("not an array")
        };
        let kinds: Vec<&str> = items.iter().map(Json::kind).collect();
        assert_eq!(
            kinds,
            [
                "a number",
                "a number",
                "a number",
                "a boolean",
                "null",
                "a string"
            ]
        );
        assert_eq!(items[1], Json::Number((-2i64).into()));
    }

    #[test]
    fn depth_is_bounded_exactly_at_the_limit() {
        let nest = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
        assert!(parse(nest(JSON_DEPTH_MAX).as_bytes()).is_ok());
        assert!(matches!(
            parse(nest(JSON_DEPTH_MAX + 1).as_bytes()),
            Err(JsonError::TooDeep { .. })
        ));
        // Far past serde_json's own limit of 128: still our error, no stack overflow.
        assert!(matches!(
            parse(nest(100_000).as_bytes()),
            Err(JsonError::TooDeep { .. })
        ));
    }

    #[test]
    fn refuses_trailing_and_truncated_text() {
        assert!(matches!(parse(b"{} x"), Err(JsonError::Syntax(_))));
        assert!(matches!(parse(br#"{"a":"#), Err(JsonError::Syntax(_))));
        assert!(matches!(parse(b""), Err(JsonError::Syntax(_))));
        assert!(matches!(
            parse(&vec![b' '; JSON_BYTES_MAX + 1]),
            Err(JsonError::TooLarge { .. })
        ));
    }
}
