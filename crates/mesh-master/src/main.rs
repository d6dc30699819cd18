//! `mesh-master`: the reference master of an ngx_rtmp_mesh mesh. See `mesh-master --help` and
//! docs/master.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mesh_core::role::Role;
use tracing::{error, info, warn};

use mesh_master::creds::Creds;
use mesh_master::hop_keys::KeptKeys;
use mesh_master::listener::{self, Limits};
use mesh_master::mesh::{Config, Mesh};
use mesh_master::server::{self, now, random_hex, App, Paths};
use mesh_master::store::Store;
use mesh_master::tls;

/// The reference master of an ngx_rtmp_mesh mesh: registers nodes (announce, heartbeat), places
/// every live stream from its ingest node to root relays and edges by load, hands each node its
/// relay table (signed, long-polled), authenticates broadcasters and viewers, and serves an admin
/// API for accounts, stream keys, viewer tokens and role assignments.
///
/// Every flag can be given by the environment variable named beside it (the node's `.env` names:
/// ANNOUNCE_ENDPOINT, ...). Secrets are never taken on the command line, where every local user
/// can read them: the master key comes from MASTER_KEY or --master-key-file, the admin token
/// from ADMIN_TOKEN or --admin-token-file. Stream keys are stored hashed in SQLite (0600); nodes,
/// streams and placements are rebuilt from announces and heartbeats after a restart.
///
/// With --tls-cert-file and --tls-key-file the master serves HTTPS (nodes verify it with
/// mesh_master_ca); without them it serves plain HTTP on a loopback address only, unless
/// --insecure-http is given.
#[derive(Parser, Debug)]
#[command(name = "mesh-master", version, about, long_about)]
struct Args {
    /// Address and port to listen on.
    #[arg(long, env = "MASTER_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,

    /// Serve HTTPS with this PEM certificate chain (the master's certificate first, then any
    /// intermediates). Needs --tls-key-file.
    #[arg(long, env = "TLS_CERT_FILE")]
    tls_cert_file: Option<PathBuf>,

    /// The PEM private key of --tls-cert-file (PKCS#8, PKCS#1 or SEC1). It must be readable by
    /// its owner only (mode 0600 or 0400): the master refuses to start otherwise. Or give the
    /// key itself in the environment as TLS_KEY (a PEM, or a PKCS#8 key's base64 on one line,
    /// as scripts/mesh-tls.sh writes it for an env file); never on the command line.
    #[arg(long, env = "TLS_KEY_FILE")]
    tls_key_file: Option<PathBuf>,

    /// Serve plain HTTP on an address that is not loopback. Without TLS the master listens on
    /// loopback only, as request signatures, tables with hop keys and the viewer secret, and
    /// the admin token would cross the network in clear; this flag says the operator knows
    /// (a TLS proxy in front, say).
    #[arg(long, env = "INSECURE_HTTP")]
    insecure_http: bool,

    /// A file holding the master secret (whitespace trimmed): each node's key is derived from it
    /// and the node id (`mesh-tool node-key`), and it never leaves the master. Or give it in
    /// the environment as MASTER_KEY (never on the command line).
    #[arg(long, env = "MASTER_KEY_FILE")]
    master_key_file: Option<PathBuf>,

    /// A file holding the bearer token of the admin API (/admin/...; whitespace trimmed). Or
    /// give the token itself in the environment as ADMIN_TOKEN (never on the command line).
    #[arg(long, env = "ADMIN_TOKEN_FILE")]
    admin_token_file: Option<PathBuf>,

    /// Refused: a key on the command line is visible to every local user (ps, /proc).
    #[arg(long = "master-key", hide = true, value_name = "REFUSED")]
    master_key_argv: Option<String>,

    /// Refused: as --master-key.
    #[arg(long = "admin-token", hide = true, value_name = "REFUSED")]
    admin_token_argv: Option<String>,

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

