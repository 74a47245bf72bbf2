//! `r1_client_*` and `r1_subscription_*`: talk to the daemon over its unix socket.
//! (Wired onto `r1_core::client::BlockingClient`.)

/// A connection to the daemon. Opaque to C.
pub struct R1Client {
    _todo: (),
}

/// A subscription to a session's records or the daemon bus. Opaque to C.
pub struct R1Subscription {
    _todo: (),
}
