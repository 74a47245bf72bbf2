//! Sessions: the hub, states, the index file and journal subscriptions.

pub mod hub;
pub mod index;
pub mod state;
pub mod subscribe;
