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

/// The call a connection is running, boxed: the dispatcher's future is large and
/// lives only while a call runs, not for the connection's whole life. One at a
/// time per connection (unix socket and WebSocket alike).
pub(crate) type RunningCall<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

/// Waits for the running call; never resolves without one (for a `select!` arm).
pub(crate) async fn running<T>(call: &mut Option<RunningCall<'_, T>>) -> T {
    match call {
        Some(c) => c.as_mut().await,
        None => std::future::pending().await,
    }
}
