//! mesh-tool: operator helpers for ngx_rtmp_mesh tables.
//!
//!   mesh-tool key-hash <stream key>                  hex sha256 for publish[S].key_sha256
//!   mesh-tool token <viewer_secret> <stream> [ttl_s]  a viewer token (default ttl 3600 s);
//!                                                    `@table.json` takes the table's secret
//!   mesh-tool check <table.json>                     validate a table file

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use mesh_core::name::is_valid_id;
use mesh_core::token::{key_sha256_hex, make_viewer_token};
use mesh_core::Table;

const USAGE: &str = "usage:
  mesh-tool key-hash <stream key>                   print the hex sha256 for publish[S].key_sha256
  mesh-tool token <viewer_secret> <stream> [ttl_s]  print a viewer token (default ttl 3600 s);
                                                    a secret of @FILE takes FILE's viewer_secret
  mesh-tool check <table.json>                      validate a table file";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let a: Vec<&str> = args.iter().map(String::as_str).collect();
    match a.as_slice() {
        ["key-hash", key] => println!("{}", key_sha256_hex(key)),
        ["token", secret, stream, rest @ ..] if rest.len() <= 1 => {
            if !is_valid_id(stream) {
                eprintln!("mesh-tool: invalid stream id");
                return ExitCode::from(2);
            }
            let Ok(ttl) = rest.first().unwrap_or(&"3600").parse::<u64>() else {
                eprintln!("mesh-tool: ttl must be a number of seconds");
                return ExitCode::from(2);
            };
            let secret = match secret.strip_prefix('@') {
                None => secret.to_string(),
                Some(path) => match read_table(path).map(|t| t.viewer_secret) {
                    Ok(Some(s)) => s,
                    Ok(None) => {
                        eprintln!("mesh-tool: {path} has no viewer_secret: viewers need no token");
                        return ExitCode::FAILURE;
                    }
                    Err(e) => {
                        eprintln!("mesh-tool: {path}: {e}");
                        return ExitCode::FAILURE;
                    }
                },
            };
            let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
            println!("{}", make_viewer_token(&secret, stream, now + ttl));
        }
        ["check", path] => match read_table(path) {
            Ok(t) => println!("{path}: ok, version {}, {} streams", t.version, t.stream_count()),
            Err(e) => {
                eprintln!("{path}: {e}");
                return ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    }
    ExitCode::SUCCESS
}

fn read_table(path: &str) -> Result<Table, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    Table::parse(&bytes).map_err(|e| e.to_string())
}
