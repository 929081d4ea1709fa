//! Reliability of training runs through the binary (see docs/reliability.md): a checkpoint
//! write that fails leaves the previous checkpoint whole, and a resume after a kill keeps
//! the run's log consistent with its checkpoint. The kill campaign and the disk-full run
//! are scripts (`scripts/kill_campaign.sh`, `scripts/disk_full.sh`).
#![cfg(not(target_arch = "wasm32"))]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

const CONFIG: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tiny_mnist8.json");
const CHECKPOINT: [&str; 4] = [
    "config.json",
    "scheduler_config.json",
    "diffusion_pytorch_model.safetensors",
    "training_state.safetensors",
];

fn run_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("kakusan-rel-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn kakusan(args: &[&str], dir: &Path) -> (bool, String) {
    common::xdg();
    let o = Command::new(env!("CARGO_BIN_EXE_kakusan"))
        .args(args)
        .arg(dir)
        .output()
        .expect("run kakusan");
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!err.contains("panicked"), "kakusan panicked:\n{err}");
    (o.status.success(), err)
}

/// A fresh 2-step run of the tiny model with a checkpoint at step 2.
fn train_two_steps(dir: &Path) {
    let (ok, err) = kakusan(
        &[
            "train",
            "--config",
            CONFIG,
            "--batch",
            "4",
            "--steps",
            "2",
            "--checkpoint-every",
            "2",
            "--sample-every",
            "0",
            "--out",
        ],
        dir,
    );
    assert!(ok, "{err}");
}

fn resume(dir: &Path, steps: &str) -> (bool, String) {
    kakusan(
        &[
            "train",
            "--sample-every",
            "0",
            "--checkpoint-every",
            "2",
            "--steps",
            steps,
            "--resume",
        ],
        dir,
    )
}

fn logged_steps(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("bad log line {l:?}: {e}"));
            v["step"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn resume_after_a_kill_drops_log_lines_past_the_checkpoint() {
    let dir = run_dir("log");
    train_two_steps(&dir);
    // What a run killed after logging steps 3 and 4 (and half of step 5's line) but before
    // checkpointing them leaves behind.
    let log = dir.join("metrics.jsonl");
    let mut text = std::fs::read_to_string(&log).unwrap();
    text += "{\"step\":3,\"loss\":0.5}\n{\"step\":4,\"loss\":0.4}\n{\"step\":5,\"lo";
    std::fs::write(&log, text).unwrap();
    let (ok, err) = resume(&dir, "4");
    assert!(ok, "{err}");
    assert_eq!(
        logged_steps(&dir),
        [1, 2, 3, 4],
        "the log must hold each step once, as trained from the checkpoint"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[cfg(unix)]
fn set_mode(dir: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[cfg(unix)]
#[test]
fn failed_checkpoint_write_keeps_the_previous_checkpoint() {
    let dir = run_dir("readonly");
    train_two_steps(&dir);
    let before: Vec<Vec<u8>> = CHECKPOINT
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    // A read-only folder. Root ignores the mode, so there the state file's temporary name
    // is taken by a folder instead: the run trains, then its checkpoint write fails
    // half-way (config, scheduler and weights written, the state not).
    set_mode(&dir, 0o555);
    let probe = dir.join("probe");
    let as_root = std::fs::write(&probe, b"").is_ok();
    if as_root {
        std::fs::remove_file(&probe).unwrap();
        std::fs::create_dir(dir.join(".training_state.safetensors.partial")).unwrap();
    }
    let (ok, err) = resume(&dir, "4");
    set_mode(&dir, 0o755);
    assert!(!ok, "resuming into a read-only folder must fail:\n{err}");
    assert!(
        err.contains("error:") && err.contains("cannot write"),
        "unclear message:\n{err}"
    );
    if as_root {
        assert!(
            err.contains("cannot save the checkpoint of step 4")
                && err.contains("training_state.safetensors")
                && err.contains("is unchanged"),
            "{err}"
        );
    }
    for (f, old) in CHECKPOINT.iter().zip(&before) {
        let now = std::fs::read(dir.join(f)).unwrap();
        assert!(
            &now == old,
            "{f} changed although the checkpoint was not saved"
        );
    }
    // No temporary files left behind (the blocking folder aside).
    let partial: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .filter(|n| n.ends_with(".partial") && n != ".training_state.safetensors.partial")
        .collect();
    assert!(partial.is_empty(), "left behind: {partial:?}");
    // The kept checkpoint still resumes.
    let _ = std::fs::remove_dir(dir.join(".training_state.safetensors.partial"));
    let (ok, err) = resume(&dir, "2");
    assert!(ok, "{err}");
    assert!(err.contains("at step 2 of"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
