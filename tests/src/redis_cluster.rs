//! A Redis Cluster of a test's own: three masters to kill, restart and
//! reshard.
//!
//! [`RedisClusterProcess`] starts three `redis-server`s in cluster mode on
//! free loopback ports, joins them with `redis-cli --cluster create` and
//! waits until every node reports the cluster healthy. Each node keeps its
//! `nodes.conf` and log in a directory of its own under a temporary
//! directory unique to the instance, so a restarted node rejoins with its
//! identity and slots. Dropping the value kills the nodes and removes the
//! directory.
//!
//! Every wait is bounded and polls a condition; a failure panics with what
//! the nodes said last and the end of their logs.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::redis_process::{free_port, redis_server_binary};

/// The variable through which `cargo xtask test` hands over the URL of the
/// cluster it runs.
pub const CLUSTER_URL_ENV: &str = "SWITCHBOARD_REDIS_CLUSTER_URL";

/// How many hash slots a Redis Cluster has.
pub const SLOTS: u16 = 16384;

/// How many masters the cluster has (no replicas).
const MASTERS: usize = 3;

/// How far above its client port a node listens for the cluster bus
/// (Redis's fixed offset).
const BUS_PORT_OFFSET: u16 = 10000;

/// How long a node has to answer PING after it was started.
const READY_LIMIT: Duration = Duration::from_secs(20);

/// How long the nodes have to agree on a healthy cluster, or on a change.
/// Generous: a loaded two-core machine runs many clusters at once.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// How long one `redis-cli --cluster` command may run.
const CLI_LIMIT: Duration = Duration::from_secs(120);

/// The pause between two polls.
const POLL: Duration = Duration::from_millis(100);

/// The connect, read and write timeout of one command.
const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// How many free ports a node tries before startup is declared failed.
const START_ATTEMPTS: usize = 3;

/// How many lines of each log a panic message shows.
const LOG_TAIL_LINES: usize = 20;

/// The keys moved by one MIGRATE of [`RedisClusterProcess::move_slot`].
const MIGRATE_BATCH: usize = 100;

/// Numbers the instances of this process, for unique directory names.
static INSTANCES: AtomicUsize = AtomicUsize::new(0);

/// The cluster URL handed to the tests by `cargo xtask test`.
///
/// Panics with directions when it is not set, as [`crate::redis_url`] does.
pub fn redis_cluster_url() -> String {
    std::env::var(CLUSTER_URL_ENV)
        .ok()
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| {
            panic!(
                "{CLUSTER_URL_ENV} is not set: run the Redis Cluster tests with \
                 `cargo xtask test` (whose `redis-cluster` step starts one; if that step \
                 failed, its error says why), or start one with `cargo xtask redis` and \
                 export the cluster URL it prints"
            )
        })
}

/// The `redis-cluster://` URL of nodes on 127.0.0.1 at `ports`: the first
/// in the authority, the others as `node` query parameters.
pub fn cluster_url(ports: &[u16]) -> String {
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

/// A RESP reply, as read by [`RedisClusterProcess::command`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// A simple string (`+OK`).
    Status(String),
    /// An error (`-MOVED ...`).
    Error(String),
    /// An integer.
    Integer(i64),
    /// A bulk string; `None` is the null bulk string.
    Bulk(Option<Vec<u8>>),
    /// An array; `None` is the null array.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// The text of a status or bulk string reply.
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Status(text) => Some(text.clone()),
            Reply::Bulk(Some(bytes)) => Some(String::from_utf8_lossy(bytes).into_owned()),
            _ => None,
        }
    }

    /// The elements of a (non-null) array reply.
    pub fn items(&self) -> Option<&[Reply]> {
        match self {
            Reply::Array(Some(items)) => Some(items),
            _ => None,
        }
    }

    /// The value of an integer reply.
    pub fn integer(&self) -> Option<i64> {
        match self {
            Reply::Integer(value) => Some(*value),
            _ => None,
        }
    }
}

/// One node of the cluster.
#[derive(Debug)]
struct Node {
    /// Its client port, kept across restarts (the bus port is 10000 above).
    port: u16,
    /// Its cluster node id, kept across restarts in its `nodes.conf`.
    id: String,
    /// Its own directory: `--dir`, `nodes.conf` and the log.
    dir: PathBuf,
    /// Its process, `None` while killed.
    child: Option<Child>,
}

