//! Runs the four file-writer examples (`examples/file_writer_*.rs`) with `cargo run --example`
//! and checks that each wrote "Knights who say Ni!" into the file it was given.

use std::process::Command;

fn run_example(name: &str) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join(format!("{name}.txt"));
    let output = Command::new(env!("CARGO"))
        .args(["run", "--quiet", "--example", name, "--"])
        .arg(&path)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("Knights who say Ni!"),
        "{name} printed {stdout:?}"
    );
    assert_eq!(
        std::fs::read(&path).expect("the file exists"),
        b"Knights who say Ni!"
    );
}

#[test]
fn file_writer_handle() {
    run_example("file_writer_handle");
}

#[test]
fn file_writer_pattern() {
    run_example("file_writer_pattern");
}

#[test]
fn file_writer_chain() {
    run_example("file_writer_chain");
}

#[test]
fn file_writer_bytewriter() {
    run_example("file_writer_bytewriter");
}
