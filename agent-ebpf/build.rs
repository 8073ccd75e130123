//! Compiles the kernel programs in `src/*.bpf.c` with clang into one BPF ELF
//! object that `lib.rs` embeds. Runs on every build where a source changed.
//!
//! The files are compiled as one translation unit: `llmtap.c` in OUT_DIR
//! includes each of them, in name order so the object is reproducible. The
//! hook families share maps and helpers (`src/llmtap.h`), and one unit makes
//! them one object with plain clang, no BPF linker.

use std::env;
use std::fs;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "arm64",
        _ => "x86",
    };
    let multiarch = match arch {
        "arm64" => "/usr/include/aarch64-linux-gnu",
        _ => "/usr/include/x86_64-linux-gnu",
    };
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-env-changed=CLANG");

    let mut sources: Vec<String> = fs::read_dir("src")
        .expect("agent-ebpf/src")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".bpf.c"))
        .collect();
    sources.sort();
    let unit = out_dir.join("llmtap.c");
    let includes: String = sources
        .iter()
        .map(|name| format!("#include \"{name}\"\n"))
        .collect();
    fs::write(&unit, includes).expect("write the translation unit into OUT_DIR");

    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{arch}"))
        .arg(format!("-I{multiarch}"))
        // The unit names its sources relative to src/.
        .arg("-Isrc")
        .arg("-c")
        .arg(&unit)
        .arg("-o")
        .arg(out_dir.join("llmtap.bpf.o"))
        .status()
        .unwrap_or_else(|err| {
            panic!("cannot run `{clang}` ({err}): install clang and libbpf-dev, e.g. with `cargo xtask setup`")
        });
    assert!(status.success(), "clang failed to compile src/*.bpf.c");
}
