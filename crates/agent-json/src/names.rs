//! Names of schema items as the JSON mapping and its errors use them.

use capnp::schema::{Field, StructSchema};

/// A struct's name as written in the schema: `HttpRequest`, or `HealthStatus.state` for a group
/// (the display name without the file's `turnstile.capnp:` prefix).
pub(crate) fn struct_name(schema: StructSchema) -> String {
    let name = schema
        .get_proto()
        .get_display_name()
        .ok()
        .and_then(|n| n.to_str().ok())
        .unwrap_or("?");
    name.split_once(':').map_or(name, |(_, n)| n).to_owned()
}

/// A field's name as written in the schema (the JSON key). Generated schemas always carry
/// valid UTF-8 names; `?` stands in for one that does not.
pub(crate) fn field_name(field: Field) -> &'static str {
    field
        .get_proto()
        .get_name()
        .ok()
        .and_then(|n| n.to_str().ok())
        .unwrap_or("?")
}
