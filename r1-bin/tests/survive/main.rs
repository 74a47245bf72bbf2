//! Hardening tests: the daemon's promises under crashes, damage, a full disk and other
//! users (see `docs/hardening.md`). One binary, a module per area, real `r1 serve`
//! processes throughout.

#[path = "../common/mod.rs"]
mod common;

mod crash;
mod damage;
mod diskfull;
mod foreign_user;
mod soak;
mod stall;
mod starts;
