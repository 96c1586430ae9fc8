//! `cargo xtask bench`: builds the bench binary in release mode, starts a private redis-server
//! (and, for B7, a 3-master Redis Cluster) and runs the binary against it.
//!
//! The measuring is done by `switchboard-bench` (in the `switchboard-tests` package): it runs
//! each scenario and its raw-Redis baseline, prints the table and writes
//! `target/bench/results.json`. This module only prepares what it needs: the release builds
//! (the bench itself with B9's `bare-ws` server, for B6, B8 and B9 the chat example, and for B8
//! the socketioxide server of `tests/peer`, a package outside the workspace), the server and,
//! for B7, the cluster.

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
/// B8's socketioxide server: its manifest (a workspace of its own) and its binary.
const PEER_MANIFEST: &str = "tests/peer/Cargo.toml";
const PEER_BINARY: &str = "switchboard-peer";

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
    if options.selected("B6") || options.selected("B8") || options.selected("B9") {
        step("building the chat example (release) for B6, B8 and B9");
        match build_chat() {
            Ok(()) => {
                args.push("--chat".into());
                args.push(release.join("examples").join(CHAT_EXAMPLE).into());
            }
            Err(why) => {
                eprintln!("xtask: B6, B8 and B9 will be skipped: {why}");
                args.push("--chat-missing".into());
                args.push(format!("chat example not built ({why})").into());
            }
        }
    }
    if options.selected("B8") {
        step("building the socketioxide peer (release, tests/peer) for B8");
        let peer_target = target.join("peer");
        match build_peer(&peer_target) {
            Ok(binary) => {
                args.push("--peer".into());
                args.push(binary.into());
            }
            Err(why) => {
                eprintln!("xtask: B8 will be skipped: {why}");
                args.push("--peer-missing".into());
                args.push(format!("socketioxide peer not built ({why})").into());
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
    Err(format!(
        "`cargo build --release --example {CHAT_EXAMPLE}`: {}",
        first_error(&output.stderr)
    ))
}

/// Builds B8's socketioxide server into `peer_target` (a target dir of its own: the package is
/// its own workspace, with its own lock file and dependencies); on failure, says why in one line.
fn build_peer(peer_target: &Path) -> Result<PathBuf, String> {
    let output = Command::new(crate::cargo())
        .args(["build", "--release", "--manifest-path", PEER_MANIFEST])
        .env("CARGO_TARGET_DIR", peer_target)
        .current_dir(crate::project_root())
        .output()
        .map_err(|err| format!("could not run cargo: {err}"))?;
    let binary = peer_target.join("release").join(PEER_BINARY);
    if output.status.success() && binary.is_file() {
        return Ok(binary);
    }
    Err(format!(
        "`cargo build --release --manifest-path {PEER_MANIFEST}`: {}",
        first_error(&output.stderr)
    ))
}

/// cargo's first error line in `stderr`.
fn first_error(stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    stderr
        .lines()
        .find(|line| line.starts_with("error"))
        .unwrap_or("cargo build failed")
        .trim()
        .to_owned()
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
        assert!(!options.selected("B8"));
        assert!(!options.selected("B9"));
        assert!(Options::default().selected("B6"));
    }
}
