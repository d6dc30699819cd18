//! The master's HTTP side: [`App`] (what every handler reaches: the mesh, the database, the
//! keys, the rates), signed answers, and the [`router`] over the node endpoints
//! ([`crate::node_api`]) and the admin API ([`crate::admin`], [`crate::admin_viewers`]). The
//! listener that serves it is [`crate::listener`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware;
use axum::response::Response;
use axum::routing::{get, post, put};
use axum::Router;
use parking_lot::Mutex;
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use mesh_core::sign::{sign_response, Bound, H_SIGNATURE, H_TIMESTAMP};
use mesh_core::wire::Heartbeat;
pub use mesh_core::wire::Paths;

use crate::admin::*;
use crate::admin_viewers;
use crate::creds::Creds;
use crate::mesh::Mesh;
use crate::metrics::Counters;
use crate::node_api::{announce, auth, heartbeat, route, streams};
use crate::nonces::Nonces;
use crate::published::{Published, Told};
use crate::rates::Rates;
use crate::store::{Store, StoreError, VERSION_BLOCK};

/// Largest request body taken from a node or an admin.
pub(crate) const MAX_BODY: usize = 1 << 20;
/// Longest wait for a request's body once its head is in.
pub(crate) const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything a request handler reaches.
pub struct App {
    pub mesh: Mutex<Mesh>,
    pub store: Mutex<Store>,
    /// Node keys, from the master secret (crate::creds).
    pub creds: Creds,
    /// The nonces of the signature window (crate::nonces).
    pub nonces: Mutex<Nonces>,
    /// The master's epoch: its database's random id (docs/protocol.md, "Epochs").
    pub epoch: String,
    /// When this master started (unix s): a request signed before is refused, since the nonces
    /// it may have used are not remembered across a restart.
    pub started_at: u64,
    pub admin_token: String,
    /// Tables are not served before this (unix s): after a restart, nodes keep their last
    /// tables until the heartbeats have told the new master where streams are.
    pub serve_tables_at: u64,
    pub max_poll_wait_s: u64,
    /// Bumped when every long poll must look again (shutting down).
    pub(crate) changed: watch::Sender<u64>,
    /// What nodes are told (tables, roles), heartbeats not applied yet, per-node wake-ups.
    pub(crate) published: Published,
    ceiling: Mutex<u64>,
    /// Shutting down: long polls answer at once.
    closing: std::sync::atomic::AtomicBool,
    pub counters: Counters,
    /// Per-node request budgets.
    pub rates: Rates,
    /// Suspects are probed (crate::probe); off, a suspect dies only by its silence.
    pub suspect_probe: bool,
    /// When the last sweep began ([`App::behind`]).
    last_sweep: Mutex<Option<std::time::Instant>>,
}

pub fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Random bytes as hex (keys, secrets).
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::fill(&mut b).expect("the OS random source");
    hex::encode(b)
}

/// Hop keys from the OS's random source.
pub struct RandomKeys;

impl crate::mesh::Keys for RandomKeys {
    fn hop_key(&mut self) -> String {
        random_hex(16)
    }
}

impl App {
    pub fn new(
        mesh: Mesh,
        store: Store,
        creds: Creds,
        epoch: String,
        admin_token: String,
        serve_tables_at: u64,
        max_poll_wait_s: u64,
    ) -> Arc<App> {
        let mut mesh = mesh;
        let ceiling = mesh.version();
        let published = Published::default();
        mesh.take_changed();
        published.publish(&mesh, mesh.nodes().keys());
        let rates = Rates::for_interval(mesh.cfg.heartbeat_interval_s);
        let app = Arc::new(App {
            mesh: Mutex::new(mesh),
            store: Mutex::new(store),
            creds,
            nonces: Mutex::new(Nonces::default()),
            epoch,
            started_at: now(),
            admin_token,
            serve_tables_at,
            max_poll_wait_s,
            changed: watch::Sender::new(0),
            published,
            ceiling: Mutex::new(ceiling),
            closing: Default::default(),
            counters: Counters::default(),
            rates,
            suspect_probe: true,
            last_sweep: Mutex::default(),
        });
        app.reserve_versions(ceiling);
        app
    }

