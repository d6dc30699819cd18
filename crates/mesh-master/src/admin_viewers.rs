//! The admin API's viewer side: tokens minted for streams that exist, for at most the maximum
//! lifetime; the viewer keys listed (never their secrets), rotated with a grace, and a retiring
//! key dropped early.
//!
//! | call | does |
//! |---|---|
//! | `POST /admin/tokens` `{"stream", "ttl_s"}` | a token for an existing stream (ttl 1 s to `--max-token-ttl`, default 1 h) |
//! | `GET /admin/viewer-keys` | ids, creation, end of grace, which one signs |
//! | `POST /admin/viewer-keys` `{"grace_s"}` | a new signing key; the others retire after `grace_s` |
//! | `DELETE /admin/viewer-keys/{id}` | drop a retiring key now |

// Early returns carry a whole response (axum's `Response` is 128 bytes); it is the cold path.
#![allow(clippy::result_large_err)]

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use tracing::info;

use mesh_core::name::is_valid_id;
use mesh_core::viewer::StreamId;

use crate::admin::{admin_body, admin_error, store_error};
use crate::server::{now, random_hex, App};
use crate::viewer_keys::Dropped;

/// A misspelt field is refused rather than ignored: `{"stream": "cam1", "ttl": 60}` would
/// otherwise make a token of the default lifetime (an hour) where a minute was meant.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TokenBody {
    stream: String,
    ttl_s: Option<u64>,
}

/// A token's lifetime when the call gives none (or the maximum, if that is shorter).
const DEFAULT_TTL_S: u64 = 3600;

