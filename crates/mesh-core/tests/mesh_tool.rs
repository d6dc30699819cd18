//! mesh-tool as operators run it: keys and secrets from stdin, files and the environment, never
//! from the command line; tokens that the table they came from verifies.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use mesh_core::token::{key_sha256_hex, make_token_v2, make_viewer_token, parse_token};
use mesh_core::Table;

fn tool(args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_mesh-tool"))
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mesh-tool runs");
    // A refusal may exit before it reads: a closed pipe is not a failure here.
    let _ = c.stdin.take().unwrap().write_all(stdin.as_bytes());
    c.wait_with_output().unwrap()
}

fn out(o: &Output) -> String {
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8(o.stdout.clone()).unwrap().trim_end().to_string()
}

fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn temp(name: &str, body: &str) -> String {
    let dir = std::env::temp_dir().join(format!("mesh-tool-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, body).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn key_hash_reads_stdin_files_and_the_environment() {
    let want = key_sha256_hex("abc");
    assert_eq!(out(&tool(&["key-hash"], "abc\n", &[])), want);
    assert_eq!(out(&tool(&["key-hash", "-"], "abc", &[])), want);
    assert_eq!(out(&tool(&["key-hash", "env:K"], "", &[("K", "abc")])), want);
    let f = temp("key", "abc\n");
    assert_eq!(out(&tool(&["key-hash", &format!("@{f}")], "", &[])), want);
    assert!(!tool(&["key-hash"], "", &[]).status.success(), "an empty key");
    assert!(!tool(&["key-hash", "env:NOPE_NOT_SET"], "", &[]).status.success());
}

#[test]
fn keys_and_secrets_on_the_command_line_are_refused() {
    for args in
        [&["key-hash", "abc"][..], &["token", "s3cret", "cam1"], &["token", "--kid", "k1", "s3cret", "cam1"]]
    {
        let o = tool(args, "", &[]);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        assert!(err(&o).contains("not taken on the command line"), "{args:?}: {}", err(&o));
        assert!(o.stdout.is_empty());
    }
}

#[test]
fn tokens_from_a_table_verify_with_it() {
    let v2 = temp(
        "v2.json",
        r#"{"viewer_keys": [{"id": "k2", "secret": "0123456789abcdef"}, {"id": "k1", "secret": "old-old-old-old-old", "not_after": 1}],
            "streams": {"cam1": {"id": "gen7"}}, "max_token_ttl_s": 7200}"#,
    );
    let t = Table::parse(&std::fs::read(&v2).unwrap()).unwrap();
    let tok = out(&tool(&["token", &format!("@{v2}"), "cam1", "7200"], "", &[]));
    assert!(tok.starts_with("v2.k2."), "{tok}");
    assert_eq!(t.verify_viewer("cam1", &tok, now()), Ok(()));
    let expiry = parse_token(&tok).unwrap().expiry();
    assert!((now() + 7195..=now() + 7200).contains(&expiry), "{expiry}");
    let o = tool(&["token", &format!("@{v2}"), "cam1", "7201"], "", &[]);
    assert!(err(&o).contains("token lifetime too long: at most 7200 s"), "{}", err(&o));
    let o = tool(&["token", &format!("@{v2}"), "cam9"], "", &[]);
    assert!(err(&o).contains("unknown stream"), "{}", err(&o));
    let o = tool(&["token", &format!("@{v2}"), "cam1", "18446744073709551615"], "", &[]);
    assert!(!o.status.success() && o.stdout.is_empty());
    // A legacy table makes legacy tokens, as before.
    let legacy = temp("legacy.json", r#"{"viewer_secret": "vs"}"#);
    let tok = out(&tool(&["token", &format!("@{legacy}"), "cam1"], "", &[]));
    let expiry = parse_token(&tok).unwrap().expiry();
    assert_eq!(tok, make_viewer_token("vs", "cam1", expiry));
    let open = temp("open.json", "{}");
    assert!(err(&tool(&["token", &format!("@{open}"), "cam1"], "", &[])).contains("viewers need no token"));
}

#[test]
fn tokens_from_a_secret_on_stdin_or_in_the_environment() {
    let tok = out(&tool(
        &["token", "--kid", "k1", "--stream-id", "gen7", "-", "cam1", "60"],
        "0123456789abcdef\n",
        &[],
    ));
    let expiry = parse_token(&tok).unwrap().expiry();
    assert_eq!(tok, make_token_v2("0123456789abcdef", "k1", "cam1", "gen7", expiry));
    let tok = out(&tool(&["token", "env:VS", "cam1"], "", &[("VS", "vs")]));
    let expiry = parse_token(&tok).unwrap().expiry();
    assert_eq!(tok, make_viewer_token("vs", "cam1", expiry));
    assert!(!tool(&["token", "env:VS", "cam1", "86401"], "", &[("VS", "vs")]).status.success());
    assert_eq!(tool(&["token", "--stream-id", "x", "-", "cam1"], "s", &[]).status.code(), Some(2));
    assert_eq!(tool(&["token", "-", "a b"], "s", &[]).status.code(), Some(2));
}

/// A node's key, from the master secret as mesh-master reads it (the environment or its file,
/// whitespace trimmed), or from `-`, `@FILE`, `env:NAME`; never from the command line.
#[test]
fn node_keys_come_from_the_master_secret() {
    let secret = "1234567890-SUPER-STRONG-KEY";
    let want = "85327fb490f56b41d774cc54a1e4903622efa87cf4ce6205c9d84b2f36e7c62e"; // docs/protocol.md
    assert_eq!(want, mesh_core::sign::node_key(secret.as_bytes(), "edge-1", 0));
    assert_eq!(out(&tool(&["node-key", "edge-1"], "", &[("MASTER_KEY", secret)])), want);
    let f = temp("master.key", &format!("{secret}\n"));
    assert_eq!(out(&tool(&["node-key", "edge-1"], "", &[("MASTER_KEY_FILE", &f)])), want);
    assert_eq!(out(&tool(&["node-key", &format!("@{f}"), "edge-1"], "", &[])), want);
    assert_eq!(out(&tool(&["node-key", "-", "edge-1"], secret, &[])), want);
    assert_eq!(out(&tool(&["node-key", "env:S", "edge-1"], "", &[("S", secret)])), want);
    let g1 = mesh_core::sign::node_key(secret.as_bytes(), "edge-1", 1);
    assert_eq!(out(&tool(&["node-key", "--generation", "1", "edge-1"], "", &[("MASTER_KEY", secret)])), g1);
    // The secret never on the command line; a bad id; no secret at all.
    let o = tool(&["node-key", secret, "edge-1"], "", &[]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(!err(&o).contains(secret), "the refusal does not repeat it");
    assert_eq!(tool(&["node-key", "bad id"], "", &[("MASTER_KEY", secret)]).status.code(), Some(2));
    let o = tool(&["node-key", "edge-1"], "", &[]);
    assert!(!o.status.success() && err(&o).contains("no master secret"), "{}", err(&o));
    let both = tool(&["node-key", "edge-1"], "", &[("MASTER_KEY", secret), ("MASTER_KEY_FILE", &f)]);
    assert!(!both.status.success());
}
