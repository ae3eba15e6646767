//! The control socket: a versioned request/response protocol (one JSON object per
//! line), the daemon's server side and the CLI's client side.

pub mod client;
pub mod protocol;
pub mod server;
pub mod status;
