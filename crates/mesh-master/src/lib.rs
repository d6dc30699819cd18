//! The reference master of ngx_rtmp_mesh (docs/master.md): the mesh's state and placement
//! ([`mesh`]), its database ([`store`], [`viewer_keys`]), its HTTP side ([`server`], with the
//! node endpoints in [`node_api`], what nodes are told in [`published`], their keys in [`creds`], nonces in [`nonces`], field rules in
//! [`validate`] and budgets in [`rates`], suspects probed by [`probe`], the admin API in [`admin`], [`admin_creds`] and
//! [`admin_viewers`]) and the listener that guards it ([`listener`], over HTTPS with [`tls`]).

pub mod admin;
pub mod admin_creds;
pub mod admin_viewers;
pub mod creds;
pub mod guards;
pub mod hop_keys;
pub mod listener;
pub mod mesh;
pub mod metrics;
pub mod node_api;
pub mod nonces;
pub mod probe;
pub mod published;
pub mod rates;
pub mod server;
pub mod store;
pub mod tls;
pub mod validate;
pub mod viewer_keys;
