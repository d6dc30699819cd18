//! Generate bindings for nginx-rtmp-module's headers.
//!
//! nginx's own types come from nginx-sys (which reads `NGINX_BUILD_DIR`); here bindgen reads
//! the rtmp headers with the same include paths and defines, and emits only `ngx_rtmp_*` items
//! (`allowlist_recursively(false)`), so every `ngx_*` type in them resolves to nginx-sys.
//!
//! `NGX_RTMP_MODULE_DIR` points at the rtmp sources (default: nginx-src/nginx-rtmp-module).

use std::env;
use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let rtmp_dir = env::var_os("NGX_RTMP_MODULE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("nginx-src/nginx-rtmp-module"));
    println!("cargo:rerun-if-env-changed=NGX_RTMP_MODULE_DIR");
    println!("cargo:rerun-if-changed=src/rtmp_wrapper.h");
    if !rtmp_dir.join("ngx_rtmp.h").is_file() {
        panic!(
            "nginx-rtmp-module headers not found in {} (run `make dist`, or set NGX_RTMP_MODULE_DIR)",
            rtmp_dir.display()
        );
    }

    let includes = env::var("DEP_NGINX_INCLUDE").expect("DEP_NGINX_INCLUDE from nginx-sys");
    // nginx-sys 0.5.0 prints `cargo:metadata=cflags=...`, which reaches us as DEP_NGINX_METADATA.
    let cflags = env::var("DEP_NGINX_CFLAGS")
        .or_else(|_| env::var("DEP_NGINX_METADATA").map(|m| m.trim_start_matches("cflags=").to_string()))
        .unwrap_or_default();

    let mut clang_args: Vec<String> =
        env::split_paths(&includes).map(|p| format!("-I{}", p.display())).collect();
    clang_args.push(format!("-I{}", rtmp_dir.display()));
    clang_args.extend(cflags.split_whitespace().map(str::to_string));

    let bindings = bindgen::Builder::default()
        .header("src/rtmp_wrapper.h")
        .clang_args(&clang_args)
        .allowlist_type("ngx_rtmp_.*")
        .allowlist_var("ngx_rtmp_.*|NGX_RTMP_.*")
        .allowlist_function("ngx_rtmp_.*")
        .allowlist_recursively(false)
        .layout_tests(false)
        .derive_default(false)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen over nginx-rtmp-module headers");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("rtmp.rs");
    bindings.write_to_file(out).expect("write rtmp bindings");
}
