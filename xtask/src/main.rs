//! Project automation for switchboard, run as `cargo xtask <command>`.
//!
//! The alias in `.cargo/config.toml` builds and runs this crate, so a fresh clone needs nothing
//! but a Rust toolchain: `cargo xtask test` finds (or, as root on Debian, installs) `redis-server`
//! and starts a private instance for the tests. The crate uses the standard library only.
//!
//! `main` parses the command line and dispatches; [`redis`] finds, installs and runs
//! `redis-server`; [`cluster`] runs three of them as a Redis Cluster; [`test`](mod@test) holds the steps of `cargo xtask test`; [`bench`](mod@bench) those of
//! `cargo xtask bench`; [`fuzz`] builds and runs the fuzz targets; [`demo`] runs two chat
//! servers on one Redis; [`tools`] finds or installs the browser for the browser test;
//! [`python`] makes the virtualenv of the Python interop test.

mod bench;
mod cluster;
mod demo;
mod fuzz;
mod python;
mod redis;
mod test;
mod tools;

use std::{
    env,
    ffi::OsString,
    path::{Path, PathBuf},
    process::ExitCode,
};

/// The text printed by `cargo xtask help`, and after a usage error.
const USAGE: &str = "\
Usage: cargo xtask <command> [options]

Commands:
  test [--no-lint] [-- <cargo test args>...]
      Check formatting (cargo fmt), lints (cargo clippy) and the API docs
      (cargo doc --no-deps: broken links, undocumented items), warnings denied,
      find or install redis-server and start it on a free loopback port, and a
      Redis Cluster of three masters beside it, then run
      `cargo test --workspace --all-targets` and `cargo test --workspace --doc`
      with SWITCHBOARD_REDIS_URL, SWITCHBOARD_REDIS_SERVER and
      SWITCHBOARD_REDIS_CLUSTER_URL set. Every step runs; a summary follows,
      and the exit status is non-zero if any failed.
        --no-lint   skip cargo fmt, cargo clippy and cargo doc
        -- <args>   pass <args> to both cargo test runs (a test name filter,
                    `-p <crate>`, or `-- --nocapture` for the test binaries)

  bench [--quick] [--only B1,B3,...]
      Build the bench binary (switchboard-tests, bin switchboard-bench) in
      release mode, start redis-server on a free loopback port, and run the
      benchmarks B1..B10, each beside a baseline measured in the same run (raw
      Redis for B1..B6; for B7, the single server beside a 3-master Redis
      Cluster that it starts; for B8, socketioxide with its Redis adapter; for
      B9, a bare axum WebSocket server). Prints a table and writes
      target/bench/results.json. B6, B8 and B9 need the chat example
      (`cargo build --release --example chat`), B8 also the socketioxide server
      of tests/peer (built into <target>/peer); without them, they are
      reported as skipped, as B7 is when the cluster cannot start.
        --quick     shorter runs: under two minutes once built
        --only ids  run only these scenarios (comma-separated)

  fuzz [--seconds N] [target...]
      Build the coverage-guided fuzz targets (tests/fuzz, libFuzzer, stable
      toolchain) and fuzz each decoder for N seconds (default 60): envelope,
      hub_json, hub_msgpack. New inputs go to target/fuzz/corpus, crashes to
      target/fuzz/artifacts. `cargo xtask test` runs each for 15 s.

  demo
      Start redis-server and two chat servers on it (http://127.0.0.1:5000 and
      http://127.0.0.1:5001), open both pages: a message sent on one appears on
      the other. Stops on Enter, Ctrl-D or Ctrl-C.

  redis
      Start redis-server on a free loopback port and print its URL, for running
      tests by hand (SWITCHBOARD_REDIS_URL=<url> cargo test); a Redis Cluster
      too, whose URL goes to stderr. They stop when a line is read from stdin
      or stdin is closed (Enter or Ctrl-D), or on Ctrl-C.

  help
      Show this text.

redis-server is looked for in $SWITCHBOARD_REDIS_SERVER, then on PATH, then in
/usr/bin, /usr/sbin and /usr/local/bin. If it is missing and xtask runs as root
on a system with apt-get, Debian's `redis-server` package is installed.
redis-cli, which creates the cluster, is looked for next to redis-server,
then on PATH (Debian's `redis-tools`, which `redis-server` depends on).
Port 6379 is never used: every run starts its own server.";

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    /// Print the usage text.
    Help,
    /// Lint, then run every test tier against a private redis-server.
    Test(test::Options),
    /// Run the benchmarks against a private redis-server.
    Bench(bench::Options),
    /// Run a redis-server until stdin says stop.
    Redis,
    /// Fuzz the decoders for this many seconds each (these targets, or all).
    Fuzz(u64, Vec<String>),
    /// Two chat servers on one redis-server.
    Demo,
}

fn main() -> ExitCode {
    let command = match parse(env::args_os().skip(1)) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("xtask: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            println!("{USAGE}");
            Ok(())
        }
        Command::Test(options) => test::run(&options),
        Command::Bench(options) => bench::run(&options),
        Command::Redis => redis::serve(),
        Command::Fuzz(seconds, targets) => fuzz::run(seconds, &targets),
        Command::Demo => demo::run(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("xtask: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Turns the arguments after `cargo xtask` into a [`Command`], or a message saying what is wrong.
fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Command, String> {
    let mut args = args.into_iter();
    let Some(name) = args.next() else {
        return Ok(Command::Help);
    };
    match name.to_str() {
        Some("help" | "-h" | "--help") => Ok(Command::Help),
        Some("test") => parse_test(args),
        Some("bench") => parse_bench(args),
        Some("fuzz") => parse_fuzz(args),
        Some("demo") => match args.next() {
            None => Ok(Command::Demo),
            Some(arg) if is_help(&arg) => Ok(Command::Help),
            Some(arg) => Err(format!(
                "`demo` takes no arguments, got `{}`",
                arg.to_string_lossy()
            )),
        },
        Some("redis") => match args.next() {
            None => Ok(Command::Redis),
            Some(arg) if is_help(&arg) => Ok(Command::Help),
            Some(arg) => Err(format!(
                "`redis` takes no arguments, got `{}`",
                arg.to_string_lossy()
            )),
        },
        _ => Err(format!("unknown command `{}`", name.to_string_lossy())),
    }
}

/// Parses the arguments of `cargo xtask test`: its own flags, then everything after `--`.
fn parse_test(mut args: impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut options = test::Options {
        lint: true,
        cargo_test_args: Vec::new(),
    };
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--no-lint") => options.lint = false,
            Some("--") => {
                options.cargo_test_args = args.collect();
                break;
            }
            _ if is_help(&arg) => return Ok(Command::Help),
            _ => {
                return Err(format!(
                    "unknown option `{}` for `test` (arguments for cargo test go after `--`)",
                    arg.to_string_lossy()
                ));
            }
        }
    }
    Ok(Command::Test(options))
}

/// Parses the arguments of `cargo xtask fuzz`.
fn parse_fuzz(mut args: impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut seconds = 60;
    let mut targets = Vec::new();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--seconds") => {
                seconds = args
                    .next()
                    .and_then(|n| n.to_str().and_then(|n| n.parse().ok()))
                    .ok_or("`--seconds` needs a whole number of seconds")?;
            }
            _ if is_help(&arg) => return Ok(Command::Help),
            Some(target) if fuzz::TARGETS.contains(&target) => targets.push(target.to_owned()),
            _ => {
                return Err(format!(
                    "unknown fuzz target or option `{}` (targets: {})",
                    arg.to_string_lossy(),
                    fuzz::TARGETS.join(", ")
                ));
            }
        }
    }
    Ok(Command::Fuzz(seconds, targets))
}

