//! The loopback HTTP/WebSocket listener (DESIGN §4).

use tokio::net::TcpListener;

use crate::rpc::dispatch::Dispatcher;

/// Serves the loopback routes until shutdown.
pub async fn serve(listener: TcpListener, rpc: Dispatcher) {
    let shutdown = rpc.state().shutdown.clone();
    loop {
        tokio::select! {
            a = listener.accept() => { drop(a); }
            _ = shutdown.cancelled() => return,
        }
    }
}
