//! Project automation for switchboard, run as `cargo xtask <command>`.
//!
//! The alias in `.cargo/config.toml` builds and runs this crate, so a fresh clone needs nothing
//! but a Rust toolchain: `cargo xtask test` finds (or, as root on Debian, installs) `redis-server`
//! and starts a private instance for the tests. The crate uses the standard library only.
//!
//! `main` parses the command line and dispatches; [`redis`] finds, installs and runs
//! `redis-server`; [`test`] holds the steps of `cargo xtask test`.

mod redis;
mod test;

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
      Check formatting (cargo fmt) and lints (cargo clippy, warnings denied),
      find or install redis-server and start it on a free loopback port, then run
      `cargo test --workspace --all-targets` and `cargo test --workspace --doc`
      with SWITCHBOARD_REDIS_URL and SWITCHBOARD_REDIS_SERVER set. Every step
      runs; a summary follows, and the exit status is non-zero if any failed.
        --no-lint   skip cargo fmt and cargo clippy
        -- <args>   pass <args> to both cargo test runs (a test name filter,
                    `-p <crate>`, or `-- --nocapture` for the test binaries)

  redis
      Start redis-server on a free loopback port and print its URL, for running
      tests by hand (SWITCHBOARD_REDIS_URL=<url> cargo test). It stops when a line
      is read from stdin or stdin is closed (Enter or Ctrl-D), or on Ctrl-C.

  help
      Show this text.

redis-server is looked for in $SWITCHBOARD_REDIS_SERVER, then on PATH, then in
/usr/bin, /usr/sbin and /usr/local/bin. If it is missing and xtask runs as root
on a system with apt-get, Debian's `redis-server` package is installed.
Port 6379 is never used: every run starts its own server.";

/// What the command line asks for.
#[derive(Debug)]
enum Command {
    /// Print the usage text.
    Help,
    /// Lint, then run every test tier against a private redis-server.
    Test(test::Options),
    /// Run a redis-server until stdin says stop.
    Redis,
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
        Command::Redis => redis::serve(),
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

/// Whether `arg` asks for the usage text.
fn is_help(arg: &OsString) -> bool {
    matches!(arg.to_str(), Some("-h" | "--help"))
}

/// The workspace root: the directory above this crate's manifest.
fn project_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Where xtask keeps its files (redis logs and data directories): `xtask/` in cargo's target dir.
fn xtask_dir() -> PathBuf {
    let root = project_root();
    let target = env::var_os("CARGO_TARGET_DIR")
        .map(|dir| root.join(dir))
        .unwrap_or_else(|| root.join("target"));
    target.join("xtask")
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
    fn unknown_commands_and_options_are_usage_errors() {
        assert!(parse_strs(&["bench"]).is_err());
        assert!(parse_strs(&["test", "--nocapture"]).is_err());
        assert!(parse_strs(&["redis", "6379"]).is_err());
    }
}
