//! JSON-RPC 2.0: envelopes, the method table, the dispatcher and the error codes.

pub mod codes;
pub mod dispatch;
pub mod envelope;
pub mod methods;
