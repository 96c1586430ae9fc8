//! `cargo xtask test`: the lints, then every test tier against a private redis-server.
//!
//! The run is a list of [`Step`]s. Each runs even when an earlier one failed (a formatting slip
//! should not hide a failing test), and each gets one line in the closing summary. Steps that
//! need redis start it, and a three-master Redis Cluster beside it, the first time one of them
//! comes up; if the server cannot start, they are reported as skipped. If only the cluster
//! cannot start, they run without [`cluster::URL_ENV`], and the tests that need it fail.

use std::{
    ffi::OsString,
    fmt,
    process::Command,
    time::{Duration, Instant},
};

use crate::{
    cluster::{self, RedisCluster},
    redis::{self, RedisServer},
};

/// What `cargo xtask test` was asked to do.
#[derive(Debug)]
pub(crate) struct Options {
    /// Run `cargo fmt --check` and `cargo clippy` before the tests.
    pub(crate) lint: bool,
    /// Extra arguments appended to every `cargo test` command.
    pub(crate) cargo_test_args: Vec<OsString>,
}

/// One command of the run, reported as one line of the summary.
#[derive(Debug)]
struct Step {
    /// The short name shown in the header and the summary.
    name: &'static str,
    /// The program to run.
    program: OsString,
    /// Its arguments.
    args: Vec<OsString>,
    /// Extra environment variables.
    env: Vec<(&'static str, OsString)>,
    /// Work done in xtask itself instead of a command (installing a tool,
    /// fuzzing); `program` and `args` then only describe it.
    internal: Option<fn() -> Result<(), String>>,
    /// Whether it needs the redis-server: if so it runs with [`redis::URL_ENV`] and
    /// [`redis::SERVER_ENV`] set (and [`cluster::URL_ENV`] if the cluster is running), and is
    /// skipped if the server could not start.
    needs_redis: bool,
    /// Whether it runs against the Redis Cluster instead: [`redis::URL_ENV`] then holds the
    /// cluster's URL, and the step fails if the cluster is not running.
    on_cluster: bool,
}

impl Step {
    /// A cargo command (run with the cargo that runs xtask) that needs no redis-server.
    fn cargo(name: &'static str, args: &[&str]) -> Self {
        Step::program(name, crate::cargo(), args)
    }

    /// Any program, run in the workspace root.
    fn program(name: &'static str, program: impl Into<OsString>, args: &[&str]) -> Self {
        Step {
            name,
            program: program.into(),
            args: args.iter().map(OsString::from).collect(),
            env: Vec::new(),
            internal: None,
            needs_redis: false,
            on_cluster: false,
        }
    }

    /// Work done by xtask itself, described by `what` in the header.
    fn internal(name: &'static str, what: &str, work: fn() -> Result<(), String>) -> Self {
        Step {
            internal: Some(work),
            ..Step::program(name, what, &[])
        }
    }

    /// Adds an environment variable.
    fn with_env(mut self, key: &'static str, value: impl Into<OsString>) -> Self {
        self.env.push((key, value.into()));
        self
    }

    /// Marks the step as needing the redis-server.
    fn with_redis(mut self) -> Self {
        self.needs_redis = true;
        self
    }

    /// Marks the step as needing the Redis Cluster, handed over as [`redis::URL_ENV`] (the
    /// programs it runs take one Redis URL, of either kind).
    fn on_cluster(mut self) -> Self {
        self.needs_redis = true;
        self.on_cluster = true;
        self
    }

    /// Appends `args` to the command line.
    fn with_args(mut self, args: &[OsString]) -> Self {
        self.args.extend_from_slice(args);
        self
    }
}

impl fmt::Display for Step {
    /// The command line, for the step's header.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Show `cargo` rather than the full path of the toolchain's cargo.
        if self.program == crate::cargo() {
            f.write_str("cargo")?;
        } else {
            f.write_str(&self.program.to_string_lossy())?;
        }
        for arg in &self.args {
            let arg = arg.to_string_lossy();
            if arg.is_empty() || arg.contains(char::is_whitespace) {
                write!(f, " {arg:?}")?;
            } else {
                write!(f, " {arg}")?;
            }
        }
        Ok(())
    }
}

/// The lint steps: formatting, clippy and rustdoc (broken intra-doc links, undocumented
/// items), with warnings denied, over the whole workspace.
fn lint_steps() -> Vec<Step> {
    vec![
        Step::cargo("fmt", &["fmt", "--all", "--", "--check"]),
        Step::cargo(
            "clippy",
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ],
        ),
        Step::cargo("doc", &["doc", "--workspace", "--no-deps"])
            .with_env("RUSTDOCFLAGS", "-D warnings"),
    ]
}

