//! One file per subcommand.

pub mod chat;
pub mod ctl;
pub mod doctor;
pub mod serve;

use std::process::ExitCode;

use crate::cli::{Cli, Command};

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(cli.home, args),
        Command::Ctl(args) => ctl::run(cli.home, args),
        Command::Chat(args) => chat::run(cli.home, args),
    }
}

/// Stops a running daemon in `home` gracefully (if there is one) and waits until
/// its process has exited. Used by `r1 serve --install` so the service takes over.
pub fn stop_running_daemon(home: &r1_core::paths::Home) -> r1_core::Result<()> {
    use r1_core::client::{BlockingClient, DialOptions};
    let opts = DialOptions::new()
        .home(home.root())
        .spawn(false)
        .client_name("r1 serve --install");
    let client = match BlockingClient::dial(opts) {
        Ok(c) => c,
        Err(e) if e.kind() == r1_core::ErrorKind::DaemonNotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    let pid = client.handshake().pid;
    client.shutdown(None)?;
    drop(client);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    while r1_core::discovery::pid_alive(pid) {
        if std::time::Instant::now() > deadline {
            return Err(r1_core::Error::new(
                r1_core::ErrorKind::Timeout,
                format!("the daemon (pid {pid}) did not exit within 15s"),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Ok(())
}
