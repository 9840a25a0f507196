//! Shared fixtures for the micro-benchmarks live in `benches/benches/*.rs`.
#![forbid(unsafe_code)]
