//! `instructions`: runs one hot-path operation a given number of times, for counting its
//! instructions under `valgrind --tool=callgrind` (`perf/instructions.sh`, `make
//! bench-instructions`).
//!
//! Instruction counts do not move with the noise of a shared machine, unlike times. This binary
//! does nothing but set the operation up and run it `ITERATIONS` times; the script runs it at N
//! and 2N iterations and takes (Ir(2N) − Ir(N)) / N, so that start-up, set-up and exit cancel out.
//! Every operation is deterministic (no clock read inside the loop, no randomness), so the figure
//! is the same on every run of the same build.
//!
//! The operations reuse the criterion benches' fixtures (`turnstile_benches`): the framed Cap'n
//! Proto request-headers event with 20 headers and its JSON twin, and the three-agent dispatch
//! plan.
#![forbid(unsafe_code)]

use std::hint::black_box;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, ValueEnum};
use turnstile_benches::dispatch_fixture::{SLAB_LIVE_CALLS, one_request, three_agent_dispatch};
use turnstile_benches::{capnp_decode, capnp_encode, json_decode, json_encode, json_fixture};
use turnstile_dispatch::bench::CallSlab;
use turnstile_dispatch::{AgentIndex, AgentReply, CallId};
use turnstile_wire::limits::WRITER_SCRATCH_BYTES;
use turnstile_wire::{FrameWriter, split_frame};

/// Most iterations one run may ask for (a typo guard: 2N must still be quick under callgrind).
const ITERATIONS_MAX: u64 = 100_000_000;

/// One hot-path operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Op {
    /// Split one frame (`[u32 len][u8 kind][payload]`, the 20-header request) off a stream
    /// buffer: header checks and the split, no payload parsing.
    FrameDecode,
    /// Read the framed Cap'n Proto request-headers event (20 headers) in place, touching every
    /// field.
    CapnpDecode,
    /// Deserialize the same event from JSON with serde_json, touching every field.
    JsonDecode,
    /// Build the framed Cap'n Proto event in a reused scratch buffer.
    CapnpEncode,
    /// Serialize the JSON event with serde_json into a reused buffer.
    JsonEncode,
    /// The circuit breaker's "may I call this agent" check.
    BreakerCheck,
    /// One request through a three-agent parallel plan: request, 3 calls, 3 allow replies,
    /// the merged decision, recycle.
    #[value(name = "dispatch-3-agents")]
    Dispatch3Agents,
    /// One agent call's bookkeeping in the call slab (64 other calls live): put, get by id,
    /// remove.
    SlabPutGet,
}

/// Runs one operation `ITERATIONS` times; prints the operation, the iterations and a checksum.
#[derive(Parser, Debug)]
#[command(name = "instructions", version, about)]
struct Cli {
    /// The operation.
    #[arg(value_enum)]
    op: Op,
    /// How many times to run it.
    iterations: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.iterations > ITERATIONS_MAX {
        eprintln!("instructions: at most {ITERATIONS_MAX} iterations");
        return ExitCode::FAILURE;
    }
    let checksum = run(cli.op, cli.iterations);
    let name = cli
        .op
        .to_possible_value()
        .map_or_else(|| format!("{:?}", cli.op), |v| v.get_name().to_owned());
    println!("{name} {} {checksum}", cli.iterations);
    ExitCode::SUCCESS
}

/// Sets `op` up, then runs it `n` times; returns a checksum of the results so that nothing is
/// optimised away.
fn run(op: Op, n: u64) -> u64 {
    let mut scratch = vec![0u8; WRITER_SCRATCH_BYTES];
    let mut writer = FrameWriter::new(&mut scratch);
    let mut capnp_buf = Vec::with_capacity(4096);
    let mut json_buf = Vec::with_capacity(4096);
    let fixture = json_fixture();
    capnp_encode(&mut writer, &mut capnp_buf).expect("encode");
    json_encode(&fixture, &mut json_buf).expect("encode");
    let now = Instant::now();
    let mut sum: u64 = 0;
    let mut add = |v: usize| sum = sum.wrapping_add(v as u64);
    match op {
        Op::FrameDecode => {
            for _ in 0..n {
                let (frame, used) = split_frame(black_box(&capnp_buf))
                    .expect("valid frame")
                    .expect("whole frame");
                add(frame.payload.len() + used);
            }
        }
        Op::CapnpDecode => {
            for _ in 0..n {
                add(capnp_decode(black_box(&capnp_buf)).expect("decode"));
            }
        }
        Op::JsonDecode => {
            for _ in 0..n {
                add(json_decode(black_box(&json_buf)).expect("decode"));
            }
        }
        Op::CapnpEncode => {
            for _ in 0..n {
                add(capnp_encode(&mut writer, black_box(&mut capnp_buf)).expect("encode"));
            }
        }
        Op::JsonEncode => {
            for _ in 0..n {
                add(json_encode(black_box(&fixture), &mut json_buf).expect("encode"));
            }
        }
        Op::BreakerCheck => {
            let d = three_agent_dispatch();
            for _ in 0..n {
                add(usize::from(
                    black_box(&d).breaker_allows(black_box(now), black_box(AgentIndex(1))),
                ));
            }
        }
        Op::Dispatch3Agents => {
            let mut d = three_agent_dispatch();
            let mut reply = AgentReply::default();
            let mut calls = [CallId::from_u64(0); 3];
            for _ in 0..n {
                one_request(&mut d, now, &mut reply, &mut calls);
                add(calls[0].to_u64() as usize);
            }
        }
        Op::SlabPutGet => {
            let mut slab = CallSlab::new();
            for _ in 0..SLAB_LIVE_CALLS {
                slab.put(now);
            }
            for _ in 0..n {
                let id = slab.put(black_box(now));
                add(usize::from(slab.get(black_box(id))));
                add(usize::from(slab.remove(black_box(id))));
            }
        }
    }
    sum
}