    fn reserve_versions(&self, version: u64) {
        let mut ceiling = self.ceiling.lock();
        if version.saturating_add(1) >= *ceiling {
            let next = version.saturating_add(VERSION_BLOCK);
            match self.store.lock().set_version_ceiling(next) {
                Ok(()) => *ceiling = next,
                Err(e) => warn!(error = %e, "cannot save the version ceiling"),
            }
        }
    }

    /// Run `f` on the mesh (after the heartbeats waiting for it), publish what changed, wake
    /// the polls of the nodes whose table changed; then apply the heartbeats that came in
    /// meanwhile.
    pub(crate) fn with_mesh<R>(&self, f: impl FnOnce(&mut Mesh) -> R) -> R {
        let r = self.decide(f);
        self.apply_waiting_beats();
        r
    }

    /// Under the mesh's lock (`m` given when taken already).
    fn decide<R>(&self, f: impl FnOnce(&mut Mesh) -> R) -> R {
        self.decide_in(&mut self.mesh.lock(), f)
    }

    fn decide_in<R>(&self, m: &mut Mesh, f: impl FnOnce(&mut Mesh) -> R) -> R {
        let before = m.version();
        for (hb, t) in self.published.take_pending() {
            if let Err(e) = m.heartbeat(&hb, t) {
                debug!(node = %hb.node_id, error = %e, "heartbeat dropped");
            }
        }
        let r = f(m);
        let changed = m.take_changed();
        self.published.publish(m, &changed);
        self.published.wake(&changed);
        if m.version() != before {
            self.reserve_versions(m.version());
        }
        r
    }

    /// Heartbeats queued while the mesh was held: applied by whoever takes it next, here if
    /// it is free (a heartbeat queued while another holds it is applied by that one, which
    /// looks again once it lets go).
    fn apply_waiting_beats(&self) {
        while self.published.has_pending() {
            match self.mesh.try_lock() {
                Some(mut m) => self.decide_in(&mut m, |_| ()),
                None => return,
            }
        }
    }

    /// A heartbeat: its figures and liveness are queued and applied at once when the mesh is
    /// free, else by the decision holding it; the answer is what the node was last told (its
    /// table's version, its role), so it never waits behind another node's decision.
    pub(crate) fn heartbeat(&self, hb: Heartbeat, t: u64) -> Result<Told, crate::mesh::MeshError> {
        let id = hb.node_id.clone();
        if self.published.get(&id).is_none() {
            // Told nothing: the mesh says why (not announced, or awaiting approval).
            return Err(self
                .mesh
                .lock()
                .check_known(&id)
                .err()
                .unwrap_or(crate::mesh::MeshError::NotAnnounced));
        }
        self.published.queue(hb, t);
        self.apply_waiting_beats();
        self.published.get(&id).ok_or(crate::mesh::MeshError::NotAnnounced)
    }

    /// Shutting down: answer the long polls now (a graceful shutdown waits for them).
    pub fn close(&self) {
        self.closing.store(true, std::sync::atomic::Ordering::Relaxed);
        self.changed.send_modify(|g| *g += 1);
    }

