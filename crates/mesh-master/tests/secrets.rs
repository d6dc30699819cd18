//! The master's secrets never on its command line: `--master-key` and `--admin-token` are
//! refused (without echoing them); the environment and files work; nothing secret is logged.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn master() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mesh-master"));
    c.env_remove("MASTER_KEY")
        .env_remove("ADMIN_TOKEN")
        .env_remove("MASTER_KEY_FILE")
        .env_remove("ADMIN_TOKEN_FILE");
    c
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mesh-master-secrets-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn secrets_on_the_command_line_are_refused() {
    let dir = temp_dir("argv");
    let db = dir.join("m.db");
    for args in [
        vec!["--master-key", "argv-secret-1", "--admin-token-file", "/nonexistent"],
        vec!["--master-key=argv-secret-1"],
        vec!["--admin-token", "argv-secret-1"],
    ] {
        let out = master()
            .args(&args)
            .arg("--db")
            .arg(&db)
            .env("MASTER_KEY", "env-key")
            .env("ADMIN_TOKEN", "env-admin")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} started");
        assert!(err.contains("is refused: a secret on the command line is visible"), "{args:?}: {err}");
        assert!(!err.contains("argv-secret-1"), "{args:?} echoed the secret: {err}");
    }
    assert!(!db.exists(), "refused before anything is opened");
    let help = master().arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(!help.contains("--master-key ") && !help.contains("--admin-token "), "{help}");
    assert!(help.contains("MASTER_KEY") && help.contains("--master-key-file"), "{help}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn secrets_from_the_environment_and_files_and_none_in_the_log() {
    let dir = temp_dir("env");
    std::fs::write(dir.join("admin"), "file-admin-token-42\n").unwrap();
    // Both forms of one secret: refused.
    let out = master()
        .env("MASTER_KEY", "k")
        .env("MASTER_KEY_FILE", dir.join("admin"))
        .env("ADMIN_TOKEN", "a")
        .arg("--db")
        .arg(dir.join("x.db"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("give MASTER_KEY or --master-key-file, not both"));
    let mut child = master()
        .env("MASTER_KEY", "env-master-key-42")
        .args(["--admin-token-file"])
        .arg(dir.join("admin"))
        .args(["--listen", "127.0.0.1:0", "--log-level", "trace", "--db"])
        .arg(dir.join("m.db"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        let Some(Ok(line)) = lines.next() else { break };
        log.push_str(&line);
        log.push('\n');
        if line.contains("mesh-master ready") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(log.contains("mesh-master ready"), "{log}");
    assert!(!log.contains("env-master-key-42") && !log.contains("file-admin-token-42"), "{log}");
    let _ = std::fs::remove_dir_all(&dir);
}
