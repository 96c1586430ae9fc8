//! `switchboard-bench`: the benchmarks of `cargo xtask bench`, measured
//! against raw Redis pub/sub in the same run.
//!
//! ```text
//! switchboard-bench --redis <url> [--quick] [--only B1,B3] [--out <path>]
//!                   [--chat <chat example binary> | --chat-missing <reason>]
//!                   [--peer <switchboard-peer binary> | --peer-missing <reason>]
//!                   (B9 also runs `bare-ws`, found beside this binary)
//!                   [--cluster <redis-cluster:// url> | --cluster-missing <reason>]
//! ```
//!
//! Prints a table (scenario, figure, switchboard, baseline, ratio, target,
//! met?) and writes the same rows, with machine facts, as JSON to `--out`.
//! `cargo xtask bench` starts the Redis server, builds this binary in
//! release mode and runs it; see the `switchboard_tests::bench` module for
//! what each scenario does.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use switchboard_tests::bench::report::{self, Machine, Row};
use switchboard_tests::bench::{
    BenchResult, Chat, Cluster, Peer, Settings, chat, churn, density, fanout, latency, memory,
    peer, presence, raw, shards, throughput,
};

const USAGE: &str = "usage: switchboard-bench --redis <url> [--quick] [--only B1,B3] [--out <path>] \
                     [--chat <binary> | --chat-missing <reason>] \
                     [--peer <binary> | --peer-missing <reason>] \
                     [--cluster <url> | --cluster-missing <reason>]";

/// The scenarios, in the order they run.
const SCENARIOS: [(&str, &str); 10] = [
    ("B1", "send_all throughput A->B"),
    ("B2", "send_connection latency at 5k/s"),
    ("B3", "send_group to 10k members"),
    ("B4", "20k connects and disconnects"),
    ("B5", "memory per idle connection"),
    (
        "B6",
        "chat example over WebSockets, Server-Sent Events and long polling",
    ),
    (
        "B7",
        "send_group over 100 groups, 1 node vs 3-master cluster",
    ),
    (
        "B8",
        "peer row: the chat workload on switchboard and on socketioxide",
    ),
    (
        "B9",
        "connection density: idle WebSockets on the chat example",
    ),
    ("B10", "presence queries across 3 servers"),
];

/// What the command line asks for.
enum Invocation {
    Bench {
        settings: Settings,
        out: PathBuf,
    },
    Child {
        kind: String,
        url: String,
        count: usize,
    },
}

fn parse() -> Result<Invocation, String> {
    let mut args = std::env::args().skip(1);
    let mut url = None;
    let mut quick = false;
    let mut only = None;
    let mut out = PathBuf::from("target/bench/results.json");
    let mut chat = Chat::Missing("no --chat binary given".to_owned());
    let mut peer = Peer::Missing("no --peer binary given".to_owned());
    let mut cluster = Cluster::Missing("no --cluster URL given".to_owned());
    let mut child = None;
    let mut count = 0;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--redis" => url = Some(value("--redis")?),
            "--quick" => quick = true,
            "--only" => {
                let ids: Vec<String> = value("--only")?
                    .split(',')
                    .map(|id| id.trim().to_ascii_uppercase())
                    .filter(|id| !id.is_empty())
                    .collect();
                if let Some(bad) = ids
                    .iter()
                    .find(|id| !SCENARIOS.iter().any(|(known, _)| known == id))
                {
                    return Err(format!("unknown scenario {bad} (known: B1..B10)"));
                }
                only = Some(ids);
            }
            "--out" => out = PathBuf::from(value("--out")?),
            "--chat" => chat = Chat::Binary(PathBuf::from(value("--chat")?)),
            "--chat-missing" => chat = Chat::Missing(value("--chat-missing")?),
            "--peer" => peer = Peer::Binary(PathBuf::from(value("--peer")?)),
            "--peer-missing" => peer = Peer::Missing(value("--peer-missing")?),
            "--cluster" => cluster = Cluster::Url(value("--cluster")?),
            "--cluster-missing" => cluster = Cluster::Missing(value("--cluster-missing")?),
            "--child" => child = Some(value("--child")?),
            "--count" => {
                count = value("--count")?
                    .parse()
                    .map_err(|_| "--count needs a number")?
            }
            "-h" | "--help" => return Err(String::new()),
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let url = url.ok_or("--redis <url> is required")?;
    if let Some(kind) = child {
        return Ok(Invocation::Child { kind, url, count });
    }
    let self_exe = std::env::current_exe().map_err(|e| format!("cannot find myself: {e}"))?;
    Ok(Invocation::Bench {
        settings: Settings {
            redis_url: url,
            quick,
            only,
            chat,
            peer,
            cluster,
            self_exe,
        },
        out,
    })
}

fn main() -> ExitCode {
    let invocation = match parse() {
        Ok(invocation) => invocation,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("switchboard-bench: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                // fred warns when a stopped client is asked to quit, which
                // every manager's shutdown does; that is noise here.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,fred=error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    let result = match invocation {
        Invocation::Child { kind, url, count } => memory::child_main(&kind, &url, count),
        Invocation::Bench { settings, out } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(Into::into)
            // Run on the runtime's workers, as server code does, rather
            // than on this thread: every wake-up of a future driven by
            // `block_on` from a worker would cost a thread switch.
            .and_then(|runtime| {
                runtime.block_on(async { tokio::spawn(bench(settings, out)).await? })
            }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchboard-bench: error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn bench(settings: Settings, out: PathBuf) -> BenchResult<()> {
    let machine = Machine::detect(raw::redis_version(&settings.redis_url), settings.quick);
    println!(
        "switchboard bench ({} mode): {}",
        if settings.quick { "quick" } else { "full" },
        machine.summary()
    );
    let started = Instant::now();
    let mut rows: Vec<Row> = Vec::new();
    for (id, name) in SCENARIOS {
        if !settings.selected(id) {
            continue;
        }
        println!("{id}: {name}...");
        let scenario_started = Instant::now();
        let result = match id {
            "B1" => throughput::run(&settings).await,
            "B2" => latency::run(&settings).await,
            "B3" => fanout::run(&settings).await,
            "B4" => churn::run(&settings).await,
            "B5" => memory::run(&settings).await,
            "B6" => chat::run(&settings).await,
            "B8" => peer::run(&settings).await,
            "B9" => density::run(&settings).await,
            "B10" => presence::run(&settings).await,
            _ => shards::run(&settings).await,
        };
        match result {
            Ok(new) => rows.extend(new),
            Err(e) => {
                eprintln!("{id} failed: {e}");
                rows.push(Row::skipped(id, name, format!("failed: {e}")));
            }
        }
        println!(
            "{id}: done in {:.1} s",
            scenario_started.elapsed().as_secs_f64()
        );
    }
    println!();
    print!("{}", report::table(&rows));
    let judged: Vec<bool> = rows.iter().filter_map(Row::met).collect();
    println!(
        "\n{} of {} targets met; {:.0} s in all. Results: {}",
        judged.iter().filter(|met| **met).count(),
        judged.len(),
        started.elapsed().as_secs_f64(),
        out.display()
    );
    report::write_json(&out, &machine, &rows)?;
    Ok(())
}
