//! Generates `include/r1.h` (at the workspace root) with cbindgen.
//!
//! The header is checked in. The file is rewritten only when its text changes, so a
//! build leaves a clean tree clean; `scripts/test-c.sh` builds and then runs
//! `git diff --exit-code include/r1.h`, which fails when a Rust change altered the
//! ABI without the regenerated header being committed.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let header = crate_dir.join("..").join("include").join("r1.h");
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-changed=build.rs");
    // A hand edit of the header triggers regeneration, which undoes it; the test
    // script's `git diff` then shows the edit as drift.
    println!("cargo:rerun-if-changed={}", header.display());

    let mut config = match cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")) {
        Ok(c) => c,
        Err(e) => fail(&format!("cannot read cbindgen.toml: {e}")),
    };
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let minor = env!("CARGO_PKG_VERSION_MINOR");
    let patch = env!("CARGO_PKG_VERSION_PATCH");
    config.after_includes = Some(format!(
        "\n/* The version of the header; compare with r1_version() at run time. */\n\
         #define R1_VERSION_MAJOR {major}\n\
         #define R1_VERSION_MINOR {minor}\n\
         #define R1_VERSION_PATCH {patch}\n\
         #define R1_VERSION_STRING \"{major}.{minor}.{patch}\"\n"
    ));

    let bindings = match cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
    {
        Ok(b) => b,
        Err(e) => fail(&format!("cbindgen failed: {e}")),
    };
    let mut text = Vec::new();
    bindings.write(&mut text);
    let unchanged = std::fs::read(&header).is_ok_and(|old| old == text);
    if !unchanged && let Err(e) = write_header(&header, &text) {
        // The library itself does not need the header: a read-only source tree (a
        // packaged crate) still builds, loudly.
        println!(
            "cargo:warning=cannot write {}: {e}; the checked-in header may be stale",
            header.display()
        );
    }
}

fn write_header(path: &std::path::Path, text: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(path, text)
}

fn fail(msg: &str) -> ! {
    eprintln!("r1-ffi build.rs: {msg}");
    std::process::exit(1);
}
