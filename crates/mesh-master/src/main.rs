//! `mesh-master`: the reference master of an ngx_rtmp_mesh mesh. See `mesh-master --help` and
//! docs/master.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tracing::{error, info};

use mesh_master::mesh::{Config, Mesh};
use mesh_master::server::{self, now, random_hex, App, Paths, RandomKeys};
use mesh_master::store::Store;

/// The reference master of an ngx_rtmp_mesh mesh: registers nodes (announce, heartbeat), places
/// every live stream from its ingest node to root relays and edges by load, hands each node its
/// relay table (signed, long-polled), authenticates broadcasters and viewers, and serves an admin
/// API for accounts, stream keys, viewer tokens and role assignments.
///
/// Every flag can be given by the environment variable named beside it (the node's `.env` names:
/// MASTER_KEY, ANNOUNCE_ENDPOINT, ...). Stream keys are stored hashed in SQLite; nodes, streams
/// and placements are rebuilt from announces and heartbeats after a restart.
#[derive(Parser, Debug)]
#[command(name = "mesh-master", version, about, long_about)]
struct Args {
    /// Address and port to listen on.
    #[arg(long, env = "MASTER_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,

    /// The key shared with every node (signs requests and responses). Prefer --master-key-file.
    #[arg(long, env = "MASTER_KEY", hide_env_values = true, conflicts_with = "master_key_file")]
    master_key: Option<String>,

    /// A file holding the master key (whitespace trimmed).
    #[arg(long, env = "MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,

    /// Bearer token of the admin API (/admin/...). Prefer --admin-token-file.
    #[arg(long, env = "ADMIN_TOKEN", hide_env_values = true, conflicts_with = "admin_token_file")]
    admin_token: Option<String>,

    /// A file holding the admin token (whitespace trimmed).
    #[arg(long, env = "ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,

    /// SQLite database: accounts, hashed stream keys, role assignments, viewer secret.
    #[arg(long, env = "MASTER_DB", default_value = "mesh-master.db")]
    db: PathBuf,

    /// Path of the announce endpoint.
    #[arg(long, env = "ANNOUNCE_ENDPOINT", default_value = "/announce")]
    announce_endpoint: String,

    /// Path of the heartbeat endpoint.
    #[arg(long, env = "HEARTBEAT_ENDPOINT", default_value = "/heartbeat")]
    heartbeat_endpoint: String,

    /// Path of the streams (relay table) endpoint.
    #[arg(long, env = "STREAMS_ENDPOINT", default_value = "/streams")]
    streams_endpoint: String,

    /// Path of the auth endpoint.
    #[arg(long, env = "AUTH_ENDPOINT", default_value = "/auth")]
    auth_endpoint: String,

    /// Path of the route endpoint.
    #[arg(long, env = "ROUTE_ENDPOINT", default_value = "/route")]
    route_endpoint: String,

    /// Seconds between a node's heartbeats (told to every node in the announce reply).
    #[arg(long, env = "HEARTBEAT_INTERVAL", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_interval: u64,

    /// Seconds without a heartbeat after which a node is dead and its streams are placed again
    /// (default: three heartbeat intervals).
    #[arg(long, env = "NODE_TIMEOUT")]
    node_timeout: Option<u64>,

    /// Root relays per stream.
    #[arg(long, env = "ROOT_FANOUT", default_value_t = 1)]
    root_fanout: usize,

    /// Edges (relay nodes) each stream is placed on when it goes live; edges asking for it with a
    /// route request come on top.
    #[arg(long, env = "EDGE_FANOUT", default_value_t = 1)]
    edge_fanout: usize,

    /// RTMP application appended to an announced rtmp_url that names none (where pushes go).
    #[arg(long, env = "RELAY_APP", default_value = "relay")]
    relay_app: String,

    /// Seconds an edge added by a route request keeps a stream nobody watches there.
    #[arg(long, env = "EDGE_IDLE", default_value_t = 300)]
    edge_idle: u64,