    /// Longest lifetime of a viewer token, in seconds: the token endpoint mints none longer, and
    /// nodes refuse tokens that expire further than this from now (sent in their tables).
    #[arg(long, env = "MAX_TOKEN_TTL", default_value_t = mesh_core::viewer::DEFAULT_MAX_TTL_S,
          value_parser = clap::value_parser!(u64).range(1..=mesh_core::viewer::MAX_TTL_CEILING_S))]
    max_token_ttl: u64,

    /// Seconds after a restart before tables are served again, so nodes keep their last tables
    /// until their heartbeats have told where streams are (default: two heartbeat intervals and
    /// a second; none on a new database).
    #[arg(long, env = "STARTUP_GRACE")]
    startup_grace: Option<u64>,

    /// Most connections open at once (kept under the open-file limit). At the cap a new
    /// connection closes the one idle longest, those that never carried a signed request first.
    #[arg(long, env = "MAX_CONNECTIONS", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,

    /// Seconds a connection may take to send a request head, and may stay idle between requests.
    #[arg(long, env = "HEADER_TIMEOUT", default_value_t = 15, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout: u64,

    /// Roles granted to a new node at its first announce, as it asks (comma-separated: ingest,
    /// root_relay, relay, standalone; or "all"; default none). A node asking any other role
    /// waits until an admin grants it one (PUT /admin/nodes/{id}/role). A granted role never
    /// changes by what a node announces later.
    #[arg(long, env = "AUTO_APPROVE", default_value = "", value_parser = parse_roles)]
    auto_approve: Roles,

    /// Probe a suspect (a node a peer reports it cannot push to) with a TCP connection to its
    /// announced RTMP address: on (default) or off (a suspect then dies only by its silence).
    #[arg(long, env = "SUSPECT_PROBE", default_value = "on", value_parser = ["on", "off"])]
    suspect_probe: String,

    /// Log format.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,

    /// Log filter (tracing's syntax: info, debug, mesh_master=debug, ...).
    #[arg(long, env = "LOG_LEVEL", default_value = "info")]
    log_level: String,
}

/// A list of roles (`--auto-approve`).
#[derive(Debug, Clone)]
struct Roles(Vec<Role>);

fn parse_roles(s: &str) -> Result<Roles, String> {
    if s.trim() == "all" {
        return Ok(Roles(Role::ALL.to_vec()));
    }
    let mut out = Vec::new();
    for r in s.split(',').map(str::trim).filter(|r| !r.is_empty() && *r != "none") {
        let role = r.parse::<Role>().map_err(|_| {
            format!("unknown role \"{r}\": ingest, root_relay, relay, standalone, all or none")
        })?;
        if !out.contains(&role) {
            out.push(role);
        }
    }
    Ok(Roles(out))
}