impl Node {
    /// Its log file (its stdout and stderr).
    fn log(&self) -> PathBuf {
        self.dir.join("redis.log")
    }
}

/// A three-master Redis Cluster on free loopback ports, killed (and its
/// files removed) when dropped.
#[derive(Debug)]
pub struct RedisClusterProcess {
    /// The redis-server binary.
    binary: PathBuf,
    /// The redis-cli binary.
    cli: PathBuf,
    /// The instance's temporary directory, holding one per node.
    root: PathBuf,
    /// The nodes, in the order given to `redis-cli --cluster create`.
    nodes: Vec<Node>,
}

impl RedisClusterProcess {
    /// Starts three masters with [`redis_server_binary`], joins them with
    /// `redis-cli --cluster create` (the `redis-cli` next to the server, or
    /// the one on PATH) and waits until every node reports all slots
    /// assigned and the cluster ok.
    pub fn start() -> RedisClusterProcess {
        let binary = redis_server_binary();
        let root = std::env::temp_dir().join(format!(
            "switchboard-cluster-{}-{}",
            std::process::id(),
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        ));
        // Left behind by an earlier process with the same id, perhaps.
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(&root)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
        let mut cluster = RedisClusterProcess {
            cli: redis_cli_beside(&binary),
            binary,
            root,
            nodes: Vec::with_capacity(MASTERS),
        };
        for index in 0..MASTERS {
            cluster.add_node(index);
        }
        cluster.create();
        for index in 0..MASTERS {
            let id = cluster.command(index, &["CLUSTER", "MYID"]).text();
            cluster.nodes[index].id = id.unwrap_or_else(|| panic!("node {index} has no id"));
        }
        cluster.wait_ok();
        cluster
    }

