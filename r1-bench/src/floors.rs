//! Floor servers: the least a server must do to answer the same client with the same
//! bytes. Each runs as its own process (`r1-bench floor …`) on a tokio multi-thread
//! runtime, like the daemon, and prints one line (its port, or `ready`) when it listens.

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, UnixListener};
use tokio_tungstenite::tungstenite::Message;

/// `r1-bench floor …`.
#[derive(Debug, clap::Subcommand)]
pub enum FloorCmd {
    /// NDJSON echo on a unix socket: each line comes back as is.
    UnixEcho {
        /// Socket path.
        #[arg(long)]
        socket: PathBuf,
    },
    /// HTTP/1.1 keep-alive echo (hyper): the POST body comes back as the response.
    HttpEcho,
    /// WebSocket echo (tokio-tungstenite): each text message comes back.
    WsEcho,
    /// Unix socket fan-out: subscribers send `sub\n` and get `ok\n`; a `go N\n` from
    /// another connection makes the server write FILE to every subscriber (once N
    /// have registered).
    Fanout {
        /// Socket path.
        #[arg(long)]
        socket: PathBuf,
        /// The bytes every subscriber receives.
        #[arg(long)]
        file: PathBuf,
    },
    /// The same over WebSocket: each line of FILE is one text message.
    WsFanout {
        /// The lines every subscriber receives.
        #[arg(long)]
        file: PathBuf,
    },
}

/// Runs a floor until killed.
pub fn run(cmd: FloorCmd) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        match cmd {
            FloorCmd::UnixEcho { socket } => unix_echo(socket).await,
            FloorCmd::HttpEcho => http_echo().await,
            FloorCmd::WsEcho => ws_echo().await,
            FloorCmd::Fanout { socket, file } => fanout(socket, file).await,
            FloorCmd::WsFanout { file } => ws_fanout(file).await,
        }
    })
}

fn ready(line: &str) {
    println!("{line}");
}

async fn unix_echo(socket: PathBuf) -> anyhow::Result<()> {
    let _ = std::fs::remove_file(&socket);
    let l = UnixListener::bind(&socket)?;
    ready("ready");
    loop {
        let (s, _) = l.accept().await?;
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut r = BufReader::with_capacity(64 * 1024, r);
            let mut line = Vec::with_capacity(4096);
            loop {
                line.clear();
                match r.read_until(b'\n', &mut line).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if w.write_all(&line).await.is_err() {
                    return;
                }
            }
        });
    }
}

async fn http_echo() -> anyhow::Result<()> {
    let l = TcpListener::bind(("127.0.0.1", 0)).await?;
    ready(&l.local_addr()?.port().to_string());
    loop {
        let (s, _) = l.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(
                |req: hyper::Request<hyper::body::Incoming>| async move {
                    let body = req
                        .into_body()
                        .collect()
                        .await
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let resp = hyper::Response::builder()
                        .header("content-type", "application/json")
                        .body(Full::new(body))
                        .unwrap_or_else(|_| hyper::Response::new(Full::new(Bytes::new())));
                    Ok::<_, Infallible>(resp)
                },
            );
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                .await;
        });
    }
}

async fn ws_echo() -> anyhow::Result<()> {
    let l = TcpListener::bind(("127.0.0.1", 0)).await?;
    ready(&l.local_addr()?.port().to_string());
    loop {
        let (s, _) = l.accept().await?;
        let _ = s.set_nodelay(true);
        tokio::spawn(async move {
            let Ok(mut ws) = tokio_tungstenite::accept_async(s).await else {
                return;
            };
            while let Some(Ok(m)) = ws.next().await {
                if let Message::Text(t) = m
                    && ws.send(Message::Text(t)).await.is_err()
                {
                    return;
                }
            }
        });
    }
}

type Subscribers<W> = Arc<Mutex<Vec<W>>>;