/// A secret from the environment variable `env` or the file `file` (one of them).
fn secret(env: &str, file: Option<PathBuf>, what: &str, flag: &str) -> Result<String, String> {
    let inline = std::env::var_os(env).map(|v| v.into_string().map_err(|_| format!("{env} is not UTF-8")));
    let v = match (inline, file) {
        (Some(_), Some(_)) => return Err(format!("{what}: give {env} or --{flag}-file, not both")),
        (Some(v), None) => v?,
        (None, Some(f)) => std::fs::read_to_string(&f)
            .map_err(|e| format!("cannot read {what} file \"{}\": {e}", f.display()))?,
        (None, None) => return Err(format!("no {what}: set {env} or give --{flag}-file")),
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
    for (given, flag, env) in [
        (&args.master_key_argv, "master-key", "MASTER_KEY"),
        (&args.admin_token_argv, "admin-token", "ADMIN_TOKEN"),
    ] {
        if given.is_some() {
            return Err(format!(
                "--{flag} is refused: a secret on the command line is visible to every local user; \
                 set {env} or give --{flag}-file"
            ));
        }
    }
    let master_key = secret("MASTER_KEY", args.master_key_file.clone(), "master key", "master-key")?;
    let admin_token = secret("ADMIN_TOKEN", args.admin_token_file.clone(), "admin token", "admin-token")?;
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
    let tls_key = std::env::var("TLS_KEY").ok();
    let tls = match (&args.tls_cert_file, &args.tls_key_file, &tls_key) {
        (None, None, None) => None,
        (Some(_), Some(_), Some(_)) => return Err("TLS key: give TLS_KEY or --tls-key-file, not both".into()),
        (Some(cert), Some(key), None) => Some(tls::server_config(cert, tls::Key::File(key))?),
        (Some(cert), None, Some(key)) => Some(tls::server_config(cert, tls::Key::Env(key))?),
        (Some(_), None, None) => return Err("--tls-cert-file needs --tls-key-file (or TLS_KEY)".into()),
        (None, _, _) => return Err("--tls-key-file (or TLS_KEY) needs --tls-cert-file".into()),
    };
    if tls.is_none() && !tls::plain_http_allowed(&args.listen, args.insecure_http) {
        return Err(format!(
            "refusing plain HTTP on {}, which is not a loopback address: give --tls-cert-file and \
             --tls-key-file (or --insecure-http to serve plain HTTP there anyway)",
            args.listen
        ));
    }
    if tls.is_none() {
        warn!(listen = %args.listen,
              "plain HTTP: request signatures, tables and the admin token are not encrypted (give --tls-cert-file and --tls-key-file for HTTPS)");
    }
    let store = Store::open(&args.db).map_err(|e| e.to_string())?;
    let ceiling = store.version_ceiling().map_err(|e| e.to_string())?;
    let epoch = store.epoch_or_make(|| random_hex(16)).map_err(|e| e.to_string())?;
    let creds = Creds::new(master_key.into_bytes(), store.node_creds().map_err(|e| e.to_string())?);
    let given = store.give_stream_ids(|| random_hex(8)).map_err(|e| e.to_string())?;
    if given > 0 {
        info!(
            streams = given,
            "streams of an earlier version given identities (their viewer tokens are bound to them)"
        );
    }
    let (viewer_keys, replaced) =
        store.viewer_keys_or_make(now(), || random_hex(32)).map_err(|e| e.to_string())?;
    if replaced {
        warn!(key = %viewer_keys[0].id,
              "the single viewer secret of an earlier version is replaced by a viewer key: viewer tokens minted before are refused");
    }
    let cfg = Config {
        heartbeat_interval_s: args.heartbeat_interval,
        node_timeout_s: args.node_timeout.unwrap_or(3 * args.heartbeat_interval),
        root_fanout: args.root_fanout,
        edge_fanout: args.edge_fanout,
        relay_app: args.relay_app.clone(),
        edge_idle_s: args.edge_idle,
        want_ttl_s: 60,
        max_token_ttl_s: args.max_token_ttl,
        auto_approve: args.auto_approve.0.clone(),
    };
    if args.auto_approve.0.iter().any(|r| r.serves_viewers()) {
        warn!(roles = ?args.auto_approve.0.iter().map(|r| r.as_str()).collect::<Vec<_>>(),
              "auto-approval grants a role that receives the viewer keys to any node with a key at its first announce");
    }
    let grace = match args.startup_grace {
        Some(g) => g,
        None if ceiling == 0 => 0,
        None => 2 * args.heartbeat_interval + 1,
    };
    // The last run's hop keys are handed back to the hops placed again while the first
    // heartbeats come in (the grace, then a node timeout more), so no push reconnects.
    let keep_until = now().saturating_add(grace).saturating_add(cfg.node_timeout_s);
    let keys = KeptKeys::open(&args.db, keep_until).map_err(|e| e.to_string())?;
    let mut mesh = Mesh::new(cfg, ceiling, Box::new(keys));
    mesh.set_viewer_keys(viewer_keys);
    for (id, role) in store.roles().map_err(|e| e.to_string())? {
        mesh.set_role(&id, Some(role), 0);
    }
    mesh.set_streams(store.streams().map_err(|e| e.to_string())?);
    let paths = Paths {
        announce: args.announce_endpoint.clone(),
        heartbeat: args.heartbeat_endpoint.clone(),
        streams: args.streams_endpoint.clone(),
        auth: args.auth_endpoint.clone(),
        route: args.route_endpoint.clone(),
    };
    let mut app =
        App::new(mesh, store, creds, epoch, admin_token, now().saturating_add(grace), args.max_poll_wait);
    if args.suspect_probe == "off" {
        Arc::get_mut(&mut app).expect("not shared yet").suspect_probe = false;
        info!("suspect probe off: a node a peer cannot push to dies only by its silence");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let nofile = listener::open_file_limit();
    let wanted = usize::try_from(args.max_connections).unwrap_or(usize::MAX);
    let limits = Limits {
        max_connections: listener::connection_cap(wanted, nofile),
        header_timeout: Duration::from_secs(args.header_timeout),
    };
    if limits.max_connections < wanted {
        warn!(
            max_connections = limits.max_connections,
            open_file_limit = nofile.unwrap_or(0),
            "fewer connections than asked: the open-file limit is lower"
        );
    }
    rt.block_on(serve(app, paths, args.listen, tls, grace, limits))
}

async fn serve(
    app: Arc<App>,
    paths: Paths,
    listen: SocketAddr,
    tls: Option<Arc<tls::ServerConfig>>,
    grace: u64,
    limits: Limits,
) -> Result<(), String> {
    let listener =
        tokio::net::TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    info!(listen = %listen, scheme, startup_grace_s = grace, max_connections = limits.max_connections,
          header_timeout_s = limits.header_timeout.as_secs(), "mesh-master ready");
    let sweeper = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                // A node's death can take a while to place again: off the runtime's threads.
                let app = app.clone();
                let _ = tokio::task::spawn_blocking(move || app.sweep()).await;
            }
        })
    };
    let router = server::router(app.clone(), &paths);
    let count = {
        let app = app.clone();
        Arc::new(move |name: &'static str| app.counters.inc(name, ""))
            as Arc<dyn Fn(&'static str) + Send + Sync>
    };
    listener::serve(listener, router, limits, tls, count, async move {
        shutdown().await;
        app.close();
    })
    .await;
    sweeper.abort();
    info!("mesh-master stopped");
    Ok(())
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
