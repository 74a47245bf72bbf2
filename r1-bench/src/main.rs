//! `r1-bench`: measures r1's hot paths, each beside a floor measured in the same run,
//! and reports the ratio (docs/benchmarks.md explains the method).
//!
//! ```text
//! r1-bench [--quick] [--only 1,5,7] [--r1 PATH] [--out bench-results.json]
//! ```
//!
//! The daemon under test runs as a separate process: the real `r1 serve` (found beside
//! this binary, or `--r1`), or — where a measurement needs a custom driver — this
//! binary's hidden `daemon` subcommand, which embeds `r1_core::Daemon` with the
//! `burst` and `sink` drivers. Floors run as hidden `floor …` subcommands, so both
//! sides of every ratio are separate processes on the same machine, back to back.

mod client;
mod daemon;
mod floors;
mod measure;
mod placement;
mod proc;
mod report;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};

use report::{Machine, Row, Status};

/// r1's benchmark command.
#[derive(Debug, Parser)]
#[command(name = "r1-bench", version, about, max_term_width = 100)]
struct Cli {
    /// Small sizes: seconds, not minutes (the test suite runs this; numbers are rough).
    #[arg(long)]
    quick: bool,
    /// Run only these measurements (numbers 1-10, comma-separated).
    #[arg(long, value_delimiter = ',', value_name = "N,…")]
    only: Vec<u32>,
    /// The `r1` binary to measure (default: beside this one).
    #[arg(long, value_name = "PATH")]
    r1: Option<PathBuf>,
    /// Where to write the JSON results.
    #[arg(long, value_name = "PATH", default_value = "bench-results.json")]
    out: PathBuf,
    /// Scratch directory (default: a fresh one under $TMPDIR, removed afterwards).
    #[arg(long, value_name = "DIR")]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    helper: Option<Helper>,
}

/// Processes the benchmark starts itself.
#[derive(Debug, Subcommand)]
enum Helper {
    /// An embedded r1 daemon with the `burst` and `sink` drivers.
    #[command(hide = true)]
    Daemon(daemon::Args),
    /// A floor server.
    #[command(hide = true, subcommand)]
    Floor(floors::FloorCmd),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.helper {
        Some(Helper::Daemon(a)) => daemon::run(a),
        Some(Helper::Floor(f)) => floors::run(f),
        None => {
            return match run(cli) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("r1-bench: {e:#}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("r1-bench helper: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    raise_nofile_limit();
    let started = Instant::now();
    let started_at = r1_core::time_fmt::now_seconds();
    let self_exe = std::env::current_exe()?;
    let r1 = match cli.r1 {
        Some(p) => p,
        None => self_exe.with_file_name("r1"),
    };
    anyhow::ensure!(
        r1.is_file(),
        "no r1 binary at {}; build it (cargo build --release -p r1-bin) or pass --r1",
        r1.display()
    );
    let scratch = match &cli.dir {
        Some(d) => {
            std::fs::create_dir_all(d)?;
            tempfile::Builder::new().prefix("r1b").tempdir_in(d)?
        }
        // Short paths: unix socket paths must fit sun_path.
        None => tempfile::Builder::new().prefix("r1b").tempdir()?,
    };
    let ctx = measure::Ctx {
        quick: cli.quick,
        r1,
        bench: self_exe,
        dir: scratch.path().to_path_buf(),
    };
    let machine = Machine::detect();
    let size = if cli.quick { "quick" } else { "full" };
    eprintln!(
        "r1-bench: {size} run on {} × {}, kernel {}; r1 = {}",
        machine.nproc,
        machine.cpu,
        machine.kernel,
        ctx.r1.display()
    );

    let mut rows: Vec<Row> = Vec::new();
    for m in measure::ALL {
        if !cli.only.is_empty() && !cli.only.contains(&m.number) {
            continue;
        }
        eprintln!("== {} {}", m.number, m.name);
        let t = Instant::now();
        let got = (m.run)(&ctx);
        match got {
            Ok(mut r) => {
                for row in &r {
                    eprintln!("   {}", one_line(row));
                }
                rows.append(&mut r);
            }
            Err(e) => {
                eprintln!("   failed: {e:#}");
                rows.push(Row::failed(&format!("{}", m.number), m.name, &e));
            }
        }
        eprintln!("   ({:.1} s)", t.elapsed().as_secs_f64());
    }

    let elapsed = started.elapsed().as_secs_f64();
    let table = report::to_markdown(&rows);
    println!("{table}");
    println!(
        "machine: {} × {}, {} MiB, kernel {}; {size} run, {elapsed:.0} s",
        machine.nproc, machine.cpu, machine.mem_mib, machine.kernel
    );
    let json = report::to_json(&rows, &machine, size, &started_at, elapsed)?;
    let tmp = cli.out.with_extension("json.tmp");
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, &cli.out)?;
    eprintln!("r1-bench: wrote {}", cli.out.display());
    drop(scratch);
    let failed = rows.iter().any(|r| matches!(r.status, Status::Failed(_)));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn one_line(r: &Row) -> String {
    let v = r.value.map_or_else(
        || "—".to_owned(),
        |v| format!("{} {}", report::human(v), r.unit),
    );
    let f = r.floor.map_or_else(String::new, |f| {
        format!(" | floor {} {}", report::human(f), r.unit)
    });
    let ratio = r.ratio.map_or_else(String::new, |x| format!(" | {x:.3}×"));
    format!("{} {}: {v}{f}{ratio} | {:?}", r.id, r.measurement, r.status)
}

/// Many sockets and journals at once (measurement 10): lift the soft fd limit to
/// the hard one; children inherit it.
fn raise_nofile_limit() {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
