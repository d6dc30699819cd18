//! The probe of a suspect ([`crate::mesh`]'s `suspect`): a node a peer could not push to is
//! confirmed dead when the master cannot open a TCP connection to its announced RTMP address
//! within [`PROBE_TIMEOUT`], and its streams are placed again at once. A name that does not
//! resolve (within 2 s) proves nothing (the suspect then dies only by its silence). One probe per suspect
//! at a time, at most one a second (the mesh hands them out so). A suspect that answers is alive:
//! the hops to it whose pushes were reported `stalled` cross a dead path and move
//! (`Mesh::path_dead`). `--suspect-probe off` (for a
//! master that cannot reach the nodes' RTMP ports, or must never connect where a node's
//! announce points) probes nothing: a suspect then dies only by its silence, and the hops of
//! pushes reported `stalled` move at once (their reporter can move only its own hops).

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tracing::{info, warn};

use crate::server::{now, App};

/// How long a suspect's RTMP port has to accept the master's connection.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// How long the suspect's host name may take to resolve.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// Probe the suspects the last change made (call after a heartbeat).
pub fn suspects(app: &Arc<App>) {
    // Never behind a decision (this runs on a thread that answers heartbeats): a busy mesh
    // keeps its probes for the next heartbeat.
    let Some(probes) = app.mesh.try_lock().map(|mut m| m.take_probes()) else { return };
    if !app.suspect_probe {
        // `--suspect-probe off`: taken and dropped; suspects die only by their silence. A
        // stalled push's hop still moves (its reporter can move only its own hops, and a
        // suspect that is alive keeps beating): without a probe, a cut path would otherwise
        // hold the stream on it for as long as the root relay beats.
        // Off this thread: the decision waits for the mesh.
        if !probes.is_empty() {
            let app = app.clone();
            tokio::task::spawn_blocking(move || {
                for (id, _) in probes {
                    path_dead(&app, &id, app.with_mesh(|m| m.path_dead(&id, now())));
                }
            });
        }
        return;
    }
    for (id, url) in probes {
        let Some(addr) = rtmp_addr(&url) else { continue };
        let app = app.clone();
        tokio::spawn(async move {
            // A resolver that hangs proves nothing either, and holds no task for long.
            let lookup = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host(addr.as_str()));
            let Ok(Ok(mut addrs)) = lookup.await else { return };
            let Some(sa) = addrs.next() else { return };
            let refused = match tokio::time::timeout(PROBE_TIMEOUT, TcpStream::connect(sa)).await {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(_) => Some("no answer".to_string()),
            };
            match refused {
                None => {
                    info!(node = %id, "suspect answers: a peer's push to it failed, it stays");
                    // Alive: a push to it that stalled crossed a dead path; that hop moves.
                    path_dead(&app, &id, app.with_mesh(|m| m.path_dead(&id, now())));
                }
                Some(why) => {
                    if app.with_mesh(|m| m.confirm_dead(&id, now())) {
                        app.counters.add("mesh_master_node_deaths_total", "", 1);
                        warn!(node = %id, addr = %addr, error = %why,
                              "node dead: a peer's push to it failed and its RTMP port does not answer; its streams are placed again");
                    }
                }
            }
        });
    }
}

/// Count and log the streams whose hop to `id` moved off a dead path.
fn path_dead(app: &App, id: &str, moved: Vec<(String, String)>) {
    for (stream, new) in moved {
        app.counters.add("mesh_master_paths_dead_total", "", 1);
        warn!(node = %id, stream = %stream, to = %new,
              "path dead: a push to it stalled while it answers; the stream's hop moves");
    }
}

/// `host:port` of an RTMP URL (port 1935 when it names none).
fn rtmp_addr(url: &str) -> Option<String> {
    let rest = url.strip_prefix("rtmp://")?;
    let hostport = rest.split('/').next().filter(|h| !h.is_empty())?;
    let has_port = match hostport.rsplit_once(':') {
        Some((h, p)) => {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && (!h.contains(':') || h.ends_with(']'))
        }
        None => false,
    };
    Some(if has_port { hostport.to_string() } else { format!("{hostport}:1935") })
}

#[cfg(test)]
mod tests {
    use super::rtmp_addr;

    #[test]
    fn the_address_of_an_rtmp_url() {
        assert_eq!(rtmp_addr("rtmp://10.0.0.1:1936/relay").as_deref(), Some("10.0.0.1:1936"));
        assert_eq!(rtmp_addr("rtmp://edge.example").as_deref(), Some("edge.example:1935"));
        assert_eq!(rtmp_addr("rtmp://[::1]:19350/x").as_deref(), Some("[::1]:19350"));
        assert_eq!(rtmp_addr("rtmp://[::1]/x").as_deref(), Some("[::1]:1935"));
        assert_eq!(rtmp_addr("http://x:1"), None);
        assert_eq!(rtmp_addr("rtmp:///x"), None);
    }
}
