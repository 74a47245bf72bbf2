//! JSON-RPC 2.0 envelopes, exactly as the specification says: ids echoed, `"id":null`
//! when the id cannot be known, notifications never answered, batches element by
//! element, an empty batch is one -32600.

use serde::de::value::MapAccessDeserializer;
use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::codes;
use crate::error::RpcErrorObject;

/// Longest batch accepted (DESIGN §4).
pub const MAX_BATCH: usize = 1000;

/// A request id: a string, a number or null (kept as the exact JSON value).
pub type Id = Value;

/// One well-formed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `None` for a notification (no `id` member at all).
    pub id: Option<Id>,
    /// The method name.
    pub method: String,
    /// `params`: absent, an object or an array.
    pub params: Option<Value>,
}

/// One element of what a client sent.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    /// A valid request or notification.
    Request(Request),
    /// Not a valid request: answer with this error and id (`null` when unknown).
    Invalid {
        /// The id if one could be read, else null.
        id: Id,
        /// The error to answer.
        error: RpcErrorObject,
    },
}

/// What a message parsed to.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    /// A single request.
    Single(Item),
    /// A batch (non-empty).
    Batch(Vec<Item>),
    /// Answer with exactly this (parse error, empty batch, batch too large).
    Reject(RpcErrorObject),
}

fn err(code: i64, kind: &str, message: impl Into<String>) -> RpcErrorObject {
    RpcErrorObject {
        code,
        message: message.into(),
        data: Some(serde_json::json!({ "kind": kind })),
    }
}

/// Parses one message (a line, a body, a WebSocket text frame).
///
/// A batch is read element by element: the first [`MAX_BATCH`] are built, any
/// further ones are only checked as JSON and counted, so a message of 16 MiB of
/// `[1,1,1,…]` costs the daemon a thousand values, not eight million.
pub fn parse(bytes: &[u8]) -> Incoming {
    let top: Top = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            return Incoming::Reject(err(
                codes::PARSE_ERROR,
                "parse",
                format!("parse error: {e}"),
            ));
        }
    };
    match top {
        Top::Batch { len: 0, .. } => Incoming::Reject(err(
            codes::INVALID_REQUEST,
            "invalid_request",
            "empty batch",
        )),
        Top::Batch { len, .. } if len > MAX_BATCH => Incoming::Reject(err(
            codes::TOO_LARGE,
            "too_large",
            format!("batch of {len} requests is over the limit of {MAX_BATCH}"),
        )),
        Top::Batch { items, .. } => Incoming::Batch(items.into_iter().map(item).collect()),
        Top::Other(other) => Incoming::Single(item(other)),
    }
}

/// A message's top level: a batch (its first [`MAX_BATCH`] elements and how many
/// there were) or any other JSON value.
enum Top {
    Batch { items: Vec<Value>, len: usize },
    Other(Value),
}

impl<'de> Deserialize<'de> for Top {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Top, D::Error> {
        d.deserialize_any(TopVisitor)
    }
}

struct TopVisitor;