/// Parses the arguments of `cargo xtask bench`.
fn parse_bench(mut args: impl Iterator<Item = OsString>) -> Result<Command, String> {
    let mut options = bench::Options::default();
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--quick") => options.quick = true,
            Some("--only") => {
                let ids = args
                    .next()
                    .and_then(|ids| ids.into_string().ok())
                    .ok_or("`--only` needs a list of scenarios, such as `B1,B3`")?;
                for id in ids.split(',') {
                    let id = id.trim();
                    let known = id.len() >= 2
                        && id[..1].eq_ignore_ascii_case("b")
                        && matches!(
                            &id[1..],
                            "1" | "2" | "3" | "4" | "5" | "6" | "7" | "8" | "9" | "10"
                        );
                    if !known {
                        return Err(format!("unknown scenario `{id}` (known: B1 to B10)"));
                    }
                }
                options.only = Some(ids);
            }
            _ if is_help(&arg) => return Ok(Command::Help),
            _ => {
                return Err(format!(
                    "unknown option `{}` for `bench`",
                    arg.to_string_lossy()
                ));
            }
        }
    }
    Ok(Command::Bench(options))
}

/// Whether `arg` asks for the usage text.
fn is_help(arg: &OsString) -> bool {
    matches!(arg.to_str(), Some("-h" | "--help"))
}

