//! Cap'n Proto (turnstile-wire) vs serde_json: encode + decode of a request-headers event with 20
//! headers (~1 KB). Prints the JSON / capnp time ratio at the end (goal: at least 10x).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use turnstile_benches::{capnp_decode, capnp_encode, json_decode, json_encode, json_fixture};
use turnstile_wire::FrameWriter;
use turnstile_wire::limits::WRITER_SCRATCH_BYTES;

fn main() {
    let mut scratch = vec![0u8; WRITER_SCRATCH_BYTES];
    let mut writer = FrameWriter::new(&mut scratch);
    let mut capnp_buf = Vec::with_capacity(4096);
    let mut json_buf = Vec::with_capacity(4096);
    let fixture = json_fixture();
    // The decode-only benches read these, even when run alone through a filter.
    capnp_encode(&mut writer, &mut capnp_buf).expect("encode");
    json_encode(&fixture, &mut json_buf).expect("encode");

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    let mut group = c.benchmark_group("request_headers_20");
    group.bench_function("capnp_encode_decode", |b| {
        b.iter(|| {
            capnp_encode(&mut writer, &mut capnp_buf).expect("encode");
            black_box(capnp_decode(black_box(&capnp_buf)).expect("decode"))
        })
    });
    group.bench_function("json_encode_decode", |b| {
        b.iter(|| {
            json_encode(&fixture, &mut json_buf).expect("encode");
            black_box(json_decode(black_box(&json_buf)).expect("decode"))
        })
    });
    group.bench_function("capnp_decode", |b| {
        b.iter(|| black_box(capnp_decode(black_box(&capnp_buf)).expect("decode")))
    });
    group.bench_function("json_decode", |b| {
        b.iter(|| black_box(json_decode(black_box(&json_buf)).expect("decode")))
    });
    group.finish();

    // Side by side in one run, interleaved, best of 7 rounds: the ratio the issue asks for.
    let rounds = 7;
    let iters = 20_000;
    let (mut best_capnp, mut best_json) = (Duration::MAX, Duration::MAX);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..iters {
            capnp_encode(&mut writer, &mut capnp_buf).expect("encode");
            black_box(capnp_decode(black_box(&capnp_buf)).expect("decode"));
        }
        best_capnp = best_capnp.min(t.elapsed());
        let t = Instant::now();
        for _ in 0..iters {
            json_encode(&fixture, &mut json_buf).expect("encode");
            black_box(json_decode(black_box(&json_buf)).expect("decode"));
        }
        best_json = best_json.min(t.elapsed());
    }
    let per = |d: Duration| d.as_nanos() as f64 / iters as f64;
    println!(
        "codec ratio (encode+decode, 20 headers, capnp {} B vs json {} B): capnp {:.0} ns, json {:.0} ns, json/capnp = {:.1}x (goal >= 10x)",
        capnp_buf.len(),
        json_buf.len(),
        per(best_capnp),
        per(best_json),
        per(best_json) / per(best_capnp)
    );
}