/// `POST /admin/tokens`: a viewer token for a stream that exists.
pub(crate) async fn mint(State(app): State<Arc<App>>, body: Body) -> Response {
    let b: TokenBody = match admin_body(body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    if !is_valid_id(&b.stream) {
        return admin_error(StatusCode::BAD_REQUEST, "bad stream name");
    }
    let m = app.mesh.lock();
    let id = m.stream_identity(&b.stream);
    if id == StreamId::Unknown {
        return admin_error(StatusCode::NOT_FOUND, "no such stream");
    }
    let max = m.viewers().max_ttl_s;
    let ttl = b.ttl_s.unwrap_or(DEFAULT_TTL_S.min(max));
    if ttl == 0 || ttl > max {
        return admin_error(StatusCode::BAD_REQUEST, &format!("ttl_s: 1 to {max} seconds (--max-token-ttl)"));
    }
    match m.viewers().mint(&b.stream, id, ttl, now()) {
        Ok((token, expires)) => {
            let kid = m.viewers().signing_key().map(|k| k.id.clone());
            axum::Json(json!({ "stream": b.stream, "token": token, "expires": expires, "kid": kid }))
                .into_response()
        }
        Err(e) => admin_error(StatusCode::BAD_REQUEST, &format!("cannot make a token: {e}")),
    }
}

/// `GET /admin/viewer-keys`.
pub(crate) async fn list(State(app): State<Arc<App>>) -> Response {
    let max = app.mesh.lock().viewers().max_ttl_s;
    let info = app.store.lock().viewer_key_info();
    match info {
        Ok(keys) => axum::Json(json!({ "keys": keys, "max_token_ttl_s": max })).into_response(),
        Err(e) => store_error(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RotateBody {
    grace_s: Option<u64>,
}

/// `POST /admin/viewer-keys`: a new signing key. The keys it replaces verify their tokens for
/// `grace_s` more seconds (default: the maximum token lifetime, so every token they signed
/// lives out its expiry; 0 refuses them with the next tables).
pub(crate) async fn rotate(State(app): State<Arc<App>>, body: Body) -> Response {
    // No body: the default grace. A misspelt field is refused rather than ignored, as a grace
    // of the default when 0 was meant would keep a leaked key working.
    let bytes = match axum::body::to_bytes(body, 1 << 16).await {
        Ok(b) => b,
        Err(_) => return admin_error(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    let b: RotateBody = if bytes.iter().all(u8::is_ascii_whitespace) {
        RotateBody { grace_s: None }
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(b) => b,
            Err(e) => return admin_error(StatusCode::BAD_REQUEST, &format!("bad body: {e}")),
        }
    };
    let max = app.mesh.lock().viewers().max_ttl_s;
    let grace = b.grace_s.unwrap_or(max);
    if grace > max {
        return admin_error(
            StatusCode::BAD_REQUEST,
            &format!("grace_s: 0 to {max} seconds (no token lives longer)"),
        );
    }
    let t = now();
    let retire_at = t.saturating_add(grace);
    let made = app.store.lock().rotate_viewer_key(&random_hex(32), retire_at, t);
    let id = match made {
        Ok(id) => id,
        Err(e) => return store_error(e),
    };
    if let Err(e) = app.reload_viewer_keys() {
        return store_error(e);
    }
    info!(key = %id, grace_s = grace, "admin: viewer key rotated");
    let retiring: Vec<_> = app
        .mesh
        .lock()
        .viewers()
        .keys
        .iter()
        .filter_map(|k| k.not_after.map(|n| json!({ "id": k.id, "not_after": n })))
        .collect();
    (StatusCode::CREATED, axum::Json(json!({ "id": id, "retiring": retiring }))).into_response()
}

/// `DELETE /admin/viewer-keys/{id}`: end a retiring key's grace now.
pub(crate) async fn drop_key(State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let r = app.store.lock().drop_viewer_key(&id);
    match r {
        Ok(Dropped::Done) => {
            if let Err(e) = app.reload_viewer_keys() {
                return store_error(e);
            }
            info!(key = %id, "admin: viewer key dropped");
            StatusCode::NO_CONTENT.into_response()
        }
        Ok(Dropped::NoSuchKey) => admin_error(StatusCode::NOT_FOUND, "no such key"),
        Ok(Dropped::SigningKey) => {
            admin_error(StatusCode::CONFLICT, "the signing key: rotate first (POST /admin/viewer-keys)")
        }
        Err(e) => store_error(e),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use axum::extract::Request;
    use axum::http::header;
    use axum::Router;
    use serde_json::Value;
    use tower::ServiceExt;

    use mesh_core::role::Role;
    use mesh_core::table::Table;
    use mesh_core::wire::{Action, AuthReply, AuthRequest};

    use crate::server::tests::{announce_as, app, call, signed_req};
    use crate::server::{now, App};

    async fn admin(r: &Router, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, "Bearer adm")
            .body(axum::body::Body::from(body.unwrap_or("").to_string()))
            .unwrap();
        let resp = r.clone().oneshot(req).await.unwrap();
        let status = resp.status().as_u16();
        let bytes = to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn token(r: &Router, stream: &str, ttl: u64) -> String {
        let (st, v) =
            admin(r, "POST", "/admin/tokens", Some(&format!(r#"{{"stream":"{stream}","ttl_s":{ttl}}}"#)))
                .await;
        assert_eq!(st, 200, "{v}");
        v["token"].as_str().unwrap().to_string()
    }

    /// The master's own answer for a play with `token`: allowed, or the reason.
    async fn play(r: &Router, stream: &str, token: &str) -> Result<(), String> {
        let body = serde_json::to_vec(&AuthRequest {
            node_id: "edge-1".into(),
            action: Action::Play,
            stream: stream.into(),
            key: None,
            token: Some(token.into()),
            addr: "192.0.2.1".into(),
        })
        .unwrap();
        let (_, b) = call(r, signed_req("POST", "/auth", "edge-1", &body, now())).await;
        let a: AuthReply = serde_json::from_slice(&b).unwrap();
        if a.allow {
            Ok(())
        } else {
            Err(a.reason.unwrap_or_default())
        }
    }

    /// The master's whole answer for a play with `token`.
    async fn play_reply(r: &Router, stream: &str, token: &str) -> AuthReply {
        let body = serde_json::to_vec(&AuthRequest {
            node_id: "edge-1".into(),
            action: Action::Play,
            stream: stream.into(),
            key: None,
            token: Some(token.into()),
            addr: "192.0.2.1".into(),
        })
        .unwrap();
        let (_, b) = call(r, signed_req("POST", "/auth", "edge-1", &body, now())).await;
        serde_json::from_slice(&b).unwrap()
    }

    #[tokio::test]
    async fn an_allow_lasts_no_longer_than_the_token_or_its_key() {
        // Red team: the node caches an allow for its ttl_s (60 s) and admits with it, so a
        // token with seconds to live, or one of a key retiring in seconds, played a minute on.
        let (_app, r) = app();
        announce_as(&r, "edge-1", Role::Relay).await;
        let long = token(&r, "cam1", 600).await;
        let a = play_reply(&r, "cam1", &long).await;
        assert!(a.allow);
        assert_eq!(a.ttl_s, Some(60), "a long token: the usual minute");
        let short = token(&r, "cam1", 5).await;
        let a = play_reply(&r, "cam1", &short).await;
        assert!(a.allow && a.ttl_s.unwrap() <= 5, "{:?}", a.ttl_s);
        let (st, _) = admin(&r, "POST", "/admin/viewer-keys", Some(r#"{"grace_s": 10}"#)).await;
        assert_eq!(st, 201);
        let a = play_reply(&r, "cam1", &long).await;
        assert!(a.allow && a.ttl_s.unwrap() <= 10, "a retiring key: {:?}", a.ttl_s);
        assert!(a.ttl_s.unwrap() >= 1);
    }

    fn edge_table(app: &App) -> Table {
        Table::parse(&app.mesh.lock().table_json("edge-1").unwrap().1).unwrap()
    }

    #[tokio::test]
    async fn tokens_only_for_streams_that_exist_and_never_longer_than_the_maximum() {
        let (app, r) = app();
        announce_as(&r, "edge-1", Role::Relay).await;
        let t = token(&r, "cam1", 60).await;
        assert!(t.starts_with("v2.k1."), "{t}");
        assert_eq!(edge_table(&app).verify_viewer("cam1", &t, now()), Ok(()), "the edge verifies it locally");
        assert_eq!(play(&r, "cam1", &t).await, Ok(()));
        let (st, v) = admin(&r, "POST", "/admin/tokens", Some(r#"{"stream":"nope"}"#)).await;
        assert_eq!((st, v["error"].as_str()), (404, Some("no such stream")));
        for ttl in ["0", "7201", "18446744073709551615"] {
            let (st, v) =
                admin(&r, "POST", "/admin/tokens", Some(&format!(r#"{{"stream":"cam1","ttl_s":{ttl}}}"#)))
                    .await;
            assert_eq!(st, 400, "{ttl}: {v}");
            assert!(v["error"].as_str().unwrap().contains("ttl_s: 1 to 7200 seconds"), "{v}");
        }
        let (st, _) =
            admin(&r, "POST", "/admin/tokens", Some(r#"{"stream":"cam1","ttl_s":18446744073709551616}"#))
                .await;
        assert_eq!(st, 400, "past u64: a bad body");
        let (st, v) = admin(&r, "POST", "/admin/tokens", Some(r#"{"stream":"cam1","ttl_s":7200}"#)).await;
        assert_eq!(st, 200);
        // Red team: a misspelt lifetime was ignored, and the token lived the default hour.
        for body in [r#"{"stream":"cam1","ttl":60}"#, r#"{"stream":"cam1","ttl_S":60}"#] {
            let (st, v) = admin(&r, "POST", "/admin/tokens", Some(body)).await;
            assert_eq!(st, 400, "{body}: {v}");
            assert!(v["error"].as_str().unwrap().contains("unknown field"), "{v}");
        }
        assert!(v["expires"].as_u64().unwrap() <= now() + 7200);
    }

    #[tokio::test]
    async fn a_rotation_keeps_old_tokens_for_the_grace_then_refuses_them() {
        let (app, r) = app();
        announce_as(&r, "edge-1", Role::Relay).await;
        let old = token(&r, "cam1", 600).await;
        let v0 = app.mesh.lock().table_version("edge-1");
        let (st, v) = admin(&r, "POST", "/admin/viewer-keys", Some(r#"{"grace_s": 60}"#)).await;
        assert_eq!(st, 201, "{v}");
        assert_eq!(v["id"], "k2");
        let end = v["retiring"][0]["not_after"].as_u64().unwrap();
        assert_eq!(v["retiring"][0]["id"], "k1");
        assert!((now() + 59..=now() + 60).contains(&end), "{v}");
        // The edge's table changed: both keys, the new one signing.
        assert!(app.mesh.lock().table_version("edge-1") > v0);
        let edge = edge_table(&app);
        assert_eq!(edge.viewer_keys.iter().map(|k| k.id.as_str()).collect::<Vec<_>>(), ["k2", "k1"]);
        assert_eq!(edge.verify_viewer("cam1", &old, now()), Ok(()), "in the grace");
        assert_eq!(edge.verify_viewer("cam1", &old, end + 1), Err(mesh_core::viewer::TokenError::RetiredKey));
        assert_eq!(play(&r, "cam1", &old).await, Ok(()));
        let new = token(&r, "cam1", 600).await;
        assert!(new.starts_with("v2.k2."), "{new}");
        // The list shows ids and graces, never a secret.
        let (st, list) = admin(&r, "GET", "/admin/viewer-keys", None).await;
        assert_eq!(st, 200);
        assert_eq!(list["keys"][0]["signing"], true);
        assert_eq!(list["keys"][1]["not_after"].as_u64(), Some(end));
        assert_eq!(list["max_token_ttl_s"], 7200);
        for k in edge.viewer_keys.iter() {
            assert!(!list.to_string().contains(&k.secret));
        }
        // Refused: a grace longer than any token lives, a misspelt field, dropping the signer.
        assert_eq!(admin(&r, "POST", "/admin/viewer-keys", Some(r#"{"grace_s": 7201}"#)).await.0, 400);
        assert_eq!(admin(&r, "POST", "/admin/viewer-keys", Some(r#"{"grace": 0}"#)).await.0, 400);
        assert_eq!(admin(&r, "DELETE", "/admin/viewer-keys/k2", None).await.0, 409);
        assert_eq!(admin(&r, "DELETE", "/admin/viewer-keys/k9", None).await.0, 404);
        // The grace ends (here: the admin ends it): old tokens refused, new ones not.
        assert_eq!(admin(&r, "DELETE", "/admin/viewer-keys/k1", None).await.0, 204);
        assert_eq!(play(&r, "cam1", &old).await, Err("bad token".into()));
        assert_eq!(
            edge_table(&app).verify_viewer("cam1", &old, now()),
            Err(mesh_core::viewer::TokenError::UnknownKey)
        );
        assert_eq!(play(&r, "cam1", &new).await, Ok(()));
        // A rotation with no grace: the previous key's tokens are refused at once.
        assert_eq!(admin(&r, "POST", "/admin/viewer-keys", None).await.0, 201, "no body: the default grace");
        let (st, _) = admin(&r, "POST", "/admin/viewer-keys", Some(r#"{"grace_s": 0}"#)).await;
        assert_eq!(st, 201);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        assert_eq!(play(&r, "cam1", &new).await, Err("retired key".into()));
        // The sweep drops keys whose grace has ended, from the tables and the database.
        app.sweep();
        assert_eq!(edge_table(&app).viewer_keys.len(), 1);
        assert_eq!(app.store.lock().viewer_keys().unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_stream_deleted_and_created_again_refuses_the_old_tokens() {
        let (app, r) = app();
        announce_as(&r, "edge-1", Role::Relay).await;
        let old = token(&r, "cam1", 600).await;
        assert_eq!(admin(&r, "DELETE", "/admin/streams/cam1", None).await.0, 204);
        assert_eq!(play(&r, "cam1", &old).await, Err("bad token".into()));
        assert_eq!(admin(&r, "POST", "/admin/tokens", Some(r#"{"stream":"cam1"}"#)).await.0, 404);
        admin(&r, "POST", "/admin/accounts", Some(r#"{"name":"other"}"#)).await;
        let (st, v) =
            admin(&r, "POST", "/admin/streams", Some(r#"{"stream":"cam1","account":"other"}"#)).await;
        assert_eq!(st, 201);
        assert_ne!(v["id"], "gen1", "a new identity");
        assert_eq!(play(&r, "cam1", &old).await, Err("bad token".into()), "the old token stays refused");
        assert!(edge_table(&app).verify_viewer("cam1", &old, now()).is_err());
        let new = token(&r, "cam1", 600).await;
        assert_eq!(play(&r, "cam1", &new).await, Ok(()));
        assert_eq!(edge_table(&app).verify_viewer("cam1", &new, now()), Ok(()));
    }
}
