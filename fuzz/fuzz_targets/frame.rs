//! The input is a byte stream: frames are split off it with `split_frame` and, in lockstep, with
//! `OwnedFrame::split_from`; both must agree with `peek_header` and `decode_frame`, and every
//! complete frame is parsed, read through the typed API, walked, validated and re-encoded.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    turnstile_wire_fuzz::fuzz_stream(data);
});
