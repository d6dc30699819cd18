use super::*;
use crate::mesh::Config;
use axum::body::to_bytes;
use axum::extract::Request;
use mesh_core::role::Role;
use mesh_core::sign::{node_key, sign_request, verify_response};
use mesh_core::sign::{Bound, Stamp, H_NODE, H_NONCE};
use mesh_core::table::Table;
use mesh_core::token::key_sha256_hex;
use mesh_core::token::make_token_v2;
use mesh_core::wire::Capabilities;
use mesh_core::wire::{Action, Announce, AnnounceReply, AuthReply, AuthRequest};
use tower::ServiceExt;

mod roles;

/// The master secret; node N signs with [`node_key`]`(KEY, N, 0)`.
pub(crate) const KEY: &[u8] = b"test-master-key";
pub(crate) const EPOCH: &str = "test-epoch";

/// A fresh nonce.
pub(crate) fn nonce() -> String {
    random_hex(16)
}

/// A master that auto-approves every role (the grants: [`app_granting`]).
pub(crate) fn app() -> (Arc<App>, Router) {
    app_granting(&mesh_core::role::Role::ALL)
}

/// A master that auto-approves `auto`.
pub(crate) fn app_granting(auto: &[mesh_core::role::Role]) -> (Arc<App>, Router) {
    let store = Store::memory().unwrap();
    store.create_account("acme", 0).unwrap();
    store.create_stream("cam1", "acme", &key_sha256_hex("k1"), "gen1", 0).unwrap();
    let mut mesh = Mesh::new(
        Config { max_token_ttl_s: 7200, auto_approve: auto.to_vec(), ..Config::default() },
        0,
        Box::new(RandomKeys),
    );
    mesh.set_viewer_keys(store.viewer_keys_or_make(0, || random_hex(32)).unwrap().0);
    mesh.set_streams(store.streams().unwrap());
    let creds = crate::creds::Creds::new(KEY.to_vec(), []);
    let mut app = App::new(mesh, store, creds, EPOCH.into(), "adm".into(), 0, 60);
    // Started a second ago: the master takes no request signed in the second it started in.
    let a = std::sync::Arc::get_mut(&mut app).expect("not shared yet");
    a.started_at = a.started_at.saturating_sub(1);
    let router = router(app.clone(), &Paths::default());
    (app, router)
}

/// A request of `node`, signed with its key.
pub(crate) fn signed_req(method: &str, pq: &str, node: &str, body: &[u8], ts: u64) -> Request {
    signed_with(node_key(KEY, node, 0).as_bytes(), method, pq, node, body, ts, &nonce())
}

pub(crate) fn signed_with(
    key: &[u8],
    method: &str,
    pq: &str,
    node: &str,
    body: &[u8],
    ts: u64,
    nonce: &str,
) -> Request {
    let sig = sign_request(key, method, pq, ts, nonce, body);
    Request::builder()
        .method(method)
        .uri(pq)
        .header(H_NODE, node)
        .header(H_TIMESTAMP, ts.to_string())
        .header(H_NONCE, nonce)
        .header(H_SIGNATURE, sig)
        .body(Body::from(body.to_vec()))
        .unwrap()
}

fn header_pair(h: &axum::http::HeaderMap) -> (Option<String>, String) {
    let text = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    (text(H_NODE), text(H_NONCE).filter(|n| mesh_core::sign::parse_nonce(n).is_some()).unwrap_or_default())
}

/// Send; check the response's signature (with the key of the node the request names, bound
/// to the request; a request naming no valid node gets an unsigned answer); status and body.
pub(crate) async fn call(r: &Router, req: Request) -> (StatusCode, Vec<u8>) {
    let (node, nonce) = header_pair(req.headers());
    let (method, pq) = (req.method().to_string(), req.uri().to_string());
    let resp = r.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let h = resp.headers().clone();
    let body = to_bytes(resp.into_body(), MAX_BODY).await.unwrap().to_vec();
    let stamp = Stamp {
        ts: h.get(H_TIMESTAMP).and_then(|v| v.to_str().ok()),
        sig: h.get(H_SIGNATURE).and_then(|v| v.to_str().ok()),
        nonce: None,
    };
    match node.filter(|n| mesh_core::name::is_valid_id(n)) {
        Some(node) => {
            let to = Bound { method: &method, path_query: &pq, nonce: &nonce };
            let key = node_key(KEY, &node, 0);
            verify_response(key.as_bytes(), to, status.as_u16(), stamp, &body, now())
                .expect("every response to a node is signed for its request");
        }
        None => assert_eq!(stamp.sig, None),
    }
    (status, body)
}

pub(crate) async fn announce_as(r: &Router, id: &str, role: Role) {
    let (status, _) = call(r, signed_req("POST", "/announce", id, &announce_body(id, role), now())).await;
    assert_eq!(status, StatusCode::OK);
}

