//! The JSON-RPC dispatcher: any bytes → `Dispatcher::handle` answers with a
//! well-formed JSON-RPC response (or batch), or nothing for notifications; never a
//! panic, never a hang, never the master token in an answer.
//!
//! Each input is handled twice against a real daemon (see `r1_fuzz`): as a unix
//! socket caller with a streaming connection (subscriptions start, privileged methods
//! allowed) and as a `POST /v1/rpc` caller without one. Inputs that would shut the
//! daemon down are skipped.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use r1_core::rpc::dispatch::CallCtx;
use r1_core::server::auth::Scope;
use r1_core::server::state::{Caller, Transport};

fuzz_target!(|data: &[u8]| {
    if r1_fuzz::asks_shutdown(data) {
        return;
    }
    let guard = r1_fuzz::daemon();
    let h = guard.as_ref().expect("daemon");
    let data = &*h.substitute(data);
    let state = h.handle.state();
    r1_fuzz::runtime().block_on(async {
        for transport in [Transport::Unix, Transport::Http] {
            let caller = Caller {
                transport,
                scope: Scope::Full,
            };
            let (conn, outbound) = state.register(caller.clone());
            let streaming = (transport == Transport::Unix).then_some(&conn);
            let mut ctx = CallCtx::new(&caller, streaming);
            let answer =
                tokio::time::timeout(Duration::from_secs(20), h.rpc.handle(&mut ctx, data))
                    .await
                    .expect("the dispatcher answers within 20 s");
            ctx.replied();
            if let Some(a) = &answer {
                r1_fuzz::check_rpc_answer(a);
                let master = h.handle.token();
                assert!(
                    !a.contains(master.expose()),
                    "an answer carries the master token: {a}"
                );
            }
            state.unregister(&conn);
            conn.closed.cancel();
            drop(conn);
            drop(outbound);
        }
    });
});