    pub(crate) fn closing(&self) -> bool {
        self.closing.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Once a second: nodes gone silent, viewer keys whose grace has ended.
    pub fn sweep(&self) {
        let t = now();
        self.rates.prune(std::time::Instant::now());
        self.nonces.lock().prune(t);
        let behind = self.behind();
        if behind > 0 {
            warn!(seconds = behind, "master behind: its sweep came late; no node's silence counts that time");
            self.counters.add("mesh_master_behind_seconds_total", "", behind);
        }
        let died = self.with_mesh(|m| {
            m.excuse(behind, t);
            m.sweep(t)
        });
        self.counters.add("mesh_master_node_deaths_total", "", died.len() as u64);
        for id in died {
            warn!(node = %id, "node dead: no heartbeat; its streams are placed again");
        }
        if self.with_mesh(|m| m.drop_retired_viewer_keys(t)) {
            let dropped = self.store.lock().drop_retired_viewer_keys(t);
            match dropped {
                Ok(ids) => {
                    for id in ids {
                        info!(key = %id, "viewer key dropped: its grace has ended");
                    }
                }
                Err(e) => warn!(error = %e, "cannot drop retired viewer keys"),
            }
        }
    }

    /// Whole seconds the sweeps (one a second) came late since the last one: the master was
    /// behind (its threads busy, or stopped), not the nodes silent.
    fn behind(&self) -> u64 {
        let at = std::time::Instant::now();
        let last = self.last_sweep.lock().replace(at);
        last.map_or(0, |l| at.saturating_duration_since(l).as_secs().saturating_sub(1))
    }

    /// Streams changed in the database (keys, identities): the tables follow.
    pub(crate) fn reload_publish(&self) {
        let streams = self.store.lock().streams();
        match streams {
            Ok(s) => self.with_mesh(|m| m.set_streams(s)),
            Err(e) => warn!(error = %e, "cannot read the streams"),
        }
    }

    /// Viewer keys changed in the database: the tables of nodes that serve viewers follow.
    pub(crate) fn reload_viewer_keys(&self) -> Result<(), StoreError> {
        let keys = self.store.lock().viewer_keys()?;
        self.with_mesh(|m| m.set_viewer_keys(keys));
        Ok(())
    }

    pub(crate) fn serving_tables(&self) -> bool {
        now() >= self.serve_tables_at
    }

    /// A response signed for request `to` with its node's key.
    pub(crate) fn signed(&self, to: &Reply, status: StatusCode, body: Vec<u8>) -> Response {
        let ts = now();
        let bound = Bound { method: &to.method, path_query: &to.path_query, nonce: &to.nonce };
        let sig = sign_response(&to.key, bound, status.as_u16(), ts, &body);
        let mut r = unsigned(status, body);
        let h = r.headers_mut();
        h.insert(H_TIMESTAMP, HeaderValue::from(ts));
        h.insert(H_SIGNATURE, HeaderValue::from_str(&sig).expect("hex"));
        r
    }

    pub(crate) fn signed_json(&self, to: &Reply, status: StatusCode, v: &impl Serialize) -> Response {
        self.signed(to, status, serde_json::to_vec(v).unwrap_or_default())
    }

    pub(crate) fn signed_error(&self, to: &Reply, status: StatusCode, why: &str) -> Response {
        self.signed_json(to, status, &json!({ "error": why }))
    }
}

/// What a response is signed for: the key of the node that asked and the request it answers.
#[derive(Clone)]
pub(crate) struct Reply {
    pub key: Vec<u8>,
    pub method: String,
    pub path_query: String,
    /// The request's nonce as sent when it is one (else empty: no node's request has it).
    pub nonce: String,
}

/// A response no key signs (a request naming no valid node).
pub(crate) fn unsigned(status: StatusCode, body: Vec<u8>) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// The whole HTTP surface.
pub fn router(app: Arc<App>, paths: &Paths) -> Router {
    let admin = Router::new()
        .route("/admin/nodes", get(admin_nodes))
        .route("/admin/nodes/{id}/role", put(admin_set_role))
        .route("/admin/nodes/{id}/revoked", put(crate::admin_creds::set_revoked))
        .route("/admin/nodes/{id}/key", post(crate::admin_creds::rotate_key))
        .route("/admin/streams", get(admin_streams).post(admin_create_stream))
        .route("/admin/streams/{stream}", axum::routing::delete(admin_delete_stream))
        .route("/admin/streams/{stream}/key", post(admin_rotate_key))
        .route("/admin/accounts", get(admin_accounts).post(admin_create_account))
        .route("/admin/accounts/{name}", axum::routing::delete(admin_delete_account))
        .route("/admin/tokens", post(admin_viewers::mint))
        .route("/admin/viewer-keys", get(admin_viewers::list).post(admin_viewers::rotate))
        .route("/admin/viewer-keys/{id}", axum::routing::delete(admin_viewers::drop_key))
        .route("/admin/metrics", get(admin_metrics))
        .route_layer(middleware::from_fn_with_state(app.clone(), require_admin));
    Router::new()
        .route(&paths.announce, post(announce))
        .route(&paths.heartbeat, post(heartbeat))
        .route(&paths.streams, get(streams))
        .route(&paths.auth, post(auth))
        .route(&paths.route, post(route))
        .route("/healthz", get(healthz))
        .merge(admin)
        .with_state(app)
}

#[cfg(test)]
pub(crate) mod tests;
#[cfg(test)]
mod tests_probe;
#[cfg(test)]
mod tests_wake;
