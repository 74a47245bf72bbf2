//! `r1-bench --quick` runs end to end and reports every measurement: each row has a
//! number or says why not (never the numbers themselves: this machine may be busy).

use std::path::PathBuf;
use std::process::Command;

/// The `r1` binary beside this test's `r1-bench`, brought up to date first (cargo
/// builds only this package's binaries for its tests).
fn r1_binary() -> PathBuf {
    let bench = PathBuf::from(env!("CARGO_BIN_EXE_r1-bench"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", "r1-bin"]);
    if bench.parent().and_then(|p| p.file_name()) == Some("release".as_ref()) {
        build.arg("--release");
    }
    let st = build.status().expect("run cargo build -p r1-bin");
    assert!(st.success(), "cargo build -p r1-bin failed");
    bench.with_file_name("r1")
}

#[test]
fn quick_run_reports_every_measurement() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("results.json");
    let r1 = r1_binary();
    let bench = || {
        Command::new(env!("CARGO_BIN_EXE_r1-bench"))
            .arg("--quick")
            .arg("--r1")
            .arg(&r1)
            .arg("--out")
            .arg(&out)
            .arg("--dir")
            .arg(dir.path())
            .output()
            .unwrap()
    };
    let run = bench();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "r1-bench --quick failed ({}):\n{stdout}\n{stderr}",
        run.status
    );

    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(doc["v"], 1);
    assert_eq!(doc["size"], "quick");
    for key in ["nproc", "cpu", "kernel"] {
        assert!(
            !doc["machine"][key].is_null(),
            "machine.{key} missing: {doc}"
        );
    }
    let rows = doc["rows"].as_array().unwrap();
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    let expected = [
        "1a", "1b", "1c", "1d", "2a", "2b", "2c", "2d", "2e", "2f", "3a", "3b", "4", "5a", "5b",
        "6", "7a", "7b", "7c", "7d", "7e", "7f", "7g", "8a", "8b", "9a", "9b", "10a", "10b", "10c",
        "10d",
    ];
    for id in expected {
        assert!(
            ids.contains(&id),
            "row {id} missing; rows: {ids:?}\n{stdout}"
        );
    }
    for r in rows {
        let status = r["status"].as_str().unwrap();
        let id = r["id"].as_str().unwrap();
        assert!(!status.starts_with("failed"), "row {id} failed: {status}");
        if let Some(reason) = status.strip_prefix("not measured: ") {
            assert!(
                !reason.trim().is_empty(),
                "row {id}: not measured without a reason"
            );
            assert!(
                r["value"].is_null(),
                "row {id}: not measured but has a value"
            );
        } else {
            assert!(
                ["met", "missed", "info"].contains(&status),
                "row {id}: unknown status {status}"
            );
            let v = r["value"].as_f64();
            assert!(
                v.is_some_and(|v| v.is_finite() && v > 0.0),
                "row {id}: no positive value: {r}"
            );
            assert!(
                !r["unit"].as_str().unwrap_or("").is_empty(),
                "row {id}: no unit"
            );
        }
        if !r["floor"].is_null() {
            assert!(
                r["ratio"].as_f64().is_some(),
                "row {id}: floor without ratio"
            );
        }
    }
    // The same table on stdout, one line per row.
    for id in expected {
        assert!(
            stdout.lines().any(|l| l.starts_with(&format!("| {id} |"))),
            "row {id} missing from the printed table:\n{stdout}"
        );
    }
}
