//! The names and encodings of the ABI (docs/wasm-abi.md), shared by the loader and the calls.

/// The ABI version this host speaks; `turnstile_abi_version` must return it.
pub const ABI_VERSION: i32 = 1;

/// The guest's exported linear memory.
pub const EXPORT_MEMORY: &str = "memory";
/// `() -> i32`: the guest's ABI version.
pub const EXPORT_ABI_VERSION: &str = "turnstile_abi_version";
/// `(len: i32) -> i32`: address of a guest-owned input buffer of at least `len` bytes, 0 = refused.
pub const EXPORT_ALLOC: &str = "turnstile_alloc";
/// `(ptr: i32, len: i32) -> i64`: handles one `ProxyToAgent`; `(reply_ptr << 32) | reply_len`,
/// 0 = no reply, negative = guest error code.
pub const EXPORT_ON_MESSAGE: &str = "turnstile_on_message";

/// Module name of the host's imports.
pub const IMPORT_MODULE: &str = "turnstile";
/// `(level: i32, ptr: i32, len: i32)`: one log line (levels as the schema's `LogLevel`).
pub const IMPORT_LOG: &str = "turnstile_log";
/// `(kind: i32, name_ptr: i32, name_len: i32, value: i64)`: kind 0 adds to a counter, 1 sets a
/// gauge.
pub const IMPORT_METRIC: &str = "turnstile_metric";

/// What `turnstile_on_message` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Packed {
    /// No reply (connection-level messages).
    Empty,
    /// The reply's address and length in guest memory.
    Reply { ptr: u32, len: u32 },
    /// The guest's error code (negative).
    Error(i64),
}

/// Splits the result of `turnstile_on_message`.
pub(crate) fn unpack(r: i64) -> Packed {
    if r < 0 {
        return Packed::Error(r);
    }
    let len = (r & 0xffff_ffff) as u32;
    if len == 0 {
        return Packed::Empty;
    }
    Packed::Reply {
        ptr: (r >> 32) as u32,
        len,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn packing() {
        assert_eq!(unpack(0), Packed::Empty);
        assert_eq!(unpack(-2), Packed::Error(-2));
        assert_eq!(
            unpack((0x1234 << 32) | 56),
            Packed::Reply {
                ptr: 0x1234,
                len: 56
            }
        );
    }
}
