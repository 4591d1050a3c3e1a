//! The worker is the minimal one the README shows: its normal dependency tree holds stream-core
//! and stream-pubsub, and no lease limiter, event store, HTTP client or web framework. Runs
//! `cargo tree` (the cargo that runs the tests, offline) in the workspace.

use std::path::Path;
use std::process::Command;

/// Crates the worker must not pull in, as `cargo tree` names them.
const FORBIDDEN: [&str; 7] = [
    "stream-lease",
    "stream-store-opensearch",
    "opensearch",
    "reqwest",
    "axum",
    "actix-web",
    "hyper",
];

/// The crate names in the worker's normal dependency tree (itself included).
fn normal_dependencies() -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let output = Command::new(cargo)
        .current_dir(&workspace)
        .args(["tree", "-p", "worker", "-e", "normal", "--prefix", "none", "--offline"])
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).expect("cargo tree prints UTF-8");
    // Each line is `<name> v<version>[ (<path>)][ (*)]`.
    tree.lines()
        .filter_map(|line| line.split_once(" v").map(|(name, _)| name.trim().to_owned()))
        .collect()
}

#[test]
fn the_worker_depends_on_stream_core_and_stream_pubsub_and_nothing_heavier() {
    let crates = normal_dependencies();
    assert_eq!(crates.first().map(String::as_str), Some("worker"), "{crates:?}");
    for needed in ["stream-core", "stream-pubsub"] {
        assert!(crates.iter().any(|c| c == needed), "{needed} is missing: {crates:?}");
    }
    let found: Vec<&str> = FORBIDDEN
        .into_iter()
        .filter(|forbidden| crates.iter().any(|c| c == forbidden))
        .collect();
    assert!(found.is_empty(), "the worker depends on {found:?}");
}
