//! A machine without io_uring gets a clear start-up error that says why and how to fix it.
//!
//! Disabling io_uring means flipping the `kernel.io_uring_disabled` sysctl for the whole machine,
//! so this test lives in its own test binary (cargo runs test binaries one at a time), keeps the
//! window short, and always restores the old value. Without permission to write the sysctl it
//! says so and checks nothing else.

use std::process::Command;

const SYSCTL: &str = "/proc/sys/kernel/io_uring_disabled";

struct Restore(String);

impl Drop for Restore {
    fn drop(&mut self) {
        let _ = std::fs::write(SYSCTL, &self.0);
    }
}

#[test]
fn disabled_io_uring_is_a_clear_startup_error() {
    let Ok(old) = std::fs::read_to_string(SYSCTL) else {
        println!("skipped: {SYSCTL} does not exist on this kernel");
        return;
    };
    if std::fs::write(SYSCTL, "2").is_err() {
        println!("skipped: no permission to write {SYSCTL}");
        return;
    }
    let restore = Restore(old.trim().to_string());
    let out = Command::new(env!("CARGO_BIN_EXE_turnstile"))
        .arg("serve")
        .output()
        .expect("run turnstile");
    drop(restore);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("io_uring"), "{stderr}");
    assert!(stderr.contains("io_uring_disabled"), "says why: {stderr}");
    assert!(stderr.contains("sysctl"), "says how to fix it: {stderr}");
    println!("start-up error as a user sees it:\n{stderr}");
}
