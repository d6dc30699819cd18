//! ngx_rtmp_mesh: an nginx-rtmp module that runs one node of a live-streaming relay mesh.
//!
//! Layers with one direction (docs/architecture.md has the picture):
//!
//! 1. [`nginx`]: the nginx layer — bindings, the panic guard, pool values, strings, directive
//!    helpers, timers and tasks, the RTMP session handle and HTTP request helpers. It knows
//!    nothing of the mesh.
//! 2. One module per concern, each depending only on those below it:
//!    * [`conf`]: the rtmp{} directives and the node snapshot the hot path reads;
//!    * [`link`]: the link to the master or the table file (background threads, wake-ups);
//!    * [`auth`]: questions to the master's auth endpoint, asked once, answered to handles;
//!    * [`registry`]: the sessions this worker admitted;
//!    * [`route`]: route requests for streams a viewer wants here;
//!    * [`push`]: relay pushes of published streams;
//!    * [`transcode`]: on-demand ffmpeg per stream;
//!    * [`rtmp`]: RTMP admission (publish, play, closeStream) and table changes;
//!    * [`http`]: the edge's HLS and DASH, behind a token on every request;
//!    * [`figures`]: the node's figures from every worker's (a shared zone);
//!    * [`status`]: `mesh_status`, JSON and Prometheus.
//! 3. [`wiring`] (process start and exit, where each background answer goes) and [`module`]
//!    (the two nginx modules and their directive tables): the one place that knows everyone.
//!
//! Every decision is made by `mesh_core`, which has no nginx dependency.

mod nginx;

mod auth;
mod conf;
mod figures;
mod http;
mod link;
mod push;
mod registry;
mod route;
mod rtmp;
mod status;
mod transcode;

pub mod module;
mod wiring;
