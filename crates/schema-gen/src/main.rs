//! Regenerates the Rust code of `schema/turnstile.capnp` into `crates/wire/src/turnstile_capnp.rs`,
//! or, with `--check`, fails when the checked-in file differs from what the schema generates.
//!
//! Needs the `capnp` schema compiler on `PATH` (Debian: `apt-get install capnproto`). Building the
//! rest of the workspace never does: the generated code is checked in.
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const SCHEMA: &str = "schema/turnstile.capnp";
const OUTPUT: &str = "crates/wire/src/turnstile_capnp.rs";

fn main() -> ExitCode {
    let check = match std::env::args().nth(1).as_deref() {
        None => false,
        Some("--check") => true,
        Some(other) => {
            eprintln!("usage: turnstile-schema-gen [--check]   (unknown argument {other:?})");
            return ExitCode::from(2);
        }
    };
    match run(check) {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("schema-gen: {msg}");
            ExitCode::FAILURE
        }
    }
}

fn workspace_root() -> PathBuf {
    // CARGO_MANIFEST_DIR is crates/schema-gen; the workspace root is two levels up.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(check: bool) -> Result<(), String> {
    let root = workspace_root();
    let tmp = std::env::temp_dir().join(format!("turnstile-schema-gen-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).map_err(|e| format!("create {}: {e}", tmp.display()))?;

    capnpc::CompilerCommand::new()
        .src_prefix(root.join("schema"))
        .file(root.join(SCHEMA))
        .output_path(&tmp)
        .run()
        .map_err(|e| {
            format!("capnp compile failed: {e} (is the `capnp` tool installed? Debian: capnproto)")
        })?;

    let generated = tmp.join("turnstile_capnp.rs");
    let status = Command::new("rustfmt")
        .args(["--edition", "2024"])
        .arg(&generated)
        .status()
        .map_err(|e| format!("run rustfmt: {e}"))?;
    if !status.success() {
        return Err(format!("rustfmt failed on {}", generated.display()));
    }
    let fresh = std::fs::read_to_string(&generated).map_err(|e| format!("read generated: {e}"))?;
    let _ = std::fs::remove_dir_all(&tmp);

    let target = root.join(OUTPUT);
    if check {
        let current = std::fs::read_to_string(&target)
            .map_err(|e| format!("read {}: {e}", target.display()))?;
        if current != fresh {
            return Err(format!(
                "{OUTPUT} is out of date with {SCHEMA}: run `make schema` and commit the result"
            ));
        }
        println!("schema-gen: {OUTPUT} matches {SCHEMA}");
    } else {
        std::fs::write(&target, fresh).map_err(|e| format!("write {}: {e}", target.display()))?;
        println!("schema-gen: wrote {OUTPUT}");
    }
    Ok(())
}
