//! ngx_rtmp_mesh: an nginx-rtmp module that runs one node of a live-streaming relay mesh.
//!
//! One concern per file, as nginx-rtmp-module does:
//! * [`module`]: the module definition, directives and chain hooks;
//! * [`conf`]: configuration (directives, create/merge, the node snapshot);
//! * [`directive`]: what every directive handler shares (arguments, nginx's error wording);
//! * [`session`]: publish/play admission at the head of nginx-rtmp's chains;
//! * [`push`]: relay pushes of published streams, their retries and reconciliation;
//! * [`registry`]: the admitted sessions, checked again when the table or role changes;
//! * [`auth`]: the auth endpoint, asked without blocking (netcall-style suspend/resume);
//! * [`route`]: route requests for streams a viewer wants here;
//! * [`runtime`]: the background threads and the wake-up socket back to the event loop;
//! * [`http`]: the edge's HTTP side (HLS, DASH) with held manifest requests;
//! * [`transcode`]: on-demand ffmpeg per stream, its death pipe, restarts and idle stop;
//! * [`status`]: `mesh_status`, JSON and Prometheus;
//! * [`util`]: FFI helpers (panic guard, pool-owned values).
//!
//! Every decision is made by `mesh_core`, which has no nginx dependency.

mod auth;
mod conf;
mod directive;
mod ffi;
mod http;
pub mod module;
mod protocol;
mod push;
mod registry;
mod route;
mod runtime;
mod session;
mod status;
mod transcode;
mod util;
mod waiting;
