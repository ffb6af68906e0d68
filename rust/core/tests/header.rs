//! The committed C header must be exactly what cbindgen generates from the current source, so the Go
//! shim never compiles against a stale ABI. `make header` (OTELSTORE_WRITE_HEADER=1) rewrites it.

use std::path::Path;

#[test]
fn committed_header_matches_the_source() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config =
        cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut generated = Vec::new();
    cbindgen::Builder::new()
        .with_crate(crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates the header")
        .write(&mut generated);
    let header_path = crate_dir.join("include/otelstore.h");
    if std::env::var_os("OTELSTORE_WRITE_HEADER").is_some() {
        std::fs::write(&header_path, &generated).expect("write header");
    }
    let committed = std::fs::read(&header_path).expect("read committed header");
    assert!(
        committed == generated,
        "rust/core/include/otelstore.h is stale: run `make header` and commit the result"
    );
}
