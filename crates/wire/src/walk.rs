//! A generic, bounded walk over every field of a message, through Cap'n Proto's reflection.
//!
//! Used by fuzz targets and tests to prove that no field of any message, however malformed, makes
//! a reader panic; and by callers that want a message fully checked (UTF-8 included) up front.

use capnp::{dynamic_list, dynamic_struct, dynamic_value};

use crate::error::WireError;
use crate::frame::FrameKind;
use crate::message::Message;
use crate::turnstile_capnp::{agent_to_proxy, proxy_to_agent, request, response};

/// What a walk saw.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WalkStats {
    /// Fields and list elements visited.
    pub values: u64,
    /// Bytes of text and data visited.
    pub bytes: u64,
}

impl Message<'_> {
    /// Reads every field of the message (active union members only), checking every pointer and
    /// that every text field is UTF-8. Bounded by the reader's traversal and nesting limits.
    pub fn walk(&self) -> Result<WalkStats, WireError> {
        let root: dynamic_value::Reader<'_> = match self.kind() {
            FrameKind::Request => self.root::<request::Owned>()?.into(),
            FrameKind::Response => self.root::<response::Owned>()?.into(),
            FrameKind::ProxyToAgent => self.root::<proxy_to_agent::Owned>()?.into(),
            FrameKind::AgentToProxy => self.root::<agent_to_proxy::Owned>()?.into(),
            // `Message::parse` refuses these; a Message of a JSON kind cannot exist.
            kind @ (FrameKind::ProxyToAgentJson | FrameKind::AgentToProxyJson) => {
                return Err(WireError::NotCapnp(kind));
            }
        };
        let mut walk = Walk {
            stats: WalkStats::default(),
            budget: crate::limits::walk_values_max(self.payload_bytes()),
        };
        walk_value(root, &mut walk)?;
        Ok(walk.stats)
    }
}

/// A walk in progress: what it saw, and how many values it may visit in all.
struct Walk {
    stats: WalkStats,
    budget: u64,
}

fn walk_value(value: dynamic_value::Reader<'_>, walk: &mut Walk) -> Result<(), WireError> {
    walk.stats.values += 1;
    if walk.stats.values > walk.budget {
        return Err(WireError::BadMessage(capnp::Error::failed(format!(
            "message declares more than {} values, more than its size allows",
            walk.budget
        ))));
    }
    let stats = walk;
    match value {
        dynamic_value::Reader::Text(t) => {
            stats.stats.bytes += t.len() as u64;
            t.to_str().map_err(|e| WireError::BadMessage(e.into()))?;
        }
        dynamic_value::Reader::Data(d) => stats.stats.bytes += d.len() as u64,
        dynamic_value::Reader::Struct(s) => walk_struct(s, stats)?,
        dynamic_value::Reader::List(l) => walk_list(l, stats)?,
        dynamic_value::Reader::Enum(e) => {
            // An enumerant this build does not know is a peer from the future, not an error.
            let _ = e.get_enumerant()?;
        }
        _ => {}
    }
    Ok(())
}

fn walk_struct(s: dynamic_struct::Reader<'_>, stats: &mut Walk) -> Result<(), WireError> {
    let schema = s.get_schema();
    for field in schema.get_non_union_fields()? {
        walk_value(s.get(field)?, stats)?;
    }
    if let Some(active) = s.which()? {
        walk_value(s.get(active)?, stats)?;
    } else if !schema.get_union_fields()?.is_empty() {
        let name = schema.get_proto().get_display_name()?;
        return Err(WireError::BadMessage(capnp::Error::failed(format!(
            "unknown union member in {}",
            String::from_utf8_lossy(name.as_bytes())
        ))));
    }
    Ok(())
}

fn walk_list(l: dynamic_list::Reader<'_>, stats: &mut Walk) -> Result<(), WireError> {
    for item in l.iter() {
        walk_value(item?, stats)?;
    }
    Ok(())
}