/// The tiers cargo's own test runner drives: unit, integration and real-redis tests (benches and
/// examples are compiled by `--all-targets`), then doc tests, which `--all-targets` leaves out.
fn cargo_test_tiers(extra: &[OsString]) -> Vec<Step> {
    vec![
        Step::cargo("test", &["test", "--workspace", "--all-targets"])
            .with_args(extra)
            .with_redis(),
        Step::cargo("doctest", &["test", "--workspace", "--doc"])
            .with_args(extra)
            .with_redis(),
    ]
}

/// Tiers that run outside cargo's test runner, after the cargo tiers and against the same
/// redis-server: the official SignalR JavaScript client against two chat servers (an npm
/// project in `tests/interop`), the same with the independent Python client `signalrcore` (a
/// unittest module in `tests/interop/python`, run in its own virtualenv), the chat and
/// dashboard pages in headless Chromium, and a short coverage-guided fuzzing run of every decoder.
fn external_tiers() -> Vec<Step> {
    let interop = crate::project_root().join("tests").join("interop");
    let interop = interop.to_string_lossy().into_owned();
    let python_tests = crate::python::test_dir().to_string_lossy().into_owned();
    let examples = crate::target_dir().join("debug").join("examples");
    let chat = examples.join("chat");
    let dashboard = examples.join("dashboard");
    vec![
        // `--workspace` resolves features as the test step did, so nothing is rebuilt.
        Step::cargo(
            "chat-build",
            &[
                "build",
                "--workspace",
                "--example",
                "chat",
                "--example",
                "dashboard",
            ],
        ),
        Step::program(
            "npm-ci",
            "npm",
            &["ci", "--no-audit", "--no-fund", "--prefix", &interop],
        ),
        Step::program("interop", "npm", &["test", "--prefix", &interop])
            .with_env("SWITCHBOARD_CHAT_BIN", chat.clone())
            .with_redis(),
        // The same, with both chat servers on the Redis Cluster (sharded pub/sub).
        Step::program("interop-cluster", "npm", &["test", "--prefix", &interop])
            .with_env("SWITCHBOARD_CHAT_BIN", chat.clone())
            .on_cluster(),
        Step::internal(
            "python-venv",
            "create (or reuse) the virtualenv of tests/interop/python/requirements.txt",
            crate::python::setup,
        ),
        Step::program(
            "interop-python",
            crate::python::venv_python(),
            &[
                "-m",
                "unittest",
                "discover",
                "--start-directory",
                &python_tests,
                "--verbose",
            ],
        )
        .with_env("SWITCHBOARD_CHAT_BIN", chat.clone())
        // Keep `__pycache__` out of the work tree, and the output in order with the servers'.
        .with_env("PYTHONDONTWRITEBYTECODE", "1")
        .with_env("PYTHONUNBUFFERED", "1")
        .with_redis(),
        Step::internal(
            "chromium",
            "find or install Debian's chromium for the browser test",
            || crate::tools::find_or_install_chromium().map(drop),
        ),
        Step::program("browser", "npm", &["run", "browser", "--prefix", &interop])
            .with_env("SWITCHBOARD_CHAT_BIN", chat)
            .with_env("SWITCHBOARD_DASHBOARD_BIN", dashboard)
            .with_env("SWITCHBOARD_CHROMIUM", crate::tools::CHROMIUM)
            .with_redis(),
        Step::internal(
            "fuzz",
            "build the fuzz targets, then fuzz each decoder briefly",
            || crate::fuzz::run(FUZZ_SECONDS, &[]),
        ),
    ]
}

/// How long `cargo xtask test` fuzzes each decoder (`cargo xtask fuzz` runs longer).
const FUZZ_SECONDS: u64 = 15;

/// Every step of the run, in order.
fn plan(options: &Options) -> Vec<Step> {
    let mut steps = Vec::new();
    if options.lint {
        steps.extend(lint_steps());
    }
    steps.extend(cargo_test_tiers(&options.cargo_test_args));
    steps.extend(external_tiers());
    steps
}

/// How one step ended.
#[derive(Debug)]
enum Outcome {
    /// It succeeded.
    Ok,
    /// It failed; the text says how (an exit status, or why it could not run).
    Failed(String),
    /// It did not run because the redis-server it needs could not start.
    Skipped,
}

/// One line of the summary.
#[derive(Debug)]
struct Record {
    /// The step's name.
    name: &'static str,
    /// How it ended.
    outcome: Outcome,
    /// How long it took.
    elapsed: Duration,
}

