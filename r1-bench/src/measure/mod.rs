//! The measurements, numbered as in docs/benchmarks.md. Each returns its rows; a
//! measurement that cannot run here (a feature not in this build) returns rows that
//! say "not measured: <reason>", never a number.

mod acks;
mod cli;
mod fanout;
mod journal;
mod restart;
mod rpc;
mod scale;
mod seek;

use std::path::{Path, PathBuf};

use crate::report::Row;

/// What every measurement gets.
pub struct Ctx {
    /// Small sizes.
    pub quick: bool,
    /// The `r1` binary.
    pub r1: PathBuf,
    /// This binary (for the bench daemon and floors).
    pub bench: PathBuf,
    /// Scratch space, removed after the run.
    pub dir: PathBuf,
}

impl Ctx {
    /// `full` in a full run, `quick` in a quick one.
    pub fn size<T>(&self, full: T, quick: T) -> T {
        if self.quick { quick } else { full }
    }

    /// A fresh directory under the scratch space.
    pub fn fresh_dir(&self, name: &str) -> anyhow::Result<PathBuf> {
        let p = self.dir.join(name);
        if p.exists() {
            std::fs::remove_dir_all(&p)?;
        }
        std::fs::create_dir_all(&p)?;
        Ok(p)
    }

    /// A short socket path in the scratch space.
    pub fn sock(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.sock"))
    }
}

/// One measurement.
pub struct Measurement {
    /// Its number.
    pub number: u32,
    /// Short name.
    pub name: &'static str,
    /// Runs it.
    pub run: fn(&Ctx) -> anyhow::Result<Vec<Row>>,
}

/// Every measurement, in order.
pub const ALL: &[Measurement] = &[
    Measurement {
        number: 1,
        name: "daemon.info over the unix socket",
        run: rpc::unix,
    },
    Measurement {
        number: 2,
        name: "daemon.info over /v1/rpc and WebSocket",
        run: rpc::http_ws,
    },
    Measurement {
        number: 3,
        name: "CLI against a running daemon",
        run: cli::ctl_info,
    },
    Measurement {
        number: 4,
        name: "auto-spawn",
        run: cli::auto_spawn,
    },
    Measurement {
        number: 5,
        name: "journal append (group commit)",
        run: journal::append,
    },
    Measurement {
        number: 6,
        name: "durable acks, 64 senders",
        run: acks::run,
    },
    Measurement {
        number: 7,
        name: "fan-out",
        run: fanout::run,
    },
    Measurement {
        number: 8,
        name: "since_seq near the end of a big journal",
        run: seek::run,
    },
    Measurement {
        number: 9,
        name: "daemon restart",
        run: restart::run,
    },
    Measurement {
        number: 10,
        name: "scale: 1,000 sessions and subscribers",
        run: scale::run,
    },
];

/// A tokio runtime for the client side: one thread, so the client never takes
/// both cores from the daemon.
pub fn client_rt() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

/// A workdir for sessions (outside any r1 home).
pub fn workdir(ctx: &Ctx) -> anyhow::Result<PathBuf> {
    let p = ctx.dir.join("work");
    std::fs::create_dir_all(&p)?;
    Ok(p)
}

/// Total bytes of the regular files under `dir` whose name is `name`.
pub fn files_named(dir: &Path, name: &str, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        if ft.is_dir() {
            files_named(&e.path(), name, out)?;
        } else if ft.is_file() && e.file_name() == name {
            out.push(e.path());
        }
    }
    Ok(())
}
