//! `cargo xtask bench`: builds the bench binary in release mode, starts a private redis-server
//! (and, for B7, a 3-master Redis Cluster) and runs the binary against it.
//!
//! The measuring is done by `switchboard-bench` (in the `switchboard-tests` package): it runs
//! each scenario and its raw-Redis baseline, prints the table and writes
//! `target/bench/results.json`. This module only prepares what it needs: the release builds
//! (the bench itself with B9's `bare-ws` server and, for B6 and B9, the chat example), the
//! server and, for B7, the cluster.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use crate::cluster::RedisCluster;
use crate::redis::{self, RedisServer};

/// What `cargo xtask bench` was asked to do.
#[derive(Debug, Default)]
pub(crate) struct Options {
    /// Shorter scenarios: the whole run in under two minutes.
    pub(crate) quick: bool,
    /// Only these scenarios (a comma-separated list such as `B1,B3`), as given.
    pub(crate) only: Option<String>,
}

impl Options {
    /// Whether scenario `id` is part of the run.
    fn selected(&self, id: &str) -> bool {
        self.only.as_deref().is_none_or(|only| {
            only.split(',')
                .any(|item| item.trim().eq_ignore_ascii_case(id))
        })
    }
}

/// The bench binary's package and name.
const BENCH_PACKAGE: &str = "switchboard-tests";
const BENCH_BINARY: &str = "switchboard-bench";
/// B9's baseline server, built beside the bench binary (where B9 looks for it).
const BARE_BINARY: &str = "bare-ws";
/// The example B6 runs, built with `cargo build --release --example chat`.
const CHAT_EXAMPLE: &str = "chat";

/// Runs `cargo xtask bench`.
pub(crate) fn run(options: &Options) -> Result<(), String> {
    let target = crate::target_dir();
    let release = target.join("release");

    step("building the bench binary (release)");
    cargo(&[
        "build",
        "--release",
        "-p",
        BENCH_PACKAGE,
        "--bin",
        BENCH_BINARY,
        "--bin",
        BARE_BINARY,
    ])?;
    let bench = release.join(BENCH_BINARY);

    let mut args: Vec<OsString> = Vec::new();
    if options.selected("B6") || options.selected("B9") {
        step("building the chat example (release) for B6 and B9");
        match build_chat() {
            Ok(()) => {
                args.push("--chat".into());
                args.push(release.join("examples").join(CHAT_EXAMPLE).into());
            }
            Err(why) => {
                eprintln!("xtask: B6 and B9 will be skipped: {why}");
                args.push("--chat-missing".into());
                args.push(format!("chat example not built ({why})").into());
            }
        }
    }

    step("starting redis-server");
    let binary = redis::find_or_install()?;
    let server = RedisServer::start(&binary, &crate::xtask_dir())?;
    println!(
        "xtask: {} is running at {} (pid {})",
        server.binary().display(),
        server.url(),
        server.pid()
    );

    // B7 compares the single server with a cluster started from the same binary.
    let cluster = if options.selected("B7") {
        step("starting a Redis Cluster (3 masters) for B7");
        match RedisCluster::start(&binary, &crate::xtask_dir()) {
            Ok(cluster) => {
                println!(
                    "xtask: the Redis Cluster is running at {} (pids {:?})",
                    cluster.url(),
                    cluster.pids()
                );
                args.push("--cluster".into());
                args.push(cluster.url().into());
                Some(cluster)
            }
            Err(why) => {
                eprintln!("xtask: B7 will be skipped: {why}");
                let first_line = why.lines().next().unwrap_or("unknown error");
                args.push("--cluster-missing".into());
                args.push(format!("the Redis Cluster did not start ({first_line})").into());
                None
            }
        }
    } else {
        None
    };

    let out = target.join("bench").join("results.json");
    args.extend(["--redis".into(), server.url().into(), "--out".into()]);
    args.push(out.into());
    if options.quick {
        args.push("--quick".into());
    }
    if let Some(only) = &options.only {
        args.push("--only".into());
        args.push(only.into());
    }
    step("running the benchmarks");
    let started = Instant::now();
    let status = Command::new(&bench)
        .args(&args)
        .envs(server.env())
        .current_dir(crate::project_root())
        .status()
        .map_err(|err| format!("could not run {}: {err}", bench.display()))?;
    let pid = server.pid();
    drop(server);
    if let Some(cluster) = cluster {
        let pids = cluster.pids();
        drop(cluster);
        println!("xtask: stopped the Redis Cluster (pids {pids:?})");
    }
    println!(
        "xtask: stopped redis-server (pid {pid}); benchmarks took {:.0} s",
        started.elapsed().as_secs_f64()
    );
    if status.success() {
        Ok(())
    } else {
        Err(format!("{BENCH_BINARY} failed ({status})"))
    }
}

/// Prints a step's banner.
fn step(what: &str) {
    println!("\n==> {what}");
}

/// Runs cargo with `args` in the project root; an error if it fails.
fn cargo(args: &[&str]) -> Result<(), String> {
    let status = Command::new(crate::cargo())
        .args(args)
        .current_dir(crate::project_root())
        .status()
        .map_err(|err| format!("could not run cargo: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`cargo {}` failed ({status})", args.join(" ")))
    }
}

/// Builds the chat example; on failure, says why in one line (cargo's first error).
fn build_chat() -> Result<(), String> {
    let output = Command::new(crate::cargo())
        .args(["build", "--release", "--example", CHAT_EXAMPLE])
        .current_dir(crate::project_root())
        .output()
        .map_err(|err| format!("could not run cargo: {err}"))?;
    if output.status.success() && chat_binary_exists(&crate::target_dir()) {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    let first_error = stderr
        .lines()
        .find(|line| line.starts_with("error"))
        .unwrap_or("cargo build failed")
        .trim();
    Err(format!(
        "`cargo build --release --example {CHAT_EXAMPLE}`: {first_error}"
    ))
}

/// Whether the built example is where the bench will look for it.
fn chat_binary_exists(target: &Path) -> bool {
    let path: PathBuf = target.join("release").join("examples").join(CHAT_EXAMPLE);
    path.is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_selects_case_insensitively() {
        let options = Options {
            quick: true,
            only: Some("b1, B3".to_owned()),
        };
        assert!(options.selected("B1"));
        assert!(options.selected("B3"));
        assert!(!options.selected("B6"));
        assert!(!options.selected("B9"));
        assert!(Options::default().selected("B6"));
    }
}