pub(crate) fn announce_body(id: &str, role: Role) -> Vec<u8> {
    serde_json::to_vec(&Announce {
        node_id: id.into(),
        role,
        rtmp_url: "rtmp://127.0.0.1:1935".into(),
        http_url: String::new(),
        version: "t".into(),
        capabilities: Capabilities { transcode: false, hls: false, dash: false },
    })
    .unwrap()
}

#[tokio::test]
async fn unsigned_forged_and_stale_requests_are_refused() {
    let (_, r) = app();
    let body = announce_body("ingest-1", Role::Ingest);
    let unsigned = Request::post("/announce").body(Body::from(body.clone())).unwrap();
    assert_eq!(call(&r, unsigned).await.0, StatusCode::UNAUTHORIZED);
    let mut forged = signed_req("POST", "/announce", "ingest-1", &body, now());
    forged.headers_mut().insert(H_SIGNATURE, HeaderValue::from_static("00"));
    assert_eq!(call(&r, forged).await.0, StatusCode::UNAUTHORIZED);
    let stale = signed_req("POST", "/announce", "ingest-1", &body, now() - 301);
    assert_eq!(call(&r, stale).await.0, StatusCode::UNAUTHORIZED);
    let other_node = signed_req("POST", "/announce", "ingest-2", &body, now());
    assert_eq!(call(&r, other_node).await.0, StatusCode::BAD_REQUEST);
    let ok = signed_req("POST", "/announce", "ingest-1", &body, now());
    let (status, reply) = call(&r, ok).await;
    assert_eq!(status, StatusCode::OK);
    let reply: AnnounceReply = serde_json::from_slice(&reply).unwrap();
    assert_eq!(reply.role, Some(Role::Ingest));
    assert_eq!(reply.heartbeat_interval_s, Some(10));
}

#[tokio::test]
async fn the_streams_endpoint_long_polls_the_nodes_own_table() {
    let (_, r) = app();
    let unknown = signed_req("GET", "/streams?node_id=ingest-1&since=0&wait=1", "ingest-1", b"", now());
    assert_eq!(call(&r, unknown).await.0, StatusCode::NOT_FOUND, "announce first");
    announce_as(&r, "ingest-1", Role::Ingest).await;
    let (status, body) =
        call(&r, signed_req("GET", "/streams?node_id=ingest-1&since=0&wait=1", "ingest-1", b"", now())).await;
    assert_eq!(status, StatusCode::OK);
    let t = Table::parse(&body).unwrap();
    assert_eq!(t.role, Some(Role::Ingest));
    assert!(t.publish.contains_key("cam1"));
    let pq = format!("/streams?node_id=ingest-1&since={}&wait=1", t.version);
    let started = std::time::Instant::now();
    let (status, body) = call(&r, signed_req("GET", &pq, "ingest-1", b"", now())).await;
    assert_eq!((status, body.len()), (StatusCode::NOT_MODIFIED, 0), "nothing newer: 304, signed");
    assert!(started.elapsed() >= Duration::from_millis(900), "held for the wait");
    let spy = signed_req("GET", "/streams?node_id=ingest-1&since=0", "root-1", b"", now());
    assert_eq!(call(&r, spy).await.0, StatusCode::BAD_REQUEST, "a node reads its own table only");
}

#[tokio::test]
async fn a_change_wakes_a_waiting_poll() {
    let (app, r) = app();
    announce_as(&r, "ingest-1", Role::Ingest).await;
    let poll = waiting_poll(&app, &r, 30).await;
    app.store.lock().create_stream("cam2", "acme", &key_sha256_hex("k2"), "gen2", 0).unwrap();
    app.reload_publish();
    let (status, body) = tokio::time::timeout(Duration::from_secs(5), poll).await.expect("woken").unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(Table::parse(&body).unwrap().publish.contains_key("cam2"));
}

#[tokio::test]
async fn closing_answers_waiting_polls() {
    let (app, r) = app();
    announce_as(&r, "ingest-1", Role::Ingest).await;
    let poll = waiting_poll(&app, &r, 60).await;
    app.close();
    let (status, _) = tokio::time::timeout(Duration::from_secs(5), poll).await.expect("answered").unwrap();
    assert_eq!(status, StatusCode::NOT_MODIFIED);
}

