//! The method table: every JSON-RPC method, its params, who may call it, and on
//! which transports. `rpc.discover` renders it as OpenRPC, the dispatcher checks
//! access against it, and the C and Python parity tests walk it.

use serde_json::{Value, json};

/// Who may call a method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Any authenticated caller, whatever its scope.
    Public,
    /// Read scope and up (`read`, `session:<id>` for its session, full).
    Read,
    /// Full scope, or `session:<id>` for its own session where the method takes one.
    Write,
    /// Unix socket only.
    Privileged,
}

/// One parameter.
#[derive(Debug, Clone, Copy)]
pub struct Param {
    /// Name (by-name params only).
    pub name: &'static str,
    /// JSON Schema type.
    pub ty: &'static str,
    /// Required?
    pub required: bool,
    /// What it is.
    pub doc: &'static str,
}

/// One method.
#[derive(Debug, Clone, Copy)]
pub struct Method {
    /// `noun.verb`.
    pub name: &'static str,
    /// One line.
    pub summary: &'static str,
    /// Params.
    pub params: &'static [Param],
    /// Result fields, for the document.
    pub result: &'static [&'static str],
    /// Who may call it.
    pub access: Access,
    /// Needs a streaming transport (unix socket or WebSocket).
    pub streaming: bool,
}

const fn p(name: &'static str, ty: &'static str, required: bool, doc: &'static str) -> Param {
    Param {
        name,
        ty,
        required,
        doc,
    }
}

const SID: Param = p("session_id", "string", true, "sess_<uuid>");

