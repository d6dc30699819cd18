//! The reference master of ngx_rtmp_mesh (docs/master.md): the mesh's state and placement
//! ([`mesh`]), its database ([`store`]) and its HTTP side ([`server`]).

pub mod mesh;
pub mod metrics;
pub mod server;
pub mod store;