async fn fanout(socket: PathBuf, file: PathBuf) -> anyhow::Result<()> {
    let blob = Bytes::from(std::fs::read(&file)?);
    let _ = std::fs::remove_file(&socket);
    let l = UnixListener::bind(&socket)?;
    let subs: Subscribers<tokio::net::unix::OwnedWriteHalf> = Arc::new(Mutex::new(Vec::new()));
    ready("ready");
    loop {
        let (s, _) = l.accept().await?;
        let subs = Arc::clone(&subs);
        let blob = blob.clone();
        tokio::spawn(async move {
            let (r, mut w) = s.into_split();
            let mut r = BufReader::new(r);
            let mut line = String::new();
            if r.read_line(&mut line).await.is_err() {
                return;
            }
            match line.trim() {
                "sub" => {
                    if w.write_all(b"ok\n").await.is_ok() {
                        subs.lock().unwrap_or_else(|p| p.into_inner()).push(w);
                    }
                }
                go if go.starts_with("go") => {
                    let all = take_subs(&subs, go).await;
                    for mut w in all {
                        let blob = blob.clone();
                        tokio::spawn(async move {
                            // 64 KiB writes, like the daemon's buffered connection writer.
                            for chunk in blob.chunks(64 * 1024) {
                                if w.write_all(chunk).await.is_err() {
                                    return;
                                }
                            }
                        });
                    }
                }
                _ => {}
            }
            // Keep the read half open until the peer goes.
            let mut sink = Vec::new();
            let _ = tokio::io::AsyncReadExt::read_to_end(&mut r, &mut sink).await;
        });
    }
}

/// `go N`: waits until N subscribers are registered (a subscriber hears `ok` just
/// before it is added to the list), then takes them all.
async fn take_subs<W>(subs: &Subscribers<W>, go: &str) -> Vec<W> {
    let want: usize = go
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    for _ in 0..10_000 {
        if subs.lock().unwrap_or_else(|p| p.into_inner()).len() >= want {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    std::mem::take(&mut *subs.lock().unwrap_or_else(|p| p.into_inner()))
}

type WsSink = futures_util::stream::SplitSink<
    tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>,
    Message,
>;

async fn ws_fanout(file: PathBuf) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&file)?;
    let lines: Arc<Vec<String>> = Arc::new(text.lines().map(str::to_owned).collect());
    let l = TcpListener::bind(("127.0.0.1", 0)).await?;
    let subs: Subscribers<WsSink> = Arc::new(Mutex::new(Vec::new()));
    ready(&l.local_addr()?.port().to_string());
    loop {
        let (s, _) = l.accept().await?;
        let _ = s.set_nodelay(true);
        let subs = Arc::clone(&subs);
        let lines = Arc::clone(&lines);
        tokio::spawn(async move {
            let Ok(ws) = tokio_tungstenite::accept_async(s).await else {
                return;
            };
            let (mut tx, mut rx) = ws.split();
            let first = match rx.next().await {
                Some(Ok(Message::Text(t))) => t.to_string(),
                _ => return,
            };
            match first.as_str() {
                "sub" => {
                    if tx.send(Message::text("ok")).await.is_ok() {
                        subs.lock().unwrap_or_else(|p| p.into_inner()).push(tx);
                    }
                }
                go if go.starts_with("go") => {
                    let all = take_subs(&subs, go).await;
                    for mut tx in all {
                        let lines = Arc::clone(&lines);
                        tokio::spawn(async move {
                            // Queue frames and flush in batches, as a server draining a
                            // queue does.
                            for (i, l) in lines.iter().enumerate() {
                                if tx.feed(Message::text(l.clone())).await.is_err() {
                                    return;
                                }
                                if i % 64 == 63 && tx.flush().await.is_err() {
                                    return;
                                }
                            }
                            let _ = tx.flush().await;
                        });
                    }
                }
                _ => {}
            }
            while let Some(Ok(_)) = rx.next().await {}
        });
    }
}