impl<'de> Visitor<'de> for TopVisitor {
    type Value = Top;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON-RPC message")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Top, A::Error> {
        let mut items = Vec::new();
        while items.len() < MAX_BATCH {
            match seq.next_element::<Value>()? {
                Some(v) => items.push(v),
                None => {
                    let len = items.len();
                    return Ok(Top::Batch { items, len });
                }
            }
        }
        let mut len = items.len();
        while seq.next_element::<IgnoredAny>()?.is_some() {
            len += 1;
        }
        Ok(Top::Batch { items, len })
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Top, A::Error> {
        Value::deserialize(MapAccessDeserializer::new(map)).map(Top::Other)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Top, E> {
        Ok(Top::Other(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Top, E> {
        Ok(Top::Other(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Top, E> {
        Ok(Top::Other(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Top, E> {
        Ok(Top::Other(Value::from(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Top, E> {
        Ok(Top::Other(Value::from(v)))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Top, E> {
        Ok(Top::Other(Value::Null))
    }
}

fn valid_id(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Null)
}

fn item(v: Value) -> Item {
    let Value::Object(mut obj) = v else {
        return Item::Invalid {
            id: Value::Null,
            error: err(
                codes::INVALID_REQUEST,
                "invalid_request",
                "a request must be a JSON object",
            ),
        };
    };
    let id = match obj.remove("id") {
        None => None,
        Some(id) if valid_id(&id) => Some(id),
        Some(_) => {
            return Item::Invalid {
                id: Value::Null,
                error: err(
                    codes::INVALID_REQUEST,
                    "invalid_request",
                    "id must be a string, a number or null",
                ),
            };
        }
    };
    let reply_id = id.clone().unwrap_or(Value::Null);
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Item::Invalid {
            id: reply_id,
            error: err(
                codes::INVALID_REQUEST,
                "invalid_request",
                "jsonrpc must be \"2.0\"",
            ),
        };
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        _ => {
            return Item::Invalid {
                id: reply_id,
                error: err(
                    codes::INVALID_REQUEST,
                    "invalid_request",
                    "method must be a string",
                ),
            };
        }
    };
    let params = match obj.remove("params") {
        None => None,
        Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
        Some(_) => {
            return Item::Invalid {
                id: reply_id,
                error: err(
                    codes::INVALID_REQUEST,
                    "invalid_request",
                    "params must be an object or an array",
                ),
            };
        }
    };
    Item::Request(Request { id, method, params })
}

// The envelopes are serialized from borrowed structs, their fields in the sorted
// order a `serde_json::Map` (a BTreeMap here) would give, so the bytes are the same
// as building a map — without deep-copying every result into one first (about 40%
// of a `daemon.info` round trip's instructions, per callgrind).

#[derive(serde::Serialize)]
struct SuccessLine<'a> {
    id: &'a Id,
    jsonrpc: &'static str,
    result: &'a Value,
}

#[derive(serde::Serialize)]
struct FailureLine<'a> {
    /// As a `Value`, so its fields come sorted too (not the hot path).
    error: Value,
    id: &'a Id,
    jsonrpc: &'static str,
}

#[derive(serde::Serialize)]
struct NotificationLine<'a> {
    jsonrpc: &'static str,
    method: &'a str,
    params: &'a Value,
}

/// Serializes an envelope; JSON values and the error object always serialize, so
/// the fallback (an internal error line) is only a guard against a future type.
fn to_line(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|e| {
        format!(
            r#"{{"error":{{"code":-32603,"message":"cannot encode the answer: {}"}},"id":null,"jsonrpc":"2.0"}}"#,
            e.to_string().replace(['"', '\\'], "'")
        )
    })
}

/// `{"id":…,"jsonrpc":"2.0","result":…}`
pub fn success(id: &Id, result: &Value) -> String {
    to_line(&SuccessLine {
        id,
        jsonrpc: "2.0",
        result,
    })
}

/// `{"error":{…},"id":…,"jsonrpc":"2.0"}`
pub fn failure(id: &Id, error: &RpcErrorObject) -> String {
    to_line(&FailureLine {
        error: serde_json::to_value(error).unwrap_or(Value::Null),
        id,
        jsonrpc: "2.0",
    })
}

/// A notification line: `{"jsonrpc":"2.0","method":…,"params":…}`.
pub fn notification(method: &str, params: &Value) -> String {
    to_line(&NotificationLine {
        jsonrpc: "2.0",
        method,
        params,
    })
}

/// Joins batch answers: `[a,b]`, or nothing when every element was a notification.
pub fn batch(answers: Vec<String>) -> Option<String> {
    if answers.is_empty() {
        return None;
    }
    let mut s = String::with_capacity(answers.iter().map(|a| a.len() + 1).sum::<usize>() + 2);
    s.push('[');
    for (i, a) in answers.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(a);
    }
    s.push(']');
    Some(s)
}

#[cfg(test)]
mod tests {

    /// The borrowed envelopes give exactly the bytes the map-built ones did.
    #[test]
    fn envelopes_match_the_map_built_bytes() {
        fn by_map(pairs: Vec<(&str, Value)>) -> String {
            let mut m = serde_json::Map::new();
            for (k, v) in pairs {
                m.insert(k.into(), v);
            }
            Value::Object(m).to_string()
        }
        let ids = [
            Value::Null,
            serde_json::json!(7),
            serde_json::json!("a\"b\u{1}"),
            serde_json::json!(-1.5),
        ];
        let results = [
            serde_json::json!({"z": 1, "a": [1, {"y": null, "b": "é"}], "m": "x\ny"}),
            serde_json::json!(null),
            serde_json::json!("text"),
            serde_json::json!([]),
        ];
        let err = RpcErrorObject {
            code: -32602,
            message: "bad \"params\"".into(),
            data: Some(serde_json::json!({"kind": "invalid_params", "b": [1]})),
        };
        for id in &ids {
            for r in &results {
                assert_eq!(
                    success(id, r),
                    by_map(vec![
                        ("jsonrpc", "2.0".into()),
                        ("result", r.clone()),
                        ("id", id.clone())
                    ])
                );
                assert_eq!(
                    notification("$/event", r),
                    by_map(vec![
                        ("jsonrpc", "2.0".into()),
                        ("method", "$/event".into()),
                        ("params", r.clone())
                    ])
                );
            }
            assert_eq!(
                failure(id, &err),
                by_map(vec![
                    ("jsonrpc", "2.0".into()),
                    ("error", serde_json::to_value(&err).unwrap()),
                    ("id", id.clone()),
                ])
            );
        }
    }
    use super::*;

    /// With serde_json's `raw_value` feature on, an object whose only key is
    /// `$serde_json::private::RawValue` was parsed as the JSON text in its string
    /// value — by a fresh parser with a fresh recursion limit, so nesting such strings
    /// got a message past the 128-level limit (about 2,600 levels in 16 MiB). The
    /// feature is off now: that key is an ordinary key.
    #[test]
    fn regression_raw_value_token_is_an_ordinary_key() {
        let msg = br#"{"jsonrpc":"2.0","id":1,"method":"m","params":{"$serde_json::private::RawValue":"[1,2]"}}"#;
        match parse(msg) {
            Incoming::Single(Item::Request(r)) => assert_eq!(
                r.params,
                Some(serde_json::json!({"$serde_json::private::RawValue": "[1,2]"}))
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn batches_are_counted_past_the_limit() {
        let batch = |n: usize| format!("[{}]", vec!["1"; n].join(","));
        assert!(
            matches!(parse(batch(MAX_BATCH).as_bytes()), Incoming::Batch(v) if v.len() == MAX_BATCH)
        );
        match parse(batch(MAX_BATCH + 1).as_bytes()) {
            Incoming::Reject(e) => {
                assert_eq!(e.code, -32005);
                assert!(
                    e.message.contains("batch of 1001 requests"),
                    "{}",
                    e.message
                );
            }
            other => panic!("{other:?}"),
        }
        // Elements past the limit are still parsed: bad JSON there is -32700.
        let bad = format!("[{},1,]", vec!["1"; MAX_BATCH + 5].join(","));
        assert!(matches!(parse(bad.as_bytes()), Incoming::Reject(e) if e.code == -32700));
        // Scalars and objects are single messages as before.
        for (text, want) in [
            ("1.5", serde_json::json!(1.5)),
            ("-3", serde_json::json!(-3)),
            ("\"x\"", serde_json::json!("x")),
            ("true", serde_json::json!(true)),
            ("null", Value::Null),
        ] {
            match parse(text.as_bytes()) {
                Incoming::Single(Item::Invalid { error, .. }) => {
                    assert_eq!(error.code, -32600, "{text}")
                }
                other => panic!("{text}: {other:?} (want an invalid {want})"),
            }
        }
    }

    #[test]
    fn spec_shapes() {
        assert!(
            matches!(parse(b"{\"jsonrpc\":\"2.0\",\"method\":\"foobar, \"params\":\"bar\", \"baz]"), Incoming::Reject(e) if e.code == -32700)
        );
        assert!(matches!(parse(b"[]"), Incoming::Reject(e) if e.code == -32600));
        match parse(b"[1]") {
            Incoming::Batch(items) => assert!(
                matches!(&items[0], Item::Invalid { id: Value::Null, error } if error.code == -32600)
            ),
            other => panic!("{other:?}"),
        }
        match parse(b"{\"jsonrpc\":\"2.0\",\"method\":1,\"params\":\"bar\"}") {
            Incoming::Single(Item::Invalid { error, .. }) => assert_eq!(error.code, -32600),
            other => panic!("{other:?}"),
        }
        match parse(b"{\"jsonrpc\":\"2.0\",\"method\":\"update\",\"params\":[1,2,3,4,5]}") {
            Incoming::Single(Item::Request(r)) => assert!(r.id.is_none()),
            other => panic!("{other:?}"),
        }
        match parse(b"{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"id\":null}") {
            Incoming::Single(Item::Request(r)) => assert_eq!(r.id, Some(Value::Null)),
            other => panic!("{other:?}"),
        }
    }
}
