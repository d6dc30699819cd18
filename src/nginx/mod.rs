//! The nginx layer: everything that touches nginx's raw structures, and nothing of the mesh.
//!
//! * [`ffi`]: the bindings (nginx-sys, and nginx-rtmp-module's headers through bindgen);
//! * [`util`]: the panic guard of every entry point, Rust values in nginx pools, nginx strings,
//!   the event loop's clocks;
//! * [`directive`]: what every directive handler shares (its arguments, nginx's wording);
//! * [`event`]: timers and tasks on the event loop, and a wake-up socket for other threads;
//! * [`rtmp`]: the RTMP session handle, nginx-rtmp's handler chains and relay pushes;
//! * [`http`]: HTTP request helpers (short answers, headers, the client's address);
//! * [`shm`]: a shared memory zone of one slot per worker process;
//! * [`access`]: who a request comes from, as nginx's `allow`/`deny` rules see it.
//!
//! Everything above this layer calls these safe(ish) wrappers instead of dereferencing nginx
//! pointers; each `unsafe` block here says why it holds.

pub mod access;
pub mod directive;
pub mod event;
pub mod ffi;
pub mod http;
pub mod rtmp;
pub mod shm;
pub mod util;
