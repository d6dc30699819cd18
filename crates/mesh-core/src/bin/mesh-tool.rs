//! mesh-tool: operator helpers for ngx_rtmp_mesh tables. Keys and secrets are never taken on the
//! command line (every local user can read it with `ps`): they come from stdin, a file or an
//! environment variable.
//!
//!   mesh-tool key-hash [- | @FILE | env:NAME]   hex sha256 for publish[S].key_sha256
//!   mesh-tool token @table.json STREAM [TTL]    a viewer token from a table
//!   mesh-tool token [--kid ID [--stream-id ID]] (- | env:NAME) STREAM [TTL]
//!                                               a viewer token from a secret
//!   mesh-tool check <table.json>                validate a table file
//!   mesh-tool node-key [--generation N] [- | @FILE | env:NAME] NODE_ID
//!                                               a node's key, from the master secret

use std::io::Read;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use mesh_core::name::is_valid_id;
use mesh_core::token::{is_valid_kid, is_valid_stream_id, key_sha256_hex};
use mesh_core::viewer::{StreamId, TokenError, ViewerKey, Viewers, DEFAULT_MAX_TTL_S};
use mesh_core::Table;

const USAGE: &str = "usage:
  mesh-tool key-hash [- | @FILE | env:NAME]
      print the hex sha256 of a stream key (for publish[S].key_sha256), read from stdin (the
      default), FILE, or the environment variable NAME (one trailing newline is dropped)
  mesh-tool token @TABLE STREAM [TTL]
      print a viewer token for STREAM valid TTL seconds (default 3600): made with TABLE's
      signing key (viewer_keys) and STREAM's identity (streams), or its legacy viewer_secret
  mesh-tool token [--kid ID [--stream-id SID]] (- | env:NAME) STREAM [TTL]
      the same from a secret on stdin or in NAME: a v2 token for key ID (bound to SID), or
      without --kid a legacy token; TTL at most 86400
  mesh-tool check TABLE
      validate a table file
  mesh-tool node-key [--generation N] [- | @FILE | env:NAME] NODE_ID
      print the key of node NODE_ID (its mesh_master_key), derived from the master secret
      read from stdin, FILE or NAME, by default from MASTER_KEY or the file MASTER_KEY_FILE
      names (as mesh-master reads it); N is the key's generation (default 0, see
      POST /admin/nodes/ID/key)
Keys and secrets are never taken on the command line: every local user can read it.";

/// Largest key or secret read from stdin, a file or the environment.
const MAX_SECRET: usize = 64 << 10;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match a.as_slice() {
        ["key-hash"] => key_hash("-"),
        ["key-hash", from] => key_hash(from),
        ["token", rest @ ..] => token(rest),
        ["check", path] => check(path),
        ["node-key", rest @ ..] => node_key(rest),
        _ => Err(Failure::Usage(String::new())),
    };
    match result {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(Failure::Usage(why)) => {
            if !why.is_empty() {
                eprintln!("mesh-tool: {why}");
            }
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
        Err(Failure::Failed(why)) => {
            eprintln!("mesh-tool: {why}");
            ExitCode::FAILURE
        }
    }
}

enum Failure {
    /// Bad arguments (exit 2, with the usage).
    Usage(String),
    /// Could not do it (exit 1).
    Failed(String),
}

const NOT_ON_ARGV: &str =
    "keys and secrets are not taken on the command line (ps shows it to every local user): give -, @FILE or env:NAME";

/// A key or secret from `-` (stdin), `@FILE` (when `files`) or `env:NAME`.
fn secret_from(from: &str, files: bool) -> Result<String, Failure> {
    let raw = if from == "-" {
        let mut s = String::new();
        std::io::stdin()
            .take(MAX_SECRET as u64 + 1)
            .read_to_string(&mut s)
            .map_err(|e| Failure::Failed(format!("stdin: {e}")))?;
        s
    } else if let Some(name) = from.strip_prefix("env:") {
        std::env::var(name).map_err(|_| Failure::Failed(format!("no environment variable {name}")))?
    } else if let Some(path) = from.strip_prefix('@').filter(|_| files) {
        std::fs::read_to_string(path).map_err(|e| Failure::Failed(format!("{path}: {e}")))?
    } else {
        return Err(Failure::Usage(NOT_ON_ARGV.into()));
    };
    if raw.len() > MAX_SECRET {
        return Err(Failure::Failed(format!("longer than {MAX_SECRET} bytes")));
    }
    let s = raw.strip_suffix('\n').unwrap_or(&raw);
    let s = s.strip_suffix('\r').unwrap_or(s);
    if s.is_empty() {
        return Err(Failure::Failed("empty".into()));
    }
    Ok(s.to_string())
}

fn key_hash(from: &str) -> Result<String, Failure> {
    Ok(key_sha256_hex(&secret_from(from, true)?))
}

