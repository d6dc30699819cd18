//! Tables: the long poll of the master's streams endpoint, and (with no master) the watch of
//! the table file. Both validate a table whole and resolve its hosts off the event loop, then
//! hand it to the node state's one writer ([`crate::state`]).

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::{Instant, SystemTime};

use mesh_core::node::Node;
use mesh_core::Table;

use crate::agent::Level;
use crate::client::Master;
use crate::load::{make_node, read_table};
use crate::shared::Shared;
use crate::state::{Applied, Source, Update};

/// The long poll, while this agent speaks for the node.
pub(crate) fn poll_loop(m: &dyn Master, s: &Shared) {
    while s.speaking() {
        if s.awaiting.load(Ordering::Relaxed) {
            // No table for a node without a role: the announce that ends the wait pokes us.
            s.sleep_poll(s.cfg.heartbeat_interval);
            continue;
        }
        s.take_poke();
        let since = s.since();
        let began = Instant::now();
        let failed = match m.streams(since, s.cfg.poll_wait) {
            Ok(None) => {
                s.streams.lock().ok(s);
                None
            }
            Ok(Some(body)) => match take_table(s, &body) {
                Ok(Applied::Older { .. }) => {
                    // Logged once by the state; never a hot loop on a master that sends it.
                    s.streams.lock().ok(s);
                    Some(s.cfg.backoff_base)
                }
                Ok(_) => {
                    s.streams.lock().ok(s);
                    None
                }
                // Refused whole; the master would answer again at once: back off.
                Err(e) => Some(s.streams.lock().fail_with(
                    s,
                    format!("mesh: table from master refused: {e}; keeping table version {since}"),
                    began,
                )),
            },
            // Waiting for a role: the announce link says so (once).
            Err(e) if crate::control::is_pending(&e) => Some(s.cfg.heartbeat_interval),
            Err(e) => Some(s.streams.lock().fail(s, &e, began)),
        };
        if let Some(d) = failed {
            s.sleep_poll(d);
        }
    }
}

/// A table body from the master (signature checked): validated, resolved, applied, saved.
/// One that comes after the voice stepped down is dropped: the node's new voice has it.
pub(crate) fn take_table(s: &Shared, body: &[u8]) -> Result<Applied, String> {
    let t = Table::parse(body).map_err(|e| e.to_string())?;
    let (version, epoch) = (t.version, t.epoch.clone());
    if !s.speaking() {
        return Ok(Applied::Same);
    }
    let applied = install(s, t, Source::Master);
    if let (Applied::Installed { .. }, Some(path)) = (applied, &s.cfg.table_file) {
        // Under the voice lock: a voice that stepped down meanwhile writes nothing.
        let _held = s.voice_lock.lock();
        if !s.speaking() {
            return Ok(applied);
        }
        if let Err(e) = s.state.save(path, epoch.as_deref(), version, body) {
            s.log(
                Level::Error,
                format!("mesh: cannot save table version {version} to \"{}\": {e}", path.display()),
            );
        }
    }
    Ok(applied)
}

/// Resolve a validated table's hosts and apply it. One the state would refuse as older, or the
/// table in force again, is handed over unresolved (the state only looks at its version).
fn install(s: &Shared, t: Table, source: Source<'_>) -> Applied {
    let version = t.version;
    let current = s.state.node();
    if s.state.is_older(version, t.epoch.as_deref(), source)
        || (version == current.table.version && t == current.table)
    {
        let node =
            Node { node_id: s.cfg.node_id.clone(), role: current.role, table: t, dial: HashMap::new() };
        return s.state.apply(&*s.sink, Update::Table(Box::new(node), source));
    }
    let (node, failed) = make_node(&s.cfg.node_id, current.role, t);
    for (url, e) in failed {
        s.log(Level::Warn, format!("mesh: table version {version}: host of \"{url}\" not resolved ({e}): pushes to it are skipped"));
    }
    s.state.apply(&*s.sink, Update::Table(Box::new(node), source))
}

fn file_stamp(path: &Path) -> Option<(SystemTime, u64)> {
    let md = std::fs::metadata(path).ok()?;
    Some((md.modified().ok()?, md.len()))
}

/// Follow the table file: the operator's (no master), or the one the node's voice writes
/// (the other workers, and every worker of a generation whose voice is elsewhere). A voice
/// does not read back what it writes, while it speaks.
pub(crate) fn watch_loop(s: &Shared) {
    let Some(path) = s.cfg.table_file.clone() else {
        return;
    };
    let mut seen = file_stamp(&path);
    while s.sleep(s.cfg.watch_interval) {
        let now = file_stamp(&path);
        if s.speaking() {
            seen = now;
            continue;
        }
        crate::generations::report(s);
        if now == seen || now.is_none() {
            continue;
        }
        seen = now;
        // The voice's file, under a master: only as it writes it (0600, this user's).
        let foreign = s.cfg.voice_lock.is_some()
            && !std::fs::metadata(&path).is_ok_and(|md| crate::voice::written_by_us(&md));
        if foreign {
            s.log(
                Level::Error,
                format!(
                    "mesh: mesh_table_file \"{}\" refused: not written by this node (another owner, or writable by others); keeping table version {}",
                    path.display(),
                    s.state.version()
                ),
            );
            continue;
        }
        match read_table(&path) {
            Ok(t) if t == s.state.node().table => {}
            Ok(t) => {
                install(s, t, Source::File(&path));
            }
            Err(e) => s.log(
                Level::Error,
                format!(
                    "mesh: mesh_table_file \"{}\" refused: {e}; keeping table version {}",
                    path.display(),
                    s.state.version()
                ),
            ),
        }
    }
}
