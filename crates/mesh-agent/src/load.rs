//! Tables from files: read + validate + resolve into a node snapshot, and atomic writes of the
//! last good table.

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use mesh_core::node::Node;
use mesh_core::table::MAX_TABLE_BYTES;
use mesh_core::{Role, Table};

use crate::resolve::resolve_targets;

/// Read and validate a table file. The message says what failed, in nginx's wording
/// (`open() failed (2: No such file or directory)`, `invalid table: relay.cam1[0].node_key: missing`).
pub fn read_table(path: &Path) -> Result<Table, String> {
    let os_error = |call: &str, e: std::io::Error| match e.raw_os_error() {
        Some(code) => format!("{call}() failed ({code}: {})", strip_os_suffix(&e.to_string())),
        None => format!("{call}() failed ({e})"),
    };
    let file = fs::File::open(path).map_err(|e| os_error("open", e))?;
    let mut bytes = Vec::new();
    file.take(MAX_TABLE_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(|e| os_error("read", e))?;
    Table::parse(&bytes).map_err(|e| format!("invalid table: {e}"))
}

/// An I/O error in nginx's wording: `open() failed (2: No such file or directory)`.
pub fn os_error(call: &str, e: std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => format!("{call}() failed ({code}: {})", strip_os_suffix(&e.to_string())),
        None => format!("{call}() failed ({e})"),
    }
}

/// `No such file or directory (os error 2)` → `No such file or directory`.
fn strip_os_suffix(s: &str) -> &str {
    s.rsplit_once(" (os error").map_or(s, |(m, _)| m)
}

/// Build a node snapshot from a validated table: the table's role wins over `fallback_role`;
/// target hosts are resolved (blocking). Returns the hosts that did not resolve.
pub fn make_node(node_id: &str, fallback_role: Role, table: Table) -> (Node, Vec<(String, String)>) {
    let role = table.role.unwrap_or(fallback_role);
    let (dial, failed) = resolve_targets(&table);
    (Node { node_id: node_id.to_string(), role, table, dial }, failed)
}

/// Mode of the files we write (the persisted table holds the viewer secret and node keys).
pub const SECRET_FILE_MODE: u32 = 0o600;

/// Write `bytes` to `path` atomically, readable by its owner only (0600, whatever the umask:
/// nginx sets umask 0 when it daemonizes): a new temporary file beside it (`O_EXCL`, so never
/// one planted there, nor a link), flushed, then renamed over.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("table");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let create = || {
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(SECRET_FILE_MODE)
            .custom_flags(O_NOFOLLOW)
            .open(&tmp)
    };
    let mut f = match create() {
        // A leftover of ours (a crash between create and rename), or something planted:
        // unlinked (a link itself, never its target), then made anew.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            fs::remove_file(&tmp)?;
            create()?
        }
        r => r?,
    };
    let result = (|| {
        // The mode again on the open file: the umask applied to create() can only remove bits.
        f.set_permissions(fs::Permissions::from_mode(SECRET_FILE_MODE))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

const O_NOFOLLOW: i32 = nix::libc::O_NOFOLLOW;

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "mesh-agent-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn read_errors_are_in_nginx_wording() {
        let d = tmpdir();
        let e = read_table(&d.join("missing.json")).unwrap_err();
        assert_eq!(e, "open() failed (2: No such file or directory)");
        fs::write(d.join("bad.json"), "{\"role\": \"edge\"}").unwrap();
        assert_eq!(
            read_table(&d.join("bad.json")).unwrap_err(),
            "invalid table: role: unknown role \"edge\""
        );
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn atomic_write_replaces_whole() {
        let d = tmpdir();
        let p = d.join("t.json");
        write_atomic(&p, b"{\"version\": 1}").unwrap();
        write_atomic(&p, b"{\"version\": 2}").unwrap();
        assert_eq!(read_table(&p).unwrap().version, 2);
        let leftovers: Vec<_> =
            fs::read_dir(&d).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name() != "t.json").collect();
        assert!(leftovers.is_empty(), "no temporary file left: {leftovers:?}");
        assert!(write_atomic(&d.join("no/such/dir/t.json"), b"{}").is_err());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn atomic_write_is_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmpdir();
        let p = d.join("t.json");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let old = nix::sys::stat::umask(nix::sys::stat::Mode::empty());
        let r = write_atomic(&p, b"{\"version\": 1}");
        nix::sys::stat::umask(old);
        r.unwrap();
        assert_eq!(mode(&p), 0o600, "umask 0 (a daemonized nginx)");
        // A world-readable table from before is replaced by an owner-only one.
        fs::set_permissions(&p, fs::Permissions::from_mode(0o644)).unwrap();
        write_atomic(&p, b"{\"version\": 2}").unwrap();
        assert_eq!(mode(&p), 0o600);
        // A link planted where the temporary file goes is not followed.
        let victim = d.join("victim");
        fs::write(&victim, "keep").unwrap();
        let tmp = d.join(format!(".t.json.{}.tmp", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        write_atomic(&p, b"{\"version\": 3}").unwrap();
        assert_eq!(fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(read_table(&p).unwrap().version, 3);
        assert!(!tmp.exists());
        fs::remove_dir_all(d).unwrap();
    }

    #[test]
    fn table_role_wins() {
        let t = Table::parse(br#"{"role": "relay"}"#).unwrap();
        assert_eq!(make_node("e1", Role::Ingest, t).0.role, Role::Relay);
        assert_eq!(make_node("e1", Role::Ingest, Table::default()).0.role, Role::Ingest);
    }
}
