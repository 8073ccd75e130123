//! Compiles the kernel programs in `src/*.bpf.c` with clang into one BPF ELF
//! object that `lib.rs` embeds. Runs on every build where the C changed.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("llmtap.bpf.o");
    let clang = env::var("CLANG").unwrap_or_else(|_| "clang".to_owned());
    let arch = match env::var("CARGO_CFG_TARGET_ARCH").as_deref() {
        Ok("aarch64") => "arm64",
        _ => "x86",
    };
    let multiarch = match arch {
        "arm64" => "/usr/include/aarch64-linux-gnu",
        _ => "/usr/include/x86_64-linux-gnu",
    };
    for file in ["src/llmtap.bpf.c", "src/events.h", "src/kernel.h"] {
        println!("cargo:rerun-if-changed={file}");
    }
    println!("cargo:rerun-if-env-changed=CLANG");

    let status = Command::new(&clang)
        .args(["-O2", "-g", "-target", "bpf", "-Wall", "-Werror"])
        .arg(format!("-D__TARGET_ARCH_{arch}"))
        .arg(format!("-I{multiarch}"))
        .args(["-c", "src/llmtap.bpf.c", "-o"])
        .arg(&out)
        .status()
        .unwrap_or_else(|err| {
            panic!("cannot run `{clang}` ({err}): install clang and libbpf-dev, e.g. with `cargo xtask setup`")
        });
    assert!(status.success(), "clang failed to compile src/llmtap.bpf.c");
}
