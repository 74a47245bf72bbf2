//! The client side: find the daemon ([`discover`]), reach it ([`dial`], with
//! single-flight auto-spawn; [`dial_ws`] over loopback WebSocket), and talk to it
//! ([`Client`], [`BlockingClient`], [`Subscription`]). DESIGN §8.
//!
//! Files: `dial.rs` (options, discovery checks, unix handshake), `spawn.rs`
//! (`r1 serve --detach`, the spawn lock), `conn.rs` (one pipelined JSON-RPC
//! connection), `ws.rs` (WebSocket transport and the `/v1/hello` proof), `api.rs`
//! (`Client` and a typed helper per method), `subscription.rs` (resuming event
//! streams), `blocking.rs` (the blocking facade), `types.rs` (result shapes).

mod api;
mod blocking;
mod conn;
mod dial;
mod spawn;
mod subscription;
mod types;
mod ws;

pub use api::Client;
pub use blocking::{BlockingClient, BlockingSubscription};
pub use dial::{
    DEFAULT_CALL_TIMEOUT, DEFAULT_DIAL_TIMEOUT, DEFAULT_RECONNECT_FOR, DialOptions, dial, discover,
};
pub use subscription::Subscription;
pub use types::{
    DaemonNotice, Event, Hello, Info, MintedToken, ReadPage, Reset, SessionInfo, StartOptions,
    StartResult, SubEvent, SubscribeReply,
};
pub use ws::{BEARER_PROTOCOL, WsOptions, dial_ws, hello_proof};