/// A long poll of ingest-1 for a table newer than its current one, under way.
pub(crate) async fn waiting_poll(
    app: &App,
    r: &Router,
    wait: u64,
) -> tokio::task::JoinHandle<(StatusCode, Vec<u8>)> {
    let v = app.mesh.lock().table_version("ingest-1");
    let req = signed_req(
        "GET",
        &format!("/streams?node_id=ingest-1&since={v}&wait={wait}"),
        "ingest-1",
        b"",
        now(),
    );
    let r = r.clone();
    let poll = tokio::spawn(async move { call(&r, req).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    poll
}

#[tokio::test]
async fn auth_checks_keys_and_tokens() {
    let (app, r) = app();
    announce_as(&r, "ingest-1", Role::Ingest).await;
    announce_as(&r, "edge-1", Role::Relay).await;
    let ask = |node: &str, action: Action, key: Option<&str>, token: Option<&str>| {
        let body = serde_json::to_vec(&AuthRequest {
            node_id: node.into(),
            action,
            stream: "cam1".into(),
            key: key.map(str::to_string),
            token: token.map(str::to_string),
            addr: "192.0.2.1".into(),
        })
        .unwrap();
        signed_req("POST", "/auth", node, &body, now())
    };
    let reply = |b: Vec<u8>| serde_json::from_slice::<AuthReply>(&b).unwrap();
    assert!(reply(call(&r, ask("ingest-1", Action::Publish, Some("k1"), None)).await.1).allow);
    let no = reply(call(&r, ask("ingest-1", Action::Publish, Some("k2"), None)).await.1);
    assert_eq!((no.allow, no.reason.as_deref()), (false, Some("wrong key")));
    let no = reply(call(&r, ask("edge-1", Action::Publish, Some("k1"), None)).await.1);
    assert_eq!(no.reason.as_deref(), Some("wrong role"));
    let secret = app.mesh.lock().viewers().keys[0].secret.clone();
    let token = make_token_v2(&secret, "k1", "cam1", "gen1", now() + 60);
    assert!(reply(call(&r, ask("edge-1", Action::Play, None, Some(&token))).await.1).allow);
    let old = make_token_v2(&secret, "k1", "cam1", "gen1", now() - 1);
    assert_eq!(
        reply(call(&r, ask("edge-1", Action::Play, None, Some(&old))).await.1).reason.as_deref(),
        Some("expired token")
    );
    let far = make_token_v2(&secret, "k1", "cam1", "gen1", now() + 7200 + 400);
    assert_eq!(
        reply(call(&r, ask("edge-1", Action::Play, None, Some(&far))).await.1).reason.as_deref(),
        Some("token lifetime too long")
    );
    let legacy = mesh_core::token::make_viewer_token(&secret, "cam1", now() + 60);
    assert!(!reply(call(&r, ask("edge-1", Action::Play, None, Some(&legacy))).await.1).allow, "no legacy");
}

#[tokio::test]
async fn metrics_count_what_went_by_behind_the_admin_token() {
    let (_, r) = app();
    announce_as(&r, "edge-1", Role::Relay).await;
    let unsigned = Request::post("/auth").header(H_NODE, "edge-1").body(Body::from("{}")).unwrap();
    assert_eq!(call(&r, unsigned).await.0, StatusCode::UNAUTHORIZED);
    let get = |token: Option<&str>| {
        let b = Request::get("/admin/metrics");
        let b = match token {
            Some(t) => b.header(header::AUTHORIZATION, format!("Bearer {t}")),
            None => b,
        };
        b.body(Body::empty()).unwrap()
    };
    assert_eq!(r.clone().oneshot(get(None)).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    let resp = r.clone().oneshot(get(Some("adm"))).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(to_bytes(resp.into_body(), MAX_BODY).await.unwrap().to_vec()).unwrap();
    assert!(text.contains("mesh_master_announces_total 1\n"), "{text}");
    assert!(text.contains("mesh_master_requests_refused_total{reason=\"missing signature\"} 1\n"), "{text}");
    assert!(text.contains("mesh_master_nodes{role=\"relay\",alive=\"true\"} 1\n"), "{text}");
}

#[tokio::test]
async fn a_heartbeat_from_a_node_the_master_does_not_know_asks_for_an_announce() {
    let (_, r) = app();
    let hb = br#"{"node_id":"edge-1","role":"relay","table_version":0}"#;
    assert_eq!(
        call(&r, signed_req("POST", "/heartbeat", "edge-1", hb, now())).await.0,
        StatusCode::NOT_FOUND
    );
}

/// The `error` of a refusal.
fn reason(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body).unwrap()["error"].as_str().unwrap_or("").to_string()
}

#[tokio::test]
async fn bad_fields_get_400_with_a_reason_and_change_nothing() {
    let (app, r) = app();
    let ann = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut v: serde_json::Value = serde_json::from_slice(&announce_body("edge-1", Role::Relay)).unwrap();
        f(&mut v);
        signed_req("POST", "/announce", "edge-1", &serde_json::to_vec(&v).unwrap(), now())
    };
    type Patch = Box<dyn Fn(&mut serde_json::Value)>;
    let cases: Vec<(Patch, &str)> = vec![
        (Box::new(|v| v["rtmp_url"] = "".into()), "no rtmp_url for a relay node"),
        (Box::new(|v| v["rtmp_url"] = "rtmp://:1935".into()), "invalid rtmp_url: no host"),
        (Box::new(|v| v["rtmp_url"] = "rtmp://h:99999".into()), "invalid rtmp_url: invalid port"),
        (Box::new(|v| v["http_url"] = "ftp://h".into()), "invalid http_url: not an http:// or https:// url"),
        (Box::new(|v| v["version"] = "x".repeat(100).into()), "version longer than 64 bytes"),
    ];
    for (f, want) in cases {
        let (status, body) = call(&r, ann(&*f)).await;
        assert_eq!((status, reason(&body).as_str()), (StatusCode::BAD_REQUEST, want));
    }
    assert!(!app.mesh.lock().is_known("edge-1"), "no bad announce took effect");
    let (status, body) = call(&r, ann(&|v| v["role"] = "edge".into())).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(reason(&body).starts_with("bad body: unknown variant"), "{}", reason(&body));
    // An ingest needs no URL: nobody pushes to it.
    let (status, _) = call(
        &r,
        ann(&|v| {
            v["role"] = "ingest".into();
            v["rtmp_url"] = "".into();
        }),
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    announce_as(&r, "root-1", Role::RootRelay).await;
    let hb = |body: serde_json::Value| {
        signed_req("POST", "/heartbeat", "root-1", body.to_string().as_bytes(), now())
    };
    let base = serde_json::json!({"node_id": "root-1", "role": "root_relay", "table_version": 0});
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (serde_json::json!({"table_version": u64::MAX - 1}), "table_version larger than 9007199254740992"),
        (
            serde_json::json!({"streams": [{"stream": "a/b", "source": "broadcaster", "viewers": 0, "in_kbps": 0}]}),
            "invalid id in streams[0].stream",
        ),
        (
            serde_json::json!({"load": {"connections": u64::MAX, "in_kbps": 0, "out_kbps": 0}}),
            "load.connections larger than 9007199254740992",
        ),
    ];
    for (patch, want) in cases {
        let mut v = base.clone();
        for (k, x) in patch.as_object().unwrap() {
            v[k] = x.clone();
        }
        let (status, body) = call(&r, hb(v)).await;
        assert_eq!((status, reason(&body).as_str()), (StatusCode::BAD_REQUEST, want));
    }
    let before = app.mesh.lock().version();
    assert!(before < 1 << 40, "the refused version did not move the counter");
    let (status, body) = call(&r, hb(base)).await;
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
    let huge = format!("/streams?node_id=root-1&since={}&wait=0", u64::MAX);
    let (status, body) = call(&r, signed_req("GET", &huge, "root-1", b"", now())).await;
    assert_eq!(
        (status, reason(&body).as_str()),
        (StatusCode::BAD_REQUEST, "since larger than 9007199254740992")
    );
}

#[tokio::test]
async fn a_node_past_its_burst_gets_429_and_others_are_served() {
    let (_, r) = app();
    announce_as(&r, "edge-1", Role::Relay).await;
    announce_as(&r, "edge-2", Role::Relay).await;
    let hb = |id: &str| {
        let body = format!(r#"{{"node_id":"{id}","role":"relay","table_version":0}}"#);
        signed_req("POST", "/heartbeat", id, body.as_bytes(), now())
    };
    let mut statuses = vec![];
    for _ in 0..12 {
        statuses.push(call(&r, hb("edge-1")).await.0);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        9,
        "a burst of 10 with the announce"
    );
    let (status, body) = call(&r, hb("edge-1")).await;
    assert_eq!((status, reason(&body).as_str()), (StatusCode::TOO_MANY_REQUESTS, "too many requests"));
    assert_eq!(call(&r, hb("edge-2")).await.0, StatusCode::OK, "another node is served");
    // A stranger naming edge-2 spends nothing of edge-2's budget: it is refused before.
    let mut forged = hb("edge-2");
    forged.headers_mut().insert(H_SIGNATURE, HeaderValue::from_static("00"));
    for _ in 0..20 {
        assert_eq!(call(&r, forged.clone_for_test()).await.0, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(call(&r, hb("edge-2")).await.0, StatusCode::OK);
}

trait CloneForTest {
    fn clone_for_test(&self) -> Request;
}

impl CloneForTest for Request {
    fn clone_for_test(&self) -> Request {
        let mut b = Request::builder().method(self.method().clone()).uri(self.uri().clone());
        for (k, v) in self.headers() {
            b = b.header(k, v);
        }
        b.body(Body::from(r#"{"node_id":"edge-2","role":"relay","table_version":0}"#)).unwrap()
    }
}