/// The workspace root: the directory above this crate's manifest.
fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the root), or `target/`.
fn target_dir() -> PathBuf {
    let root = project_root();
    env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"))
}

/// Where xtask keeps its files (redis logs and data directories): `xtask/` in cargo's target dir.
fn xtask_dir() -> PathBuf {
    target_dir().join("xtask")
}

/// The cargo that runs this xtask (cargo sets `CARGO` for the programs it runs), so that every
/// step uses the same toolchain; plain `cargo` from PATH otherwise.
fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_strs(args: &[&str]) -> Result<Command, String> {
        parse(args.iter().map(OsString::from))
    }

    #[test]
    fn no_arguments_and_help_print_usage() {
        for args in [
            &[][..],
            &["help"],
            &["--help"],
            &["test", "-h"],
            &["redis", "--help"],
            &["bench", "--help"],
        ] {
            assert!(
                matches!(parse_strs(args), Ok(Command::Help)),
                "{args:?} should ask for help"
            );
        }
    }

    #[test]
    fn test_flags_and_passthrough_are_split_at_the_double_dash() {
        let Ok(Command::Test(options)) =
            parse_strs(&["test", "--no-lint", "--", "--no-lint", "-p", "x"])
        else {
            panic!("`test` with valid flags should parse");
        };
        assert!(!options.lint);
        assert_eq!(options.cargo_test_args, ["--no-lint", "-p", "x"]);
    }

    #[test]
    fn test_lints_by_default() {
        let Ok(Command::Test(options)) = parse_strs(&["test"]) else {
            panic!("plain `test` should parse");
        };
        assert!(options.lint);
        assert!(options.cargo_test_args.is_empty());
    }

    #[test]
    fn bench_takes_quick_and_a_scenario_list() {
        let Ok(Command::Bench(options)) = parse_strs(&["bench", "--quick", "--only", "B1,b3"])
        else {
            panic!("`bench` with valid flags should parse");
        };
        assert!(options.quick);
        assert_eq!(options.only.as_deref(), Some("B1,b3"));
        let Ok(Command::Bench(options)) = parse_strs(&["bench"]) else {
            panic!("plain `bench` should parse");
        };
        assert!(!options.quick && options.only.is_none());
    }

    #[test]
    fn unknown_commands_and_options_are_usage_errors() {
        assert!(parse_strs(&["bench", "--slow"]).is_err());
        assert!(parse_strs(&["bench", "--only", "B0"]).is_err());
        assert!(parse_strs(&["bench", "--only", "b8"]).is_ok());
        assert!(parse_strs(&["bench", "--only", "B11"]).is_err());
        assert!(parse_strs(&["bench", "--only", "b10,B1"]).is_ok());
        assert!(parse_strs(&["bench", "--only", "b9"]).is_ok());
        assert!(parse_strs(&["bench", "--only"]).is_err());
        assert!(parse_strs(&["frobnicate"]).is_err());
        assert!(parse_strs(&["test", "--nocapture"]).is_err());
        assert!(parse_strs(&["redis", "6379"]).is_err());
    }
}