/// The master secret as mesh-master reads it (whitespace trimmed), from `from` or, with none,
/// from MASTER_KEY or the file MASTER_KEY_FILE names.
fn master_secret(from: Option<&str>) -> Result<String, Failure> {
    let raw = match from {
        Some(f) => secret_from(f, true)?,
        None => match (std::env::var("MASTER_KEY"), std::env::var("MASTER_KEY_FILE")) {
            (Ok(_), Ok(_)) => {
                return Err(Failure::Failed("give MASTER_KEY or MASTER_KEY_FILE, not both".into()))
            }
            (Ok(_), Err(_)) => secret_from("env:MASTER_KEY", false)?,
            (Err(_), Ok(f)) => secret_from(&format!("@{f}"), true)?,
            (Err(_), Err(_)) => {
                return Err(Failure::Usage(
                    "no master secret: set MASTER_KEY or MASTER_KEY_FILE, or give - | @FILE | env:NAME"
                        .into(),
                ))
            }
        },
    };
    let s = raw.trim();
    if s.is_empty() {
        return Err(Failure::Failed("the master secret is empty".into()));
    }
    Ok(s.to_string())
}

fn node_key(mut rest: &[&str]) -> Result<String, Failure> {
    let mut generation = 0u64;
    if let ["--generation", n, tail @ ..] = rest {
        generation = n.parse().map_err(|_| Failure::Usage(format!("bad generation \"{n}\"")))?;
        rest = tail;
    }
    let (from, id) = match rest {
        [id] => (None, *id),
        [from, id] => (Some(*from), *id),
        _ => return Err(Failure::Usage(String::new())),
    };
    if !is_valid_id(id) {
        return Err(Failure::Usage("bad node id (1-128 of A-Z a-z 0-9 _ -)".into()));
    }
    let secret = master_secret(from)?;
    Ok(mesh_core::sign::node_key(secret.as_bytes(), id, generation))
}

fn check(path: &str) -> Result<String, Failure> {
    let t = read_table(path)?;
    Ok(format!("{path}: ok, version {}, {} streams", t.version, t.stream_count()))
}

fn read_table(path: &str) -> Result<Table, Failure> {
    let bytes = std::fs::read(path).map_err(|e| Failure::Failed(format!("{path}: {e}")))?;
    Table::parse(&bytes).map_err(|e| Failure::Failed(format!("{path}: {e}")))
}

fn token(mut rest: &[&str]) -> Result<String, Failure> {
    let mut kid = None;
    let mut stream_id = None;
    loop {
        match rest {
            ["--kid", v, tail @ ..] => (kid, rest) = (Some(*v), tail),
            ["--stream-id", v, tail @ ..] => (stream_id, rest) = (Some(*v), tail),
            _ => break,
        }
    }
    let (from, stream, ttl) = match rest {
        [from, stream] => (*from, *stream, "3600"),
        [from, stream, ttl] => (*from, *stream, *ttl),
        _ => return Err(Failure::Usage(String::new())),
    };
    if !is_valid_id(stream) {
        return Err(Failure::Usage("invalid stream id".into()));
    }
    let ttl: u64 = ttl.parse().map_err(|_| Failure::Usage("ttl must be a number of seconds".into()))?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let mut max_ttl = DEFAULT_MAX_TTL_S;
    let minted = if let Some(path) = from.strip_prefix('@') {
        if kid.is_some() || stream_id.is_some() {
            return Err(Failure::Usage("--kid and --stream-id come from the table with @TABLE".into()));
        }
        let table = read_table(path)?;
        if !table.checks_viewer_tokens() {
            return Err(Failure::Failed(format!(
                "{path} has neither viewer_keys nor viewer_secret: viewers need no token"
            )));
        }
        max_ttl = table.viewers().max_ttl_s;
        table.mint_viewer(stream, ttl, now)
    } else {
        if kid.is_some_and(|k| !is_valid_kid(k)) {
            return Err(Failure::Usage("invalid key id (1-32 of A-Z a-z 0-9 _ -)".into()));
        }
        if stream_id.is_some_and(|s| !is_valid_stream_id(s)) {
            return Err(Failure::Usage("invalid stream identity (1-64 of A-Z a-z 0-9 _ -)".into()));
        }
        if stream_id.is_some() && kid.is_none() {
            return Err(Failure::Usage("--stream-id needs --kid (legacy tokens have no identity)".into()));
        }
        let secret = secret_from(from, false)?;
        let keys: Vec<ViewerKey> = kid
            .map(|id| ViewerKey { id: id.into(), secret: secret.clone(), not_after: None })
            .into_iter()
            .collect();
        let viewers = Viewers {
            keys: &keys,
            legacy_secret: kid.is_none().then_some(secret.as_str()),
            max_ttl_s: DEFAULT_MAX_TTL_S,
        };
        viewers.mint(stream, stream_id.map_or(StreamId::Unnamed, StreamId::Id), ttl, now)
    };
    minted.map(|(t, _)| t).map_err(|e| {
        let why = match e {
            TokenError::TooLong => format!("{e}: at most {max_ttl} s"),
            TokenError::UnknownStream => format!("{e}: not in the table's streams"),
            e => e.to_string(),
        };
        Failure::Failed(format!("cannot make a token for \"{stream}\" of {ttl} s: {why}"))
    })
}
