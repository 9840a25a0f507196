//! Every bound of the wire format, named once. Units come last in the name.

/// Bytes of the frame header: `[u32 little-endian payload length][u8 kind]`.
pub const FRAME_HEADER_BYTES: usize = 5;

/// Largest frame payload (the Cap'n Proto message) accepted or produced: 1 MiB.
///
/// Checked against the header's length field before a single byte of payload is buffered.
pub const FRAME_BYTES_MAX: u32 = 1 << 20;

/// Most 8-byte words a reader may visit while traversing one message.
///
/// Four times the largest frame: enough to read every field of a legal message a few times,
/// far below Cap'n Proto's 64 MiB default, and the bound on pointer-amplification attacks.
pub const TRAVERSAL_WORDS_MAX: usize = (FRAME_BYTES_MAX as usize / 8) * 4;

/// Deepest pointer nesting a reader follows. The schema's deepest path
/// (Response → Decision → Verdict → Block → headers → Header → data) is 7 levels.
pub const NESTING_DEPTH_MAX: i32 = 16;

/// Most segments one message may have. Builders with a scratch space produce one or two.
pub const SEGMENTS_MAX: u32 = 32;

/// Default scratch space of a [`crate::FrameWriter`]: messages up to this size are built without
/// touching the heap.
pub const WRITER_SCRATCH_BYTES: usize = 64 * 1024;

const _: () = assert!(FRAME_BYTES_MAX as usize > WRITER_SCRATCH_BYTES);
const _: () = assert!(NESTING_DEPTH_MAX >= 8);

/// Most values (fields and list elements) a full walk of a message of `payload_bytes` visits.
///
/// Lists of zero-sized elements (`Void`, empty structs) cost the traversal limit one word per
/// element but occupy no bytes, so a few hundred bytes can declare millions of them. Every
/// legitimate value of this schema takes at least a byte of payload in practice, so a walk that
/// visits more values than four per payload word plus a constant is refused.
pub const fn walk_values_max(payload_bytes: usize) -> u64 {
    (payload_bytes as u64 / 8) * 4 + 1024
}

/// The reader options every decoder in turnstile uses.
pub fn reader_options() -> capnp::message::ReaderOptions {
    let mut options = capnp::message::ReaderOptions::new();
    options
        .traversal_limit_in_words(Some(TRAVERSAL_WORDS_MAX))
        .nesting_limit(NESTING_DEPTH_MAX);
    options
}