/// Runs `cargo xtask test`: every step, then the summary. Fails if any step failed.
pub(crate) fn run(options: &Options) -> Result<(), String> {
    let steps = plan(options);
    let needs_redis = steps.iter().any(|step| step.needs_redis);
    // The server and the cluster are one step each.
    let total = steps.len() + 2 * usize::from(needs_redis);
    let mut records = Vec::with_capacity(total);
    // Started on first need; `Err` once startup has failed, so it is not tried again.
    let mut server: Option<Result<RedisServer, ()>> = None;
    // Started right after the server; `None` if it could not start.
    let mut cluster: Option<RedisCluster> = None;

    for step in steps {
        let mut env = Vec::new();
        if step.needs_redis {
            let server = server.get_or_insert_with(|| {
                let server = start_redis(&mut records, total);
                cluster = start_cluster(&mut records, total, server.as_ref().ok());
                server
            });
            match server {
                Ok(server) => {
                    env.extend(server.env());
                    env.extend(cluster.iter().flat_map(RedisCluster::env));
                    if step.on_cluster {
                        match &cluster {
                            Some(cluster) => env.push((redis::URL_ENV, cluster.url().into())),
                            None => {
                                records.push(Record {
                                    name: step.name,
                                    outcome: Outcome::Failed(
                                        "the Redis Cluster is not running".to_owned(),
                                    ),
                                    elapsed: Duration::ZERO,
                                });
                                continue;
                            }
                        }
                    }
                }
                Err(()) => {
                    records.push(Record {
                        name: step.name,
                        outcome: Outcome::Skipped,
                        elapsed: Duration::ZERO,
                    });
                    continue;
                }
            }
        }
        header(records.len() + 1, total, step.name, &step.to_string());
        let started = Instant::now();
        let outcome = match step.internal {
            Some(work) => match work() {
                Ok(()) => Outcome::Ok,
                Err(message) => {
                    eprintln!("xtask: error: {message}");
                    Outcome::Failed(message)
                }
            },
            None => match Command::new(&step.program)
                .args(&step.args)
                // Only the cluster started here, never one named by xtask's own environment.
                .env_remove(cluster::URL_ENV)
                .envs(env)
                .envs(step.env.iter().map(|(k, v)| (k, v)))
                .current_dir(crate::project_root())
                .status()
            {
                Ok(status) if status.success() => Outcome::Ok,
                Ok(status) => Outcome::Failed(status.to_string()),
                Err(err) => Outcome::Failed(format!("could not run it: {err}")),
            },
        };
        records.push(Record {
            name: step.name,
            outcome,
            elapsed: started.elapsed(),
        });
    }

    // Stop redis before the summary, so that the summary is the last thing printed.
    if let Some(cluster) = cluster {
        let pids = cluster.pids();
        drop(cluster);
        println!("\nxtask: stopped the Redis Cluster (pids {pids:?})");
    }
    if let Some(Ok(server)) = server {
        let pid = server.pid();
        drop(server);
        println!("\nxtask: stopped redis-server (pid {pid})");
    }
    summarize(&records)
}

/// Finds or installs redis-server and starts it, recording the outcome as a step of its own.
fn start_redis(records: &mut Vec<Record>, total: usize) -> Result<RedisServer, ()> {
    header(
        records.len() + 1,
        total,
        "redis-server",
        "find or install redis-server, start it on a free loopback port",
    );
    let started = Instant::now();
    let result = redis::find_or_install()
        .and_then(|binary| RedisServer::start(&binary, &crate::xtask_dir()));
    let outcome = match &result {
        Ok(server) => {
            println!(
                "xtask: {} is running at {} (pid {}, log {})",
                server.binary().display(),
                server.url(),
                server.pid(),
                server.log().display()
            );
            Outcome::Ok
        }
        Err(message) => {
            eprintln!("xtask: error: {message}");
            Outcome::Failed("could not start it".to_owned())
        }
    };
    records.push(Record {
        name: "redis-server",
        outcome,
        elapsed: started.elapsed(),
    });
    result.map_err(drop)
}

/// Starts the three-master Redis Cluster with the binary of the running `server`, recording the
/// outcome as a step of its own: skipped if there is no server, failed if the cluster cannot
/// start (the steps then run without it).
fn start_cluster(
    records: &mut Vec<Record>,
    total: usize,
    server: Option<&RedisServer>,
) -> Option<RedisCluster> {
    let Some(server) = server else {
        records.push(Record {
            name: "redis-cluster",
            outcome: Outcome::Skipped,
            elapsed: Duration::ZERO,
        });
        return None;
    };
    header(
        records.len() + 1,
        total,
        "redis-cluster",
        "start a Redis Cluster of three masters on free loopback ports",
    );
    let started = Instant::now();
    let result = RedisCluster::start(server.binary(), &crate::xtask_dir());
    let outcome = match &result {
        Ok(cluster) => {
            println!(
                "xtask: a Redis Cluster is running at {} (pids {:?}, logs in {})",
                cluster.url(),
                cluster.pids(),
                cluster.log_dir().display()
            );
            Outcome::Ok
        }
        Err(message) => {
            eprintln!("xtask: error: {message}");
            eprintln!(
                "xtask: the steps run without {}; tests that need the cluster will fail",
                cluster::URL_ENV
            );
            Outcome::Failed("could not start it".to_owned())
        }
    };
    records.push(Record {
        name: "redis-cluster",
        outcome,
        elapsed: started.elapsed(),
    });
    result.ok()
}

