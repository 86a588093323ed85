//! The CPU demo's assets (`examples/arith/assets`) are exactly what `forge::tasks::arithmetic`
//! makes. Regenerate with `FORGE_UPDATE_ASSETS=1 cargo test -p forge-tests --test demo_assets`.

use std::path::Path;

use forge::tasks::arithmetic::ArithmeticTask;

#[test]
fn demo_assets_are_in_sync() {
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/arith/assets");
    if std::env::var_os("FORGE_UPDATE_ASSETS").is_some() {
        ArithmeticTask::default().write(&assets).expect("writes");
        return;
    }
    let fresh = tempfile::tempdir().expect("temp dir");
    ArithmeticTask::default()
        .write(fresh.path())
        .expect("writes");
    for entry in std::fs::read_dir(fresh.path()).expect("listed") {
        let name = entry.expect("entry").file_name();
        let want = std::fs::read(fresh.path().join(&name)).expect("read");
        let have = std::fs::read(assets.join(&name)).unwrap_or_default();
        assert!(
            want == have,
            "examples/arith/assets/{} is stale: run FORGE_UPDATE_ASSETS=1 cargo test -p forge-tests --test demo_assets",
            name.to_string_lossy()
        );
    }
}