    /// Starts node `index` on a free port, trying another port if the one
    /// found free is taken meanwhile.
    fn add_node(&mut self, index: usize) {
        let dir = self.root.join(format!("node-{index}"));
        fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            self.nodes.truncate(index);
            let taken: Vec<u16> = self.nodes.iter().map(|node| node.port).collect();
            self.nodes.push(Node {
                port: cluster_port(&taken),
                id: String::new(),
                dir: dir.clone(),
                child: None,
            });
            match self.spawn(index) {
                Ok(()) => return,
                Err(failure) if failure.contains("Address already in use") => {
                    last_failure = failure;
                    // A fresh log for the next port.
                    let _ = fs::remove_file(self.nodes[index].log());
                }
                Err(failure) => panic!("{failure}"),
            }
        }
        panic!(
            "node {index} found no free port in {START_ATTEMPTS} attempts; last: {last_failure}"
        );
    }

    /// Starts node `index`'s process and waits until it answers; on failure
    /// the process is gone again.
    fn spawn(&mut self, index: usize) -> Result<(), String> {
        let result = self.spawn_and_wait(index);
        if result.is_err() {
            self.kill(index);
        }
        result
    }

    /// [`spawn`](Self::spawn), without the cleanup.
    fn spawn_and_wait(&mut self, index: usize) -> Result<(), String> {
        let node = &mut self.nodes[index];
        let log = node.log();
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", log.display()));
        let stderr = stdout.try_clone().expect("a second handle on the log");
        let child = Command::new(&self.binary)
            .arg("--port")
            .arg(node.port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--cluster-enabled", "yes"])
            .arg("--cluster-config-file")
            .arg(node.dir.join("nodes.conf"))
            .args(["--cluster-node-timeout", "2000"])
            .args(["--cluster-require-full-coverage", "no"])
            .arg("--dir")
            .arg(&node.dir)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        let pid = child.id();
        node.child = Some(child);
        let port = node.port;
        let deadline = Instant::now() + READY_LIMIT;
        loop {
            if let Some(status) = self.exit_status(index) {
                return Err(format!(
                    "redis-server node {index} on port {port} exited during startup \
                     ({status}); the end of its log:\n{}",
                    log_tail(&log)
                ));
            }
            if let Ok(Reply::Bulk(Some(info))) = query(port, &[b"INFO", b"server"]) {
                let info = String::from_utf8_lossy(&info);
                if field(&info, "process_id") == Some(pid.to_string().as_str()) {
                    return Ok(());
                }
                // Another redis holds the port: ours is exiting.
                return Err(format!(
                    "another redis-server answers on port {port} (Address already in use)"
                ));
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "redis-server node {index} did not answer on port {port} within {:?}; \
                     the end of its log:\n{}",
                    READY_LIMIT,
                    log_tail(&log)
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// How node `index`'s process ended, if it has.
    fn exit_status(&mut self, index: usize) -> Option<ExitStatus> {
        self.nodes[index]
            .child
            .as_mut()
            .and_then(|child| child.try_wait().ok().flatten())
    }

    /// Joins the nodes with `redis-cli --cluster create`.
    fn create(&self) {
        let mut args = vec!["--cluster".to_owned(), "create".to_owned()];
        args.extend(self.ports().iter().map(|port| format!("127.0.0.1:{port}")));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"].map(String::from));
        let printed = self.cli(&args, "create");
        assert!(
            printed.contains("All 16384 slots covered"),
            "`redis-cli {}` did not cover every slot. It printed:\n{printed}\n{}",
            args.join(" "),
            self.log_tails()
        );
    }

    /// Runs `redis-cli` with `args` (output into a file named after `what`,
    /// in the instance's directory), bounded by [`CLI_LIMIT`]; returns what
    /// it printed, or panics if it fails.
    fn cli(&self, args: &[String], what: &str) -> String {
        let described = format!("redis-cli {}", args.join(" "));
        let output_path = self.root.join(format!(
            "{what}-{}.log",
            INSTANCES.fetch_add(1, Ordering::Relaxed)
        ));
        let output = File::create(&output_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", output_path.display()));
        let errors = output.try_clone().expect("a second handle on the output");
        let mut child = Command::new(&self.cli)
            .args(args)
            // redis-cli colours its report when TERM names an xterm.
            .env("TERM", "dumb")
            .stdin(Stdio::null())
            .stdout(output)
            .stderr(errors)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {} ({described}): {e}", self.cli.display()));
        let deadline = Instant::now() + CLI_LIMIT;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => std::thread::sleep(POLL),
                _ => {
                    let _ = child.kill();
                    let _ = child.wait();
                    break None;
                }
            }
        };
        let printed = fs::read_to_string(&output_path).unwrap_or_default();
        match status {
            Some(status) if status.success() => printed,
            Some(status) => panic!(
                "`{described}` failed ({status}). It printed:\n{printed}\n{}",
                self.log_tails()
            ),
            None => panic!(
                "`{described}` did not finish within {CLI_LIMIT:?}. It printed:\n{printed}\n{}",
                self.log_tails()
            ),
        }
    }

    /// `redis-cluster://127.0.0.1:{p1}?node=127.0.0.1:{p2}&node=127.0.0.1:{p3}`.
    pub fn url(&self) -> String {
        cluster_url(&self.ports())
    }

    /// The nodes' client ports, in creation order (kept across restarts).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|node| node.port).collect()
    }

    /// Node `index`'s client port.
    pub fn port(&self, index: usize) -> u16 {
        self.nodes[index].port
    }

    /// Node `index`'s cluster node id (kept across restarts).
    pub fn node_id(&self, index: usize) -> &str {
        &self.nodes[index].id
    }

    /// The index of the node listening on `port`.
    pub fn index_of(&self, port: u16) -> usize {
        self.nodes
            .iter()
            .position(|node| node.port == port)
            .unwrap_or_else(|| panic!("no node of this cluster listens on port {port}"))
    }

    /// Whether node `index` runs (it was not killed, or was restarted).
    pub fn is_running(&self, index: usize) -> bool {
        self.nodes[index].child.is_some()
    }

    /// Sends one command to node `index` and returns its reply (an error
    /// reply included); panics if the node cannot be reached.
    pub fn command(&self, index: usize, args: &[&str]) -> Reply {
        let args: Vec<&[u8]> = args.iter().map(|arg| arg.as_bytes()).collect();
        query(self.port(index), &args).unwrap_or_else(|e| {
            panic!(
                "node {index} (port {}) did not answer: {e}",
                self.port(index)
            )
        })
    }

    /// Node `index`'s `CLUSTER INFO` text.
    pub fn cluster_info(&self, index: usize) -> String {
        self.command(index, &["CLUSTER", "INFO"])
            .text()
            .unwrap_or_else(|| panic!("node {index} gave no CLUSTER INFO"))
    }

    /// The hash slot of `key`.
    pub fn key_slot(&self, key: &str) -> u16 {
        let index = self.first_running();
        let reply = self.command(index, &["CLUSTER", "KEYSLOT", key]);
        reply
            .integer()
            .and_then(|slot| u16::try_from(slot).ok())
            .unwrap_or_else(|| panic!("CLUSTER KEYSLOT {key}: {reply:?}"))
    }

    /// Kills node `index` (SIGKILL) and reaps it. Its slots stay assigned
    /// to it; the others mark it failed after the node timeout (2 s).
    pub fn kill(&mut self, index: usize) {
        if let Some(mut child) = self.nodes[index].child.take() {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `index` again (killing it first if it runs) on the same
    /// port and with the same `nodes.conf`, so it rejoins with its id and
    /// slots; returns once it answers and [`wait_ok`](Self::wait_ok) holds.
    pub fn restart(&mut self, index: usize) {
        self.kill(index);
        if let Err(failure) = self.spawn(index) {
            panic!("restarting node {index}: {failure}");
        }
        self.wait_ok();
    }

    /// Freezes node `index` (SIGSTOP): connections stay open, nothing
    /// answers.
    pub fn pause(&self, index: usize) {
        self.signal(index, "-STOP");
    }

    /// Resumes node `index` after [`pause`](Self::pause) (SIGCONT).
    pub fn resume(&self, index: usize) {
        self.signal(index, "-CONT");
    }

    /// Sends `signal` to node `index`'s process with kill(1).
    fn signal(&self, index: usize, signal: &str) {
        let child = self.nodes[index]
            .child
            .as_ref()
            .unwrap_or_else(|| panic!("node {index} is not running"));
        let status = Command::new("kill")
            .arg(signal)
            .arg(child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} node {index} failed");
    }

    /// Waits until every running node reports `cluster_state:ok` with all
    /// slots assigned and the running nodes agree on who owns which slot;
    /// when all nodes run, also until no node considers another in doubt
    /// (`cluster_slots_ok:16384`) and all know all three.
    pub fn wait_ok(&self) {
        let all_running = self.nodes.iter().all(|node| node.child.is_some());
        let slots = SLOTS.to_string();
        let masters = MASTERS.to_string();
        self.wait_until("the cluster to be healthy", |infos, maps| {
            let healthy = infos.iter().all(|info| {
                field(info, "cluster_state") == Some("ok")
                    && field(info, "cluster_slots_assigned") == Some(slots.as_str())
                    && (!all_running
                        || field(info, "cluster_slots_ok") == Some(slots.as_str())
                            && field(info, "cluster_known_nodes") == Some(masters.as_str()))
            });
            healthy && maps.windows(2).all(|pair| pair[0] == pair[1])
        });
    }

    /// Waits until every running node other than `index` reports node
    /// `index` as failed (`fail`, not only `fail?`), as they do about
    /// 2–4 s after it was killed or paused.
    pub fn wait_marked_failed(&self, index: usize) {
        let id = self.node_id(index).to_owned();
        let others: Vec<usize> = (0..self.nodes.len())
            .filter(|&other| other != index && self.is_running(other))
            .collect();
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            let marked = others.iter().all(|&other| {
                let nodes = query(self.port(other), &[b"CLUSTER", b"NODES"])
                    .ok()
                    .and_then(|reply| reply.text())
                    .unwrap_or_default();
                nodes.lines().any(|line| {
                    let mut fields = line.split(' ');
                    fields.next() == Some(id.as_str())
                        && fields
                            .nth(1)
                            .is_some_and(|flags| flags.split(',').any(|flag| flag == "fail"))
                })
            });
            if marked {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the other nodes did not mark node {index} failed within {SETTLE_LIMIT:?}\n{}",
                self.log_tails()
            );
            std::thread::sleep(POLL);
        }
    }

    /// Polls every running node's `CLUSTER INFO` and slot map until `done`
    /// holds for them, or panics after [`SETTLE_LIMIT`] with what they said
    /// last. A node that does not answer counts as not done.
    fn wait_until(&self, what: &str, mut done: impl FnMut(&[String], &[Vec<SlotRange>]) -> bool) {
        let deadline = Instant::now() + SETTLE_LIMIT;
        loop {
            let running: Vec<&Node> = self
                .nodes
                .iter()
                .filter(|node| node.child.is_some())
                .collect();
            let infos: Vec<Option<String>> = running
                .iter()
                .map(|node| {
                    query(node.port, &[b"CLUSTER", b"INFO"])
                        .ok()
                        .and_then(|reply| reply.text())
                })
                .collect();
            let maps: Vec<Option<Vec<SlotRange>>> =
                running.iter().map(|node| slot_ranges(node.port)).collect();
            if infos.iter().all(Option::is_some) && maps.iter().all(Option::is_some) {
                let infos: Vec<String> = infos.iter().flatten().cloned().collect();
                let maps: Vec<Vec<SlotRange>> = maps.iter().flatten().cloned().collect();
                if done(&infos, &maps) {
                    return;
                }
            }
            if Instant::now() >= deadline {
                let states: Vec<String> = running
                    .iter()
                    .zip(&infos)
                    .zip(&maps)
                    .map(|((node, info), map)| {
                        let info = info.as_deref().map_or_else(
                            || "no CLUSTER INFO".to_owned(),
                            |info| {
                                [
                                    "cluster_state",
                                    "cluster_slots_assigned",
                                    "cluster_slots_ok",
                                    "cluster_slots_pfail",
                                    "cluster_slots_fail",
                                    "cluster_known_nodes",
                                ]
                                .iter()
                                .map(|key| format!("{key}:{}", field(info, key).unwrap_or("?")))
                                .collect::<Vec<_>>()
                                .join(" ")
                            },
                        );
                        format!("  port {}: {info}; slots {map:?}", node.port)
                    })
                    .collect();
                panic!(
                    "waited {SETTLE_LIMIT:?} for {what}; the running nodes said:\n{}\n{}",
                    states.join("\n"),
                    self.log_tails()
                );
            }
            std::thread::sleep(POLL);
        }
    }

    /// The slot map as the first running node sees it: `(first, last,
    /// port)` ranges in slot order.
    pub fn slot_ranges(&self) -> Vec<(u16, u16, u16)> {
        let port = self.port(self.first_running());
        slot_ranges(port)
            .unwrap_or_else(|| panic!("no CLUSTER SLOTS from port {port}"))
            .into_iter()
            .map(|range| (range.first, range.last, range.port))
            .collect()
    }

    /// The port of the node that owns `slot`, as the first running node
    /// sees it.
    pub fn slot_owner(&self, slot: u16) -> u16 {
        self.slot_ranges()
            .into_iter()
            .find(|&(first, last, _)| (first..=last).contains(&slot))
            .map(|(_, _, port)| port)
            .unwrap_or_else(|| panic!("slot {slot} is not assigned"))
    }

    /// Moves `slot`, with its keys, to node `to` by a live migration, the
    /// way `redis-cli --cluster reshard` moves each slot: IMPORTING on the
    /// target, MIGRATING on the source, MIGRATE of its keys in batches,
    /// then `CLUSTER SETSLOT <slot> NODE <target>` on the target, the
    /// source and the others. Returns once every running node agrees.
    pub fn move_slot(&self, slot: u16, to: usize) {
        assert!(slot < SLOTS, "slot {slot} does not exist");
        let from = self.index_of(self.slot_owner(slot));
        if from == to {
            return;
        }
        assert!(
            self.is_running(from) && self.is_running(to),
            "moving slot {slot} from node {from} to node {to} needs both running"
        );
        let slot_arg = slot.to_string();
        let slot_arg = slot_arg.as_str();
        let to_id = self.node_id(to).to_owned();
        let from_id = self.node_id(from).to_owned();
        self.expect_ok(to, &["CLUSTER", "SETSLOT", slot_arg, "IMPORTING", &from_id]);
        self.expect_ok(from, &["CLUSTER", "SETSLOT", slot_arg, "MIGRATING", &to_id]);
        let batch = MIGRATE_BATCH.to_string();
        loop {
            let keys = self.command(from, &["CLUSTER", "GETKEYSINSLOT", slot_arg, &batch]);
            let keys: Vec<Vec<u8>> = keys
                .items()
                .unwrap_or_else(|| panic!("CLUSTER GETKEYSINSLOT {slot}: {keys:?}"))
                .iter()
                .filter_map(|key| match key {
                    Reply::Bulk(Some(key)) => Some(key.clone()),
                    _ => None,
                })
                .collect();
            if keys.is_empty() {
                break;
            }
            let port = self.port(to).to_string();
            let mut args: Vec<&[u8]> = vec![
                b"MIGRATE",
                b"127.0.0.1",
                port.as_bytes(),
                b"",
                b"0",
                b"10000",
                b"KEYS",
            ];
            args.extend(keys.iter().map(Vec::as_slice));
            let reply = query(self.port(from), &args)
                .unwrap_or_else(|e| panic!("MIGRATE from node {from}: {e}"));
            assert!(
                matches!(&reply, Reply::Status(status) if status == "OK" || status == "NOKEY"),
                "MIGRATE of slot {slot} from node {from} to node {to}: {reply:?}"
            );
        }
        // The target first, so that the slot is never left without an owner
        // that accepts it; then the source, then everyone else.
        let mut order = vec![to, from];
        order.extend((0..self.nodes.len()).filter(|index| *index != to && *index != from));
        for index in order.into_iter().filter(|&index| self.is_running(index)) {
            self.expect_ok(index, &["CLUSTER", "SETSLOT", slot_arg, "NODE", &to_id]);
        }
        let port = self.port(to);
        self.wait_until(&format!("slot {slot} to belong to node {to}"), |_, maps| {
            maps.iter().all(|map| {
                map.iter()
                    .any(|range| (range.first..=range.last).contains(&slot) && range.port == port)
            })
        });
    }

    /// Moves `count` slots from node `from` to node `to` with `redis-cli
    /// --cluster reshard`, then waits for [`wait_ok`](Self::wait_ok).
    pub fn reshard(&self, from: usize, to: usize, count: usize) {
        // redis-cli refuses to reshard a cluster whose nodes disagree.
        self.wait_ok();
        let args: Vec<String> = [
            "--cluster",
            "reshard",
            &format!("127.0.0.1:{}", self.port(from)),
            "--cluster-from",
            self.node_id(from),
            "--cluster-to",
            self.node_id(to),
            "--cluster-slots",
            &count.to_string(),
            "--cluster-yes",
        ]
        .map(String::from)
        .to_vec();
        self.cli(&args, "reshard");
        self.wait_ok();
    }

    /// Sends a command to node `index` that must answer `+OK`.
    fn expect_ok(&self, index: usize, args: &[&str]) {
        let reply = self.command(index, args);
        assert_eq!(
            reply,
            Reply::Status("OK".to_owned()),
            "`{}` on node {index}",
            args.join(" ")
        );
    }

    /// The first node that runs.
    fn first_running(&self) -> usize {
        (0..self.nodes.len())
            .find(|&index| self.is_running(index))
            .expect("a running node")
    }

    /// The last lines of every node's log, for a panic message.
    fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .enumerate()
            .map(|(index, node)| {
                format!(
                    "The end of node {index}'s log (port {}):\n{}",
                    node.port,
                    log_tail(&node.log())
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for RedisClusterProcess {
    fn drop(&mut self) {
        for index in 0..self.nodes.len() {
            self.kill(index);
        }
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// One range of the slot map: slots `first..=last` served by the master on
/// `port`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct SlotRange {
    /// The first slot.
    first: u16,
    /// The last slot (inclusive).
    last: u16,
    /// The master's port.
    port: u16,
}

/// The slot map as the node on `port` sees it (`CLUSTER SLOTS`), sorted;
/// `None` if it cannot be had.
fn slot_ranges(port: u16) -> Option<Vec<SlotRange>> {
    let reply = query(port, &[b"CLUSTER", b"SLOTS"]).ok()?;
    let mut ranges = Vec::new();
    for range in reply.items()? {
        let range = range.items()?;
        let master = range.get(2)?.items()?;
        ranges.push(SlotRange {
            first: u16::try_from(range.first()?.integer()?).ok()?,
            last: u16::try_from(range.get(1)?.integer()?).ok()?,
            port: u16::try_from(master.get(1)?.integer()?).ok()?,
        });
    }
    ranges.sort();
    Some(ranges)
}

/// The redis-cli that belongs with `server`: the one in its directory,
/// else `redis-cli` from PATH.
fn redis_cli_beside(server: &Path) -> PathBuf {
    server
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join("redis-cli"))
        .filter(|cli| cli.is_file())
        .unwrap_or_else(|| PathBuf::from("redis-cli"))
}

/// A free loopback port for a node: low enough for its bus port (10000
/// above) to exist, with that bus port free too, and clashing with no port
/// or bus port of the nodes at `taken`.
fn cluster_port(taken: &[u16]) -> u16 {
    for _ in 0..100 {
        let port = free_port();
        if port > u16::MAX - BUS_PORT_OFFSET {
            continue;
        }
        let ours = [port, port + BUS_PORT_OFFSET];
        let clashes = taken
            .iter()
            .any(|&other| ours.contains(&other) || ours.contains(&(other + BUS_PORT_OFFSET)));
        if !clashes && TcpListener::bind(("127.0.0.1", port + BUS_PORT_OFFSET)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port with a free cluster bus port");
}

/// Sends one command (a RESP array of bulk strings) to 127.0.0.1:`port`
/// and reads its reply.
fn query(port: u16, args: &[&[u8]]) -> io::Result<Reply> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut request = format!("*{}\r\n", args.len()).into_bytes();
    for arg in args {
        request.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        request.extend_from_slice(arg);
        request.extend_from_slice(b"\r\n");
    }
    (&stream).write_all(&request)?;
    read_reply(&mut BufReader::new(&stream))
}

/// Reads one RESP2 reply.
fn read_reply(reader: &mut impl BufRead) -> io::Result<Reply> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    let mut line = Vec::new();
    reader.read_until(b'\n', &mut line)?;
    if line.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    let text = String::from_utf8_lossy(&line);
    let text = text.trim_end_matches(['\r', '\n']);
    let (kind, rest) = text.split_at(text.chars().next().map_or(0, char::len_utf8));
    let length = || -> io::Result<i64> {
        rest.parse()
            .map_err(|_| invalid(format!("bad length in {text:?}")))
    };
    match kind {
        "+" => Ok(Reply::Status(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => Ok(Reply::Integer(length()?)),
        "$" => match usize::try_from(length()?) {
            Err(_) => Ok(Reply::Bulk(None)),
            Ok(len) => {
                let mut body = vec![0; len + 2];
                reader.read_exact(&mut body)?;
                body.truncate(len);
                Ok(Reply::Bulk(Some(body)))
            }
        },
        "*" => match usize::try_from(length()?) {
            Err(_) => Ok(Reply::Array(None)),
            Ok(len) => (0..len)
                .map(|_| read_reply(reader))
                .collect::<io::Result<Vec<_>>>()
                .map(|items| Reply::Array(Some(items))),
        },
        _ => Err(invalid(format!("not a RESP reply: {text:?}"))),
    }
}

/// The value of `key` in an INFO-style reply (`key:value` lines).
fn field<'a>(info: &'a str, key: &str) -> Option<&'a str> {
    info.lines().find_map(|line| {
        line.strip_prefix(key)
            .and_then(|rest| rest.strip_prefix(':'))
            .map(str::trim)
    })
}

/// The last lines of a log, or why they cannot be shown.
fn log_tail(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) if bytes.is_empty() => "(empty)".to_owned(),
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
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
    }

    #[test]
    fn replies_of_every_kind_are_read() {
        let mut input: &[u8] = b"*4\r\n+OK\r\n:-3\r\n$5\r\nab\r\nc\r\n*2\r\n$-1\r\n-ERR no\r\n";
        assert_eq!(
            read_reply(&mut input).unwrap(),
            Reply::Array(Some(vec![
                Reply::Status("OK".to_owned()),
                Reply::Integer(-3),
                Reply::Bulk(Some(b"ab\r\nc".to_vec())),
                Reply::Array(Some(vec![
                    Reply::Bulk(None),
                    Reply::Error("ERR no".to_owned())
                ])),
            ]))
        );
        assert!(read_reply(&mut &b""[..]).is_err());
    }
}
