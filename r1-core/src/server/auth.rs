//! Who may do what over the loopback listener (DESIGN §4): the master bearer token,
//! scoped tokens minted over the unix socket, single-use SSE tickets, and the Host
//! and Origin pins.

use std::collections::HashMap;
use std::sync::{Mutex, RwLock};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::error::{Error, ErrorKind, Result};
use crate::time_fmt;
use crate::token::{self, Token};

/// Longest a minted token may live.
pub const MAX_SCOPED_TTL: Duration = Duration::from_secs(30 * 24 * 3600);
/// How long an SSE ticket is good for.
pub const TICKET_TTL: Duration = Duration::from_secs(60);

/// What a caller may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Everything (unix socket, or the master token).
    Full,
    /// Read-only: list, get, subscribe, journal.
    Read,
    /// Read and drive one session (get, subscribe, journal, send, pause, resume, cancel).
    Session(String),
}

impl Scope {
    /// Parses `read` or `session:<id>`.
    pub fn parse(s: &str) -> Result<Scope> {
        if s == "read" {
            return Ok(Scope::Read);
        }
        if let Some(id) = s.strip_prefix("session:") {
            crate::session::hub::validate_session_id(id)?;
            return Ok(Scope::Session(id.to_owned()));
        }
        Err(Error::invalid_params(format!(
            "scope {s:?} is not \"read\" or \"session:<id>\""
        )))
    }

    /// The wire form.
    pub fn as_string(&self) -> String {
        match self {
            Scope::Full => "full".into(),
            Scope::Read => "read".into(),
            Scope::Session(id) => format!("session:{id}"),
        }
    }
}

#[derive(Debug, Clone)]
struct Scoped {
    scope: Scope,
    expires: Instant,
}

#[derive(Debug, Clone)]
struct Ticket {
    session_id: String,
    expires: Instant,
}

/// How a bearer was recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bearer {
    /// The master token of this generation.
    Master(u64),
    /// A scoped token.
    Scoped(Scope),
}

/// The daemon's credentials.
#[derive(Debug)]
pub struct Auth {
    master: RwLock<Token>,
    generation: watch::Sender<u64>,
    scoped: Mutex<HashMap<String, Scoped>>,
    tickets: Mutex<HashMap<String, Ticket>>,
    /// Origins beyond the daemon's own (`--allow-origin`).
    pub extra_origins: Vec<String>,
}

impl Auth {
    /// Credentials with `master` as the bearer token.
    pub fn new(master: Token, extra_origins: Vec<String>) -> Auth {
        Auth {
            master: RwLock::new(master),
            generation: watch::channel(0).0,
            scoped: Mutex::new(HashMap::new()),
            tickets: Mutex::new(HashMap::new()),
            extra_origins,
        }
    }

    /// The current master token.
    pub fn master(&self) -> Token {
        self.master
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the master token; WebSocket connections that authenticated with the
    /// old one watch [`Auth::generation`] and close.
    pub fn rotate(&self) -> Result<Token> {
        let fresh = Token::generate()?;
        *self.master.write().unwrap_or_else(|p| p.into_inner()) = fresh.clone();
        self.generation.send_modify(|g| *g += 1);
        Ok(fresh)
    }

    /// Changes whenever the master token is rotated.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Recognises a presented bearer value (constant-time against the master).
    pub fn check(&self, presented: &str) -> Option<Bearer> {
        if self
            .master
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .matches(presented)
        {
            return Some(Bearer::Master(*self.generation.borrow()));
        }
        let now = Instant::now();
        let mut scoped = self.scoped.lock().unwrap_or_else(|p| p.into_inner());
        scoped.retain(|_, s| s.expires > now);
        // Compare against every live scoped token in constant time each, so the
        // lookup itself does not leak which prefix matched.
        let mut found = None;
        for (tok, s) in scoped.iter() {
            let t = Token::parse(tok).ok();
            if t.is_some_and(|t| t.matches(presented)) {
                found = Some(s.scope.clone());
            }
        }
        found.map(Bearer::Scoped)
    }

    /// The live token (master or scoped) whose [`key_id`] is `id`, for the
    /// `/v1/hello` proof of a client that holds that token.
    pub fn token_for_key_id(&self, id: &str) -> Option<String> {
        let master = self.master();
        if key_id(master.expose()) == id {
            return Some(master.expose().to_owned());
        }
        let now = Instant::now();
        let scoped = self.scoped.lock().unwrap_or_else(|p| p.into_inner());
        scoped
            .iter()
            .find(|(tok, s)| s.expires > now && key_id(tok) == id)
            .map(|(tok, _)| tok.clone())
    }

    /// `daemon.mint_token`: a scoped bearer for `ttl`.
    pub fn mint(&self, scope: Scope, ttl: Duration) -> Result<(String, String)> {
        if ttl.is_zero() || ttl > MAX_SCOPED_TTL {
            return Err(Error::invalid_params(format!(
                "ttl_s must be between 1 and {}",
                MAX_SCOPED_TTL.as_secs()
            )));
        }
        let tok = Token::generate()?.expose().to_owned();
        let expires_at = time_fmt::format_seconds(time::OffsetDateTime::now_utc() + ttl);
        self.scoped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                tok.clone(),
                Scoped {
                    scope,
                    expires: Instant::now() + ttl,
                },
            );
        Ok((tok, expires_at))
    }