/// Every method the daemon answers.
pub const METHODS: &[Method] = &[
    Method {
        name: "daemon.hello",
        summary: "Handshake: check the protocol version and the daemon's instance id.",
        params: &[
            p(
                "protocol_version",
                "integer",
                true,
                "the client's protocol version (1)",
            ),
            p("client", "string", false, "client name, for the log"),
        ],
        result: &["protocol_version", "version", "instance_id", "pid"],
        access: Access::Public,
        streaming: false,
    },
    Method {
        name: "daemon.info",
        summary: "Facts about the running daemon.",
        params: &[],
        result: &[
            "version",
            "pid",
            "instance_id",
            "started_at",
            "uptime_s",
            "sessions",
            "sock_path",
            "port",
            "home",
            "log_path",
        ],
        access: Access::Public,
        streaming: false,
    },
    Method {
        name: "daemon.shutdown",
        summary: "Graceful shutdown after answering.",
        params: &[p(
            "grace_s",
            "number",
            false,
            "seconds drivers get to stop (default 5)",
        )],
        result: &["accepted"],
        access: Access::Write,
        streaming: false,
    },
    Method {
        name: "daemon.subscribe",
        summary: "Stream the daemon's bus log as $/event notifications.",
        params: &[p(
            "since_seq",
            "integer",
            false,
            "replay records after this seq; absent = live only",
        )],
        result: &["sub", "current_seq"],
        access: Access::Read,
        streaming: true,
    },
    Method {
        name: "daemon.rotate_token",
        summary: "Replace the bearer token; HTTP/WebSocket clients on the old one are refused.",
        params: &[],
        result: &["rotated_at"],
        access: Access::Privileged,
        streaming: false,
    },
    Method {
        name: "daemon.mint_token",
        summary: "Mint a scoped bearer token for HTTP/WebSocket.",
        params: &[
            p("scope", "string", true, "\"read\" or \"session:<id>\""),
            p(
                "ttl_s",
                "integer",
                false,
                "lifetime in seconds (default 3600)",
            ),
        ],
        result: &["token", "expires_at"],
        access: Access::Privileged,
        streaming: false,
    },
    Method {
        name: "rpc.discover",
        summary: "This document.",
        params: &[],
        result: &["openrpc", "info", "methods"],
        access: Access::Public,
        streaming: false,
    },
    Method {
        name: "session.start",
        summary: "Start a session in a directory.",
        params: &[
            p(
                "workdir",
                "string",
                true,
                "absolute path of an existing writable directory outside R1_HOME",
            ),
            p(
                "driver",
                "string",
                false,
                "shell (default), exec, or a registered driver",
            ),
            p("command", "array", false, "exec: argv"),
            p("env", "object", false, "extra environment for children"),
            p("name", "string", false, "a human name"),
        ],
        result: &[
            "session_id",
            "name",
            "workdir",
            "driver",
            "state",
            "started_at",
            "epoch",
        ],
        access: Access::Write,
        streaming: false,
    },
    Method {
        name: "session.list",
        summary: "Every session.",
        params: &[p("state", "string", false, "only sessions in this state")],
        result: &["sessions"],
        access: Access::Read,
        streaming: false,
    },
    Method {
        name: "session.get",
        summary: "One session, with its record count and reload result.",
        params: &[SID],
        result: &[
            "id",
            "name",
            "workdir",
            "driver",
            "state",
            "started_at",
            "last_seq",
            "epoch",
            "record_count",
            "reload",
        ],
        access: Access::Read,
        streaming: false,
    },
    Method {
        name: "session.send",
        summary: "Send input; answered after the user.input record is fsync'd.",
        params: &[SID, p("text", "string", true, "the input")],
        result: &["accepted", "seq"],
        access: Access::Write,
        streaming: false,
    },
    Method {
        name: "session.pause",
        summary: "Pause: hold queued input, stop running work.",
        params: &[SID],
        result: &["paused_at"],
        access: Access::Write,
        streaming: false,
    },
    Method {
        name: "session.resume",
        summary: "Resume a paused session, or restart the driver of one interrupted by a restart.",
        params: &[SID],
        result: &["resumed_at"],
        access: Access::Write,
        streaming: false,
    },
    Method {
        name: "session.cancel",
        summary: "End the session.",
        params: &[SID, p("reason", "string", false, "why, for the record")],
        result: &["ended_at"],
        access: Access::Write,
        streaming: false,
    },
    Method {
        name: "session.delete",
        summary: "Cancel if needed and remove the session's journal.",
        params: &[SID],
        result: &["deleted_at"],
        access: Access::Write,
        streaming: false,
    },
    Method {
        name: "session.subscribe",
        summary: "Stream a session's records as $/event notifications.",
        params: &[
            SID,
            p(
                "since_seq",
                "integer",
                false,
                "replay records after this seq (0 = from the start); absent = live only",
            ),
            p(
                "epoch",
                "string",
                false,
                "the epoch the client's seq belongs to",
            ),
        ],
        result: &["sub", "current_seq", "epoch", "reset"],
        access: Access::Read,
        streaming: true,
    },
    Method {
        name: "session.unsubscribe",
        summary: "Stop a subscription.",
        params: &[p("sub", "integer", true, "the subscription id")],
        result: &[],
        access: Access::Read,
        streaming: true,
    },
    Method {
        name: "journal.read",
        summary: "A page of a session's journal.",
        params: &[
            SID,
            p(
                "since_seq",
                "integer",
                false,
                "records after this seq (default 0)",
            ),
            p(
                "epoch",
                "string",
                false,
                "the epoch the client's seq belongs to",
            ),
            p(
                "limit",
                "integer",
                false,
                "at most this many records (default 1000, max 10000)",
            ),
        ],
        result: &["records", "next_seq", "epoch", "more", "reset"],
        access: Access::Read,
        streaming: false,
    },
];

/// Looks a method up.
pub fn find(name: &str) -> Option<&'static Method> {
    METHODS.iter().find(|m| m.name == name)
}

/// The OpenRPC document of [`METHODS`].
pub fn openrpc() -> Value {
    let methods: Vec<Value> = METHODS
        .iter()
        .map(|m| {
            let params: Vec<Value> = m
                .params
                .iter()
                .map(|p| json!({"name": p.name, "required": p.required, "description": p.doc, "schema": {"type": p.ty}}))
                .collect();
            let props: serde_json::Map<String, Value> = m.result.iter().map(|f| ((*f).to_owned(), json!({}))).collect();
            json!({
                "name": m.name,
                "summary": m.summary,
                "paramStructure": "by-name",
                "params": params,
                "result": {"name": "result", "schema": {"type": "object", "properties": props}},
                "x-r1-access": match m.access {
                    Access::Public => "public",
                    Access::Read => "read",
                    Access::Write => "write",
                    Access::Privileged => "unix-only",
                },
                "x-r1-streaming": m.streaming,
            })
        })
        .collect();
    json!({
        "openrpc": "1.2.6",
        "info": {"title": "r1 daemon", "version": crate::VERSION, "x-protocol-version": crate::discovery::PROTOCOL_VERSION},
        "methods": methods,
    })
}
