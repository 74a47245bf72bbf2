//! Transports: the unix socket and the loopback HTTP/WebSocket listener, with the
//! state and credentials they share.

pub mod auth;
pub mod console;
pub mod gate;
pub mod http;
mod memory;
pub mod rest;
pub mod sse;
pub mod state;
pub mod unix;
pub mod ws;