/// Prints the banner that opens a step.
fn header(number: usize, total: usize, name: &str, what: &str) {
    println!("\n==> [{number}/{total}] {name}: {what}");
}

/// Prints one line per step and returns an error if any step failed.
fn summarize(records: &[Record]) -> Result<(), String> {
    println!("\n==> summary");
    let width = records
        .iter()
        .map(|record| record.name.len())
        .max()
        .unwrap_or(0);
    for record in records {
        let (status, detail) = match &record.outcome {
            Outcome::Ok => ("ok", String::new()),
            Outcome::Failed(why) => ("FAILED", format!("  ({why})")),
            Outcome::Skipped => ("skipped", "  (needs redis-server)".to_owned()),
        };
        println!(
            "    {status:<7}  {name:<width$}  {secs:>7.1} s{detail}",
            name = record.name,
            secs = record.elapsed.as_secs_f64(),
        );
    }
    let failed = records
        .iter()
        .filter(|record| !matches!(record.outcome, Outcome::Ok))
        .count();
    if failed == 0 {
        println!("\nxtask: all {} steps passed", records.len());
        Ok(())
    } else {
        Err(format!(
            "{failed} of {} steps failed or were skipped",
            records.len()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_lints_first_then_runs_redis_tiers() {
        let options = Options {
            lint: true,
            cargo_test_args: vec![OsString::from("--nocapture")],
        };
        let steps = plan(&options);
        let names: Vec<_> = steps.iter().map(|step| step.name).collect();
        assert_eq!(
            names,
            [
                "fmt",
                "clippy",
                "doc",
                "test",
                "doctest",
                "chat-build",
                "npm-ci",
                "interop",
                "interop-cluster",
                "python-venv",
                "interop-python",
                "chromium",
                "browser",
                "fuzz"
            ]
        );
        assert!(steps[..3].iter().all(|step| !step.needs_redis));
        assert!(steps[3..5].iter().all(|step| step.needs_redis));
        assert!(
            steps[3..5]
                .iter()
                .all(|step| step.args.last() == Some(&OsString::from("--nocapture")))
        );
        let interop = steps
            .iter()
            .find(|step| step.name == "interop")
            .expect("an interop step");
        assert!(interop.needs_redis);
        assert!(
            interop
                .env
                .iter()
                .any(|(key, _)| *key == "SWITCHBOARD_CHAT_BIN")
        );
        let on_cluster: Vec<_> = steps
            .iter()
            .filter(|step| step.on_cluster)
            .map(|step| step.name)
            .collect();
        assert_eq!(on_cluster, ["interop-cluster"]);
        assert!(
            steps
                .iter()
                .all(|step| !step.on_cluster || step.needs_redis)
        );
        let python = steps
            .iter()
            .find(|step| step.name == "interop-python")
            .expect("a Python interop step");
        assert!(python.needs_redis);
        assert!(
            python
                .env
                .iter()
                .any(|(key, _)| *key == "SWITCHBOARD_CHAT_BIN")
        );
        assert_eq!(python.program, crate::python::venv_python());
        let browser = steps
            .iter()
            .find(|step| step.name == "browser")
            .expect("a browser step");
        for example in ["SWITCHBOARD_CHAT_BIN", "SWITCHBOARD_DASHBOARD_BIN"] {
            assert!(
                browser.env.iter().any(|(key, _)| *key == example),
                "{example}"
            );
        }
        let venv = steps
            .iter()
            .find(|step| step.name == "python-venv")
            .expect("a virtualenv step");
        assert!(venv.internal.is_some() && !venv.needs_redis);
    }

    #[test]
    fn no_lint_drops_only_the_lint_steps() {
        let options = Options {
            lint: false,
            cargo_test_args: Vec::new(),
        };
        let names: Vec<_> = plan(&options).iter().map(|step| step.name).collect();
        assert_eq!(names[..2], ["test", "doctest"]);
        assert!(!names.contains(&"fmt") && !names.contains(&"clippy") && !names.contains(&"doc"));
    }

    #[test]
    fn a_failed_or_skipped_step_fails_the_run() {
        let record = |outcome| Record {
            name: "x",
            outcome,
            elapsed: Duration::ZERO,
        };
        assert!(summarize(&[record(Outcome::Ok)]).is_ok());
        assert!(summarize(&[record(Outcome::Ok), record(Outcome::Failed("1".into()))]).is_err());
        assert!(summarize(&[record(Outcome::Skipped)]).is_err());
    }
}
