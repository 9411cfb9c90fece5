//! Helpers shared by the engine's integration tests.

#![allow(dead_code)]

use serde_json::Value;

/// Runs `../shared/tools/validate-vcon` (or `$VCONTAP_SHARED/tools/…`) over `vcons`, written
/// to a fresh temporary folder (one file each, so several snapshots of one call can be
/// checked together); skipped with a message when the shared folder is absent.
pub fn validate_vcon(vcons: &[Value]) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static RUN: AtomicUsize = AtomicUsize::new(0);
    let shared = std::env::var_os("VCONTAP_SHARED")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared")
        });
    let tool = shared.join("tools/validate-vcon");
    if vcons.is_empty() {
        return;
    }
    if !tool.exists() {
        eprintln!("skipped: validate-vcon not found in {}", shared.display());
        return;
    }
    let dir = std::env::temp_dir().join(format!(
        "vcontap-engine-tests-{}-{}",
        std::process::id(),
        RUN.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for (i, v) in vcons.iter().enumerate() {
        let uuid = v["uuid"].as_str().unwrap_or("no-uuid");
        let path = dir.join(format!("{i:04}-{uuid}.vcon.json"));
        std::fs::write(path, serde_json::to_vec(v).unwrap()).unwrap();
    }
    let o = std::process::Command::new(&tool)
        .arg("--quiet")
        .arg(&dir)
        .output()
        .expect("run validate-vcon");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        o.status.success(),
        "validate-vcon failed ({:?}):\n{}\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}