    /// `POST /v1/sse-ticket`: a single-use, 60 s, read-only ticket for one session.
    pub fn issue_ticket(&self, session_id: &str) -> (String, String) {
        let ticket = token::random_hex(24);
        let expires_at = time_fmt::format_seconds(time::OffsetDateTime::now_utc() + TICKET_TTL);
        let mut t = self.tickets.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        t.retain(|_, v| v.expires > now);
        t.insert(
            ticket.clone(),
            Ticket {
                session_id: session_id.to_owned(),
                expires: now + TICKET_TTL,
            },
        );
        (ticket, expires_at)
    }

    /// Redeems a ticket for `session_id` (consumed whether or not it matches).
    pub fn redeem_ticket(&self, ticket: &str, session_id: &str) -> Result<()> {
        let taken = self
            .tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(ticket);
        match taken {
            Some(t) if t.expires > Instant::now() && t.session_id == session_id => Ok(()),
            Some(t) if t.expires <= Instant::now() => Err(Error::new(
                ErrorKind::Unauthorized,
                "the SSE ticket has expired; ask for a new one",
            )),
            Some(_) => Err(Error::new(
                ErrorKind::Unauthorized,
                "the SSE ticket is for another session",
            )),
            None => Err(Error::new(
                ErrorKind::Unauthorized,
                "unknown or already used SSE ticket",
            )),
        }
    }

    /// Test hook: ages every ticket by `by`.
    #[doc(hidden)]
    pub fn age_tickets(&self, by: Duration) {
        for t in self
            .tickets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values_mut()
        {
            t.expires = t.expires.checked_sub(by).unwrap_or_else(Instant::now);
        }
    }

    /// Test hook: ages every scoped token by `by`.
    #[doc(hidden)]
    pub fn age_scoped(&self, by: Duration) {
        for t in self
            .scoped
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values_mut()
        {
            t.expires = t.expires.checked_sub(by).unwrap_or_else(Instant::now);
        }
    }

    /// Origins allowed to talk to a daemon on `port`.
    pub fn origin_allowed(&self, origin: &str, port: u16) -> bool {
        origin == format!("http://127.0.0.1:{port}")
            || origin == format!("http://localhost:{port}")
            || origin == "tauri://localhost"
            || self.extra_origins.iter().any(|o| o == origin)
    }

    /// True for the daemon's own origin (no CORS headers needed).
    pub fn is_own_origin(origin: &str, port: u16) -> bool {
        origin == format!("http://127.0.0.1:{port}") || origin == format!("http://localhost:{port}")
    }

    /// The Host pin: `127.0.0.1:<port>`, `localhost:<port>` or `[::1]:<port>`.
    pub fn host_allowed(host: &str, port: u16) -> bool {
        let host = host.to_ascii_lowercase();
        host == format!("127.0.0.1:{port}")
            || host == format!("localhost:{port}")
            || host == format!("[::1]:{port}")
    }
}

/// A token's public name: the first 16 hex digits of SHA-256 of its text. A client
/// sends it to `/v1/hello` so the daemon proves knowledge of *that* token (master or
/// scoped) without the token itself crossing the wire.
pub fn key_id(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(token.as_bytes());
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_pin() {
        assert!(Auth::host_allowed("127.0.0.1:80", 80));
        assert!(Auth::host_allowed("LOCALHOST:80", 80));
        assert!(Auth::host_allowed("[::1]:80", 80));
        assert!(!Auth::host_allowed("localhost:81", 80));
        assert!(!Auth::host_allowed("evil.example:80", 80));
        assert!(!Auth::host_allowed("", 80));
        assert!(!Auth::host_allowed("127.0.0.1", 80));
    }

    #[test]
    fn rotate_invalidates_old_master() {
        let a = Auth::new(Token::generate().unwrap(), vec![]);
        let old = a.master();
        assert!(matches!(a.check(old.expose()), Some(Bearer::Master(0))));
        let new = a.rotate().unwrap();
        assert!(a.check(old.expose()).is_none());
        assert!(matches!(a.check(new.expose()), Some(Bearer::Master(1))));
    }

    #[test]
    fn key_ids_find_live_tokens_only() {
        let a = Auth::new(Token::generate().unwrap(), vec![]);
        let m = a.master();
        assert_eq!(
            a.token_for_key_id(&key_id(m.expose())).as_deref(),
            Some(m.expose())
        );
        let (t, _) = a.mint(Scope::Read, Duration::from_secs(60)).unwrap();
        assert_eq!(a.token_for_key_id(&key_id(&t)), Some(t.clone()));
        a.age_scoped(Duration::from_secs(61));
        assert_eq!(a.token_for_key_id(&key_id(&t)), None);
        assert_eq!(key_id("x").len(), 16);
    }

    #[test]
    fn scoped_tokens_expire() {
        let a = Auth::new(Token::generate().unwrap(), vec![]);
        let (t, _) = a.mint(Scope::Read, Duration::from_secs(60)).unwrap();
        assert_eq!(a.check(&t), Some(Bearer::Scoped(Scope::Read)));
        a.age_scoped(Duration::from_secs(61));
        assert_eq!(a.check(&t), None);
    }

    #[test]
    fn tickets_are_single_use_and_bound() {
        let a = Auth::new(Token::generate().unwrap(), vec![]);
        let id = "sess_00000000-0000-4000-8000-000000000000";
        let (t, _) = a.issue_ticket(id);
        assert!(a.redeem_ticket(&t, id).is_ok());
        assert!(a.redeem_ticket(&t, id).is_err());
        let (t2, _) = a.issue_ticket(id);
        a.age_tickets(Duration::from_secs(61));
        assert!(a.redeem_ticket(&t2, id).is_err());
    }
}
