//! A raw NDJSON JSON-RPC 2.0 client over the unix socket: what a minimal client in any
//! language does (one JSON value per line each way). Unlike a real client library it
//! never retries or reconnects, so a test sees exactly what the daemon did.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};

/// How long one call may take before the test calls the daemon hung.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(20);

/// Why a call produced no result.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The daemon answered with a JSON-RPC error object.
    Rpc(Value),
    /// The connection closed (or broke) before the answer: the call is unacknowledged.
    Closed(String),
}

impl CallError {
    /// The JSON-RPC error code, when the daemon answered.
    pub fn code(&self) -> Option<i64> {
        match self {
            CallError::Rpc(e) => e.get("code").and_then(Value::as_i64),
            CallError::Closed(_) => None,
        }
    }

    /// The error message (or why the connection closed).
    pub fn message(&self) -> String {
        match self {
            CallError::Rpc(e) => e
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            CallError::Closed(why) => why.clone(),
        }
    }
}

/// One connection.
pub struct Rpc {
    rd: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    wr: OwnedWriteHalf,
    next_id: u64,
    /// Notifications received while waiting for answers.
    pub notes: Vec<Value>,
}

impl Rpc {
    /// Connects, panicking if the socket does not accept.
    pub async fn connect(sock: &Path) -> Rpc {
        Rpc::try_connect(sock)
            .await
            .unwrap_or_else(|e| panic!("connect {}: {e}", sock.display()))
    }

    /// Connects.
    pub async fn try_connect(sock: &Path) -> std::io::Result<Rpc> {
        let s = UnixStream::connect(sock).await?;
        let (r, w) = s.into_split();
        Ok(Rpc {
            rd: BufReader::new(r).lines(),
            wr: w,
            next_id: 1,
            notes: Vec::new(),
        })
    }

    async fn recv(&mut self) -> Result<Value, CallError> {
        let line = tokio::time::timeout(CALL_TIMEOUT, self.rd.next_line())
            .await
            .map_err(|_| CallError::Closed("timed out waiting for the daemon".into()))?
            .map_err(|e| CallError::Closed(format!("read failed: {e}")))?
            .ok_or_else(|| CallError::Closed("connection closed".into()))?;
        serde_json::from_str(&line)
            .map_err(|e| CallError::Closed(format!("not JSON from the daemon ({e}): {line}")))
    }

    /// Sends one request and waits for its answer: `Ok(result)` or why not.
    pub async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, CallError> {
        let id = self.next_id;
        self.next_id += 1;
        let mut line =
            json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params}).to_string();
        line.push('\n');
        self.wr
            .write_all(line.as_bytes())
            .await
            .map_err(|e| CallError::Closed(format!("write failed: {e}")))?;
        loop {
            let v = self.recv().await?;
            if v.get("id") == Some(&json!(id)) {
                if let Some(r) = v.get("result") {
                    return Ok(r.clone());
                }
                return Err(CallError::Rpc(v.get("error").cloned().unwrap_or(v)));
            }
            self.notes.push(v);
        }
    }

    /// A call that must succeed.
    pub async fn call(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params.clone()).await {
            Ok(v) => v,
            Err(e) => panic!("{method} {params} failed: {e:?}"),
        }
    }

    /// A call that must fail with a JSON-RPC error; returns the error object.
    pub async fn error(&mut self, method: &str, params: Value) -> Value {
        match self.try_call(method, params.clone()).await {
            Ok(v) => panic!("{method} {params} should have failed, got {v}"),
            Err(CallError::Rpc(e)) => e,
            Err(e) => panic!("{method} {params}: no answer: {e:?}"),
        }
    }

    /// Every session `session.list` shows: id → state.
    pub async fn session_states(&mut self) -> std::collections::BTreeMap<String, String> {
        let list = self.call("session.list", json!({})).await;
        list["sessions"]
            .as_array()
            .expect("sessions")
            .iter()
            .map(|s| {
                (
                    s["id"].as_str().expect("id").to_owned(),
                    s["state"].as_str().expect("state").to_owned(),
                )
            })
            .collect()
    }

    /// Every record of a session's journal through `journal.read` (paged).
    pub async fn read_all(&mut self, session_id: &str) -> Vec<Value> {
        let mut out: Vec<Value> = Vec::new();
        let mut since = 0u64;
        loop {
            let page = self
                .call(
                    "journal.read",
                    json!({"session_id": session_id, "since_seq": since, "limit": 1000}),
                )
                .await;
            let recs = page["records"].as_array().cloned().unwrap_or_default();
            out.extend(recs);
            if page["more"] != json!(true) {
                return out;
            }
            since = page["next_seq"].as_u64().expect("next_seq");
        }
    }
}