    /// Longest hold of a streams long poll, in seconds (a node asks for its own wait up to it).
    #[arg(long, env = "MAX_POLL_WAIT", default_value_t = 60)]
    max_poll_wait: u64,

    /// Seconds after a restart before tables are served again, so nodes keep their last tables
    /// until their heartbeats have told where streams are (default: two heartbeat intervals and
    /// a second; none on a new database).
    #[arg(long, env = "STARTUP_GRACE")]
    startup_grace: Option<u64>,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    /// Log filter (tracing's syntax: info, debug, mesh_master=debug, ...).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
}

fn secret(inline: Option<String>, file: Option<PathBuf>, what: &str, flag: &str) -> Result<String, String> {
    let v = match (inline, file) {
        (Some(v), _) => v,
        (None, Some(f)) => std::fs::read_to_string(&f)
            .map_err(|e| format!("cannot read {what} file \"{}\": {e}", f.display()))?,
        (None, None) => return Err(format!("no {what}: give --{flag} or --{flag}-file")),
    };
    let v = v.trim().to_string();
    if v.is_empty() {
        return Err(format!("{what} is empty"));
    }
    Ok(v)
}

fn logging(args: &Args) {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        b.json().flatten_event(true).init();
    } else {
        b.init();
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    logging(&args);
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            eprintln!("mesh-master: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let master_key =
        secret(args.master_key.clone(), args.master_key_file.clone(), "master key", "master-key")?;
    let admin_token =
        secret(args.admin_token.clone(), args.admin_token_file.clone(), "admin token", "admin-token")?;
    for p in [
        &args.announce_endpoint,
        &args.heartbeat_endpoint,
        &args.streams_endpoint,
        &args.auth_endpoint,
        &args.route_endpoint,
    ] {
        if !p.starts_with('/') || p.starts_with("/admin") {
            return Err(format!("endpoint path \"{p}\": it must start with \"/\" and not with \"/admin\""));
        }
    }
    let store = Store::open(&args.db).map_err(|e| e.to_string())?;
    let ceiling = store.version_ceiling().map_err(|e| e.to_string())?;
    let viewer_secret = store.viewer_secret(|| random_hex(32)).map_err(|e| e.to_string())?;
    let cfg = Config {
        heartbeat_interval_s: args.heartbeat_interval,
        node_timeout_s: args.node_timeout.unwrap_or(3 * args.heartbeat_interval),
        root_fanout: args.root_fanout,
        edge_fanout: args.edge_fanout,
        relay_app: args.relay_app.clone(),
        edge_idle_s: args.edge_idle,
        want_ttl_s: 60,
    };
    let mut mesh = Mesh::new(cfg, ceiling, viewer_secret, Box::new(RandomKeys));
    for (id, role) in store.roles().map_err(|e| e.to_string())? {
        mesh.roles.insert(id, role);
    }
    mesh.set_publish(store.publish_keys().map_err(|e| e.to_string())?);
    let grace = match args.startup_grace {
        Some(g) => g,
        None if ceiling == 0 => 0,
        None => 2 * args.heartbeat_interval + 1,
    };
    let paths = Paths {
        announce: args.announce_endpoint.clone(),
        heartbeat: args.heartbeat_endpoint.clone(),
        streams: args.streams_endpoint.clone(),
        auth: args.auth_endpoint.clone(),
        route: args.route_endpoint.clone(),
    };
    let app = App::new(mesh, store, master_key.into_bytes(), admin_token, now() + grace, args.max_poll_wait);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    rt.block_on(serve(app, paths, args.listen, grace))
}

async fn serve(app: Arc<App>, paths: Paths, listen: SocketAddr, grace: u64) -> Result<(), String> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    info!(listen = %listen, startup_grace_s = grace, "mesh-master ready");
    let sweeper = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                app.sweep();
            }
        })
    };
    let router = server::router(app.clone(), &paths);
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown().await;
            app.close();
        })
        .await;
    sweeper.abort();
    info!("mesh-master stopped");
    result.map_err(|e| format!("server: {e}"))
}

/// SIGINT or SIGTERM.
async fn shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    info!("shutting down");
}
