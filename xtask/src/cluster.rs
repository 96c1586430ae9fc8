//! A local Redis Cluster of three masters, for the tests that need a cluster.
//!
//! [`RedisCluster`] starts three `redis-server` processes in cluster mode on free loopback ports,
//! each with its own directory (holding its `nodes.conf`) and log under `cluster/` in xtask's
//! work directory, joins them with `redis-cli --cluster create`, and waits until every node
//! reports the cluster healthy. It owns the processes: dropping it stops them all.

use std::{
    ffi::OsString,
    fs::{self, File},
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::redis::{self, RedisServer};

/// The environment variable that carries the cluster's URL to the tests.
pub(crate) const URL_ENV: &str = "SWITCHBOARD_REDIS_CLUSTER_URL";

/// How many masters the cluster has (no replicas).
const MASTERS: usize = 3;

/// How many hash slots a Redis Cluster has; all of them must be assigned.
const SLOTS: u32 = 16384;

/// How far above its client port a node listens for the cluster bus (Redis's fixed offset).
const BUS_PORT_OFFSET: u16 = 10000;

/// The program that joins the nodes into a cluster.
const CLI: &str = "redis-cli";

/// The Debian/Ubuntu package that provides `redis-cli` (`redis-server` depends on it).
const CLI_PACKAGE: &str = "redis-tools";

/// The cluster settings every node starts with, after the ones of a single server (port, bind
/// address, no persistence, `--dir`). The file name is relative to the node's own directory.
const NODE_ARGS: [&str; 8] = [
    "--cluster-enabled",
    "yes",
    "--cluster-config-file",
    "nodes.conf",
    "--cluster-node-timeout",
    "2000",
    "--cluster-require-full-coverage",
    "no",
];

/// How long `redis-cli --cluster create` may run.
const CREATE_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the nodes have, once joined, to all report the cluster healthy.
const HEALTHY_TIMEOUT: Duration = Duration::from_secs(30);

/// The pause between two polls of `redis-cli` or of the nodes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The connect, read and write timeout of one `CLUSTER INFO` request.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);

/// How many lines of each log an error message shows.
const LOG_TAIL_LINES: usize = 20;

/// Three `redis-server` masters on 127.0.0.1 joined into one cluster, stopped when dropped.
///
/// Dropping it drops the nodes' [`RedisServer`]s: each is killed and reaped, and its data
/// directory (only `nodes.conf`, persistence is off) is removed; the logs are kept.
#[derive(Debug)]
pub(crate) struct RedisCluster {
    /// The running nodes, in the order given to `redis-cli --cluster create`.
    nodes: Vec<RedisServer>,
    /// The directory of the nodes' logs and directories, and of `redis-cli`'s output.
    dir: PathBuf,
}

impl RedisCluster {
    /// Starts three cluster-mode `redis-server`s from `binary`, with their files under
    /// `work_dir/cluster`, joins them into a cluster with the `redis-cli` found next to `binary`
    /// (or on PATH), and waits until every node reports all slots assigned and the cluster ok.
    pub(crate) fn start(binary: &Path, work_dir: &Path) -> Result<Self, String> {
        let cli = find_cli(binary)?;
        let dir = work_dir.join("cluster");
        let mut nodes: Vec<RedisServer> = Vec::with_capacity(MASTERS);
        for _ in 0..MASTERS {
            let taken: Vec<u16> = nodes.iter().map(RedisServer::port).collect();
            let node =
                RedisServer::start_with(binary, &dir, &NODE_ARGS, || free_cluster_port(&taken))
                    .map_err(|err| format!("could not start a cluster node: {err}"))?;
            nodes.push(node);
        }
        // From here on, dropping `cluster` stops every node, whatever goes wrong.
        let cluster = RedisCluster { nodes, dir };
        cluster.create(&cli)?;
        cluster.wait_healthy()?;
        Ok(cluster)
    }

    /// Runs `redis-cli --cluster create` over the nodes, bounded by [`CREATE_TIMEOUT`].
    fn create(&self, cli: &Path) -> Result<(), String> {
        let addresses: Vec<String> = self
            .ports()
            .iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let mut command = Command::new(cli);
        command
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            // redis-cli colours its report when TERM names an xterm, even into a file.
            .env("TERM", "dumb");
        let described = format!(
            "{CLI} --cluster create {} --cluster-replicas 0 --cluster-yes",
            addresses.join(" ")
        );
        // A file, not a pipe: nothing has to read it while the command runs.
        let output_path = self.dir.join(format!("create-{}.log", self.ports()[0]));
        let output = File::create(&output_path)
            .map_err(|err| format!("could not create {}: {err}", output_path.display()))?;
        let errors = output
            .try_clone()
            .map_err(|err| format!("could not open {}: {err}", output_path.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .map_err(|err| format!("could not run `{described}` ({}): {err}", cli.display()))?;
        let deadline = Instant::now() + CREATE_TIMEOUT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Ok(status),
                Ok(None) if Instant::now() >= deadline => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!(
                        "did not finish within {} s",
                        CREATE_TIMEOUT.as_secs()
                    ));
                }
                Ok(None) => thread::sleep(POLL_INTERVAL),
                Err(err) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(format!("could not be waited for: {err}"));
                }
            }
        };
        let printed = log_tail(&output_path, usize::MAX);
        // redis-cli exits 0 after some failures too; "[OK] All 16384 slots covered." is its
        // closing line on success.
        match status {
            Ok(status) if status.success() && printed.contains("All 16384 slots covered") => Ok(()),
            Ok(status) => Err(format!(
                "`{described}` failed ({status}). It printed:\n{printed}\n{}",
                self.log_tails()
            )),
            Err(why) => Err(format!(
                "`{described}` {why}. It printed:\n{printed}\n{}",
                self.log_tails()
            )),
        }
    }

    /// Polls `CLUSTER INFO` on every node until all report the cluster healthy (see
    /// [`is_healthy`]), or fails after [`HEALTHY_TIMEOUT`] with what each node said last.
    fn wait_healthy(&self) -> Result<(), String> {
        let deadline = Instant::now() + HEALTHY_TIMEOUT;
        loop {
            let infos: Vec<Option<String>> = self.ports().into_iter().map(cluster_info).collect();
            if infos
                .iter()
                .all(|info| info.as_deref().is_some_and(is_healthy))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let states: Vec<String> = self
                    .ports()
                    .iter()
                    .zip(&infos)
                    .map(|(port, info)| {
                        let summary = match info {
                            Some(info) => [
                                "cluster_state",
                                "cluster_slots_assigned",
                                "cluster_slots_ok",
                                "cluster_known_nodes",
                            ]
                            .iter()
                            .map(|key| format!("{key}:{}", field(info, key).unwrap_or("?")))
                            .collect::<Vec<_>>()
                            .join(" "),
                            None => "no answer to CLUSTER INFO".to_owned(),
                        };
                        format!("  127.0.0.1:{port}: {summary}")
                    })
                    .collect();
                return Err(format!(
                    "the Redis Cluster was not healthy on every node within {} s:\n{}\n{}",
                    HEALTHY_TIMEOUT.as_secs(),
                    states.join("\n"),
                    self.log_tails()
                ));
            }
            thread::sleep(POLL_INTERVAL);
        }
    }

    /// The last lines of every node's log, for an error message.
    fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(|node| {
                format!(
                    "The end of {}:\n{}",
                    node.log().display(),
                    log_tail(node.log(), LOG_TAIL_LINES)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The nodes' client ports, in creation order.
    pub(crate) fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The nodes' process ids, in creation order.
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.nodes.iter().map(RedisServer::pid).collect()
    }

    /// The directory of the nodes' logs (kept after they stop) and of `redis-cli`'s output.
    pub(crate) fn log_dir(&self) -> &Path {
        &self.dir
    }

    /// The URL clients connect to (see [`cluster_url`]).
    pub(crate) fn url(&self) -> String {
        cluster_url(&self.ports())
    }

    /// The variable that points tests at this cluster: its URL.
    pub(crate) fn env(&self) -> [(&'static str, OsString); 1] {
        [(URL_ENV, OsString::from(self.url()))]
    }
}

/// `redis-cluster://127.0.0.1:<first>?node=127.0.0.1:<second>&node=...`: the first node in the
/// authority, every other one as a `node` query parameter.
fn cluster_url(ports: &[u16]) -> String {
    let mut url = String::from("redis-cluster://");
    for (index, port) in ports.iter().enumerate() {
        let separator = match index {
            0 => "",
            1 => "?node=",
            _ => "&node=",
        };
        url.push_str(&format!("{separator}127.0.0.1:{port}"));
    }
    url
}

/// Whether a `CLUSTER INFO` reply shows a healthy cluster of [`MASTERS`] nodes: state ok, every
/// slot assigned, none of them served by a node in doubt, and every node known.
fn is_healthy(info: &str) -> bool {
    let slots = SLOTS.to_string();
    let masters = MASTERS.to_string();
    field(info, "cluster_state") == Some("ok")
        && field(info, "cluster_slots_assigned") == Some(slots.as_str())
        && field(info, "cluster_slots_ok") == Some(slots.as_str())
        && field(info, "cluster_known_nodes") == Some(masters.as_str())
}

/// The value of `key` in an INFO-style reply (`key:value` lines).
fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// A free loopback port for a cluster node: below 65536 − [`BUS_PORT_OFFSET`], with its bus
/// port free as well, and neither of them a port or bus port in `taken`.
fn free_cluster_port(taken: &[u16]) -> Result<u16, String> {
    /// The OS hands out ports at random; this many tries find a fitting one in practice.
    const TRIES: usize = 100;

    let clashes = |port: u16| {
        taken.iter().any(|&other| {
            let ours = [port, port + BUS_PORT_OFFSET];
            ours.contains(&other) || ours.contains(&(other + BUS_PORT_OFFSET))
        })
    };
    for _ in 0..TRIES {
        let port = redis::free_port()?;
        if port > u16::MAX - BUS_PORT_OFFSET || clashes(port) {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port + BUS_PORT_OFFSET)).is_ok() {
            return Ok(port);
        }
    }
    Err(format!(
        "found no free loopback port whose cluster bus port (+{BUS_PORT_OFFSET}) is free too, \
         in {TRIES} tries"
    ))
}

/// Finds `redis-cli`: next to `server`, then on PATH (and in the usual directories), else
/// installs Debian's `redis-tools` when this process may (root, with apt-get).
fn find_cli(server: &Path) -> Result<PathBuf, String> {
    let beside = server.parent().map(|dir| dir.join(CLI));
    if let Some(cli) = beside.filter(|cli| redis::is_executable(cli)) {
        return Ok(cli);
    }
    if let Some(cli) = redis::find_program(CLI) {
        return Ok(cli);
    }
    let missing = format!(
        "{CLI} (needed to create the Redis Cluster) was found neither next to {} nor on PATH. \
         It comes with redis: on Debian/Ubuntu, `sudo apt-get install {CLI_PACKAGE}`.",
        server.display()
    );
    match redis::find_program("apt-get") {
        Some(apt_get) if redis::is_root() => {
            eprintln!("xtask: {CLI} not found; installing Debian's `{CLI_PACKAGE}` package");
            redis::apt_install(&apt_get, CLI_PACKAGE).map_err(|err| format!("{err}\n{missing}"))?;
            redis::find_program(CLI).ok_or(missing)
        }
        _ => Err(missing),
    }
}

/// Sends `CLUSTER INFO` to 127.0.0.1:`port` and returns the reply's text; `None` if nothing
/// usable answered.
fn cluster_info(port: u16) -> Option<String> {
    /// A reply larger than this is not a `CLUSTER INFO`.
    const MAX_LEN: usize = 1 << 16;

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, QUERY_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(QUERY_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(QUERY_TIMEOUT)).ok()?;
    (&stream).write_all(b"CLUSTER INFO\r\n").ok()?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let len: usize = line.strip_prefix('$')?.trim_end().parse().ok()?;
    if len > MAX_LEN {
        return None;
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

/// The last `lines` lines of a log, for an error message, or why they cannot be shown.
fn log_tail(path: &Path, lines: usize) -> String {
    match fs::read(path) {
        Ok(bytes) if bytes.is_empty() => "(empty)".to_owned(),
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(err) => format!("(could not read it: {err})"),
    }
}

/// Starts a cluster for `cargo xtask redis`, next to its single server; `None`, after a warning,
/// if it cannot start (the single server is still useful).
pub(crate) fn serve_beside(binary: &Path) -> Option<RedisCluster> {
    match RedisCluster::start(binary, &crate::xtask_dir()) {
        Ok(cluster) => Some(cluster),
        Err(message) => {
            eprintln!("xtask: warning: no Redis Cluster for the cluster tests: {message}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_names_the_first_node_then_the_others_as_node_parameters() {
        assert_eq!(
            cluster_url(&[7001, 7002, 7003]),
            "redis-cluster://127.0.0.1:7001?node=127.0.0.1:7002&node=127.0.0.1:7003"
        );
        assert_eq!(cluster_url(&[7001]), "redis-cluster://127.0.0.1:7001");
    }

    #[test]
    fn only_a_complete_ok_cluster_is_healthy() {
        let info = "cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\n\
                    cluster_slots_ok:16384\r\ncluster_slots_pfail:0\r\ncluster_known_nodes:3\r\n";
        assert!(is_healthy(info));
        assert!(!is_healthy(&info.replace("state:ok", "state:fail")));
        assert!(!is_healthy(
            &info.replace("assigned:16384", "assigned:16383")
        ));
        assert!(!is_healthy(
            &info.replace("slots_ok:16384", "slots_ok:10000")
        ));
        assert!(!is_healthy(&info.replace("known_nodes:3", "known_nodes:2")));
        assert!(!is_healthy(""));
        assert_eq!(field(info, "cluster_slots"), None);
    }

    #[test]
    fn cluster_ports_leave_room_for_their_bus_ports() {
        let first = free_cluster_port(&[]).expect("a port");
        let second = free_cluster_port(&[first]).expect("another port");
        for port in [first, second] {
            assert!(port <= u16::MAX - BUS_PORT_OFFSET);
        }
        assert_ne!(first, second);
        assert_ne!(first + BUS_PORT_OFFSET, second);
        assert_ne!(first, second + BUS_PORT_OFFSET);
    }
}
