//! The reference master of ngx_rtmp_mesh (docs/master.md): the mesh's state and placement
//! ([`mesh`]), its database ([`store`], [`viewer_keys`]) and its HTTP side ([`server`],
//! [`admin_viewers`]).

pub mod admin_viewers;
pub mod mesh;
pub mod metrics;
pub mod server;
pub mod store;
pub mod viewer_keys;
