//! One file per subcommand.

pub mod serve;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(cli.home, args),
    }
}

/// Stops a running daemon in `home` gracefully (if there is one) and waits until
/// its process has exited.
pub fn stop_running_daemon(home: &r1_core::paths::Home) -> r1_core::Result<()> {
    use std::io::{BufRead, BufReader, Write};
    let Ok(disc) = r1_core::discovery::read(home) else {
        return Ok(());
    };
    if !r1_core::discovery::pid_alive(disc.pid) {
        return Ok(());
    }
    let Some(sock) = disc.sock_path.as_deref() else {
        return Ok(());
    };
    let io = |e: std::io::Error| r1_core::Error::io("cannot ask the daemon to stop at", sock, e);
    let mut s = std::os::unix::net::UnixStream::connect(sock).map_err(io)?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .map_err(io)?;
    s.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"daemon.shutdown\"}\n")
        .map_err(io)?;
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).map_err(io)?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while r1_core::discovery::pid_alive(disc.pid) {
        if std::time::Instant::now() > deadline {
            return Err(r1_core::Error::new(
                r1_core::ErrorKind::Timeout,
                format!("the daemon (pid {}) did not exit within 15s", disc.pid),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}
