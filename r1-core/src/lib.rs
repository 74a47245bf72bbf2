//! r1-core: everything the r1 session daemon and its clients do.
//!
//! Layout (one concept per module): [`paths`] (home, socket dir, modes, atomic writes),
//! [`lock`] (one daemon per home), [`discovery`] (`daemon.json`), [`token`] (bearer
//! secrets), [`journal`] (the append-only record of a session), [`driver`] (what a
//! session runs), [`session`] (the hub), [`rpc`] (JSON-RPC), [`server`] (unix socket
//! and loopback HTTP/WebSocket), [`daemon`] (start and stop), [`client`] (discover,
//! dial and auto-spawn, `Client`, `BlockingClient`).
#![warn(missing_docs)]

pub mod client;
pub mod daemon;
pub mod discovery;
pub mod driver;
pub mod error;
pub mod journal;
pub mod lock;
pub mod paths;
pub mod rpc;
pub mod server;
pub mod service;
pub mod session;
pub mod time_fmt;
pub mod token;

pub use client::{
    BlockingClient, BlockingSubscription, Client, DialOptions, StartOptions, SubEvent,
    Subscription, WsOptions, dial, dial_ws, discover,
};
pub use daemon::{Daemon, DaemonConfig, DaemonHandle};
pub use error::{Error, ErrorKind, Result, RpcErrorObject};

/// This build's version (`CARGO_PKG_VERSION`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
