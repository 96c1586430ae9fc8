//! `cargo xtask fuzz`: coverage-guided fuzzing of the decoders with libFuzzer, on stable Rust.
//!
//! The targets are the `[[bin]]`s of `tests/fuzz/`, a package outside the workspace. They are
//! built with the sanitizer-coverage instrumentation that cargo-fuzz asks rustc for, minus the
//! sanitizers themselves (those need a nightly toolchain): every edge gets an 8-bit counter and
//! every comparison reports its operands, which is what libFuzzer's guidance reads. Debug
//! assertions and overflow checks stay on, so arithmetic slips crash instead of wrapping.
//!
//! Everything lands under `<target dir>/fuzz/`, apart from the main build's cache:
//!
//! - `<triple>/release/<target>`: the instrumented binaries. `--target` is given explicitly so
//!   that the flags reach only the code that runs in the fuzzer: without it cargo would also
//!   instrument build scripts and proc macros, which then fail to link without libFuzzer.
//! - `corpus/<target>/`: what the fuzzer found, kept between runs. The committed seeds in
//!   `tests/fuzz/corpus/<target>/` are read as a second corpus directory, and libFuzzer writes new
//!   inputs only to the first, so the work tree stays clean.
//! - `artifacts/<target>/`: the input that crashed, timed out or ran out of memory.
//! - `logs/<target>.log`: libFuzzer's whole output for the last run.

use std::{
    ffi::OsString,
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

/// The fuzz targets, in the order they run.
pub(crate) const TARGETS: &[&str] = &["envelope", "hub_json", "hub_msgpack"];

/// The rustc flags cargo-fuzz uses for libFuzzer without a sanitizer.
const RUSTFLAGS: &[&str] = &[
    "-Cpasses=sancov-module",
    "-Cllvm-args=-sanitizer-coverage-level=4",
    "-Cllvm-args=-sanitizer-coverage-inline-8bit-counters",
    "-Cllvm-args=-sanitizer-coverage-pc-table",
    "-Cllvm-args=-sanitizer-coverage-trace-compares",
    "--cfg",
    "fuzzing",
    "-Cdebug-assertions",
    "-Coverflow-checks",
];

/// libFuzzer options for every run, besides the corpus directories and the time limit.
const LIBFUZZER_OPTIONS: &[&str] = &[
    "-max_len=65536",
    // Seconds one input may take before it counts as a hang.
    "-timeout=5",
    "-rss_limit_mb=2048",
    "-print_final_stats=1",
];

/// How many lines of a failed run's log are shown at most.
const REPORT_LINES: usize = 60;

/// Builds the fuzz targets, then runs each of `targets` (all of [`TARGETS`] when empty) for
/// `seconds`, printing one line per target. With `seconds == 0` each target only runs its corpus
/// once, which checks that no known input crashes.
///
/// Every target runs even when an earlier one crashed; the error lists those that failed.
pub(crate) fn run(seconds: u64, targets: &[String]) -> Result<(), String> {
    let targets = select(targets)?;
    let root = crate::project_root();
    let fuzz_dir = crate::xtask_dir().with_file_name("fuzz");
    let triple = host_triple()?;

    let started = Instant::now();
    build(&root, &fuzz_dir, &triple)?;
    println!(
        "xtask: built the fuzz targets in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let binaries = fuzz_dir.join(&triple).join("release");
    let mut failed = Vec::new();
    for target in targets {
        let dirs = TargetDirs::new(&root, &fuzz_dir, target)?;
        match fuzz(&binaries.join(target), &dirs, seconds) {
            Ok(report) => println!("xtask: fuzz {target}: {report}"),
            Err(message) => {
                eprintln!("xtask: fuzz {target}: FAILED: {message}");
                failed.push(target);
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("fuzz target(s) failed: {}", failed.join(", ")))
    }
}

/// Checks the requested target names; none means all.
fn select(requested: &[String]) -> Result<Vec<&'static str>, String> {
    if requested.is_empty() {
        return Ok(TARGETS.to_vec());
    }
    requested
        .iter()
        .map(|name| {
            TARGETS
                .iter()
                .find(|target| **target == name.as_str())
                .copied()
                .ok_or_else(|| {
                    format!(
                        "unknown fuzz target `{name}` (known: {})",
                        TARGETS.join(", ")
                    )
                })
        })
        .collect()
}

/// The toolchain's host triple, as `cargo -vV` reports it.
fn host_triple() -> Result<String, String> {
    let output = Command::new(crate::cargo())
        .arg("-vV")
        .output()
        .map_err(|err| format!("could not run `cargo -vV`: {err}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|line| line.strip_prefix("host: "))
        .map(|host| host.trim().to_owned())
        .ok_or_else(|| "`cargo -vV` did not name the host triple".to_owned())
}

/// Builds every fuzz target with the instrumentation flags, in `fuzz_dir`.
fn build(root: &Path, fuzz_dir: &Path, triple: &str) -> Result<(), String> {
    let manifest = root.join("tests").join("fuzz").join("Cargo.toml");
    let mut command = Command::new(crate::cargo());
    command
        .arg("build")
        .arg("--release")
        .arg("--bins")
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(fuzz_dir)
        .arg("--target")
        .arg(triple)
        .env("RUSTFLAGS", RUSTFLAGS.join(" "))
        // Would take precedence over RUSTFLAGS if set by an outer cargo.
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .current_dir(root);
    println!(
        "xtask: cargo build --release --bins --manifest-path {} --target-dir {} --target {triple} \
         (RUSTFLAGS: {})",
        manifest.display(),
        fuzz_dir.display(),
        RUSTFLAGS.join(" ")
    );
    let status = command
        .status()
        .map_err(|err| format!("could not run cargo build: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("building the fuzz targets failed ({status})"))
    }
}

/// Where one target reads and writes.
#[derive(Debug)]
struct TargetDirs {
    /// The committed seeds: read, never written.
    seeds: PathBuf,
    /// The working corpus that new inputs are added to.
    corpus: PathBuf,
    /// Where a crashing input is written.
    artifacts: PathBuf,
    /// libFuzzer's output.
    log: PathBuf,
}

impl TargetDirs {
    /// The directories of `target`, created if missing.
    fn new(root: &Path, fuzz_dir: &Path, target: &str) -> Result<Self, String> {
        let dirs = TargetDirs {
            seeds: root.join("tests").join("fuzz").join("corpus").join(target),
            corpus: fuzz_dir.join("corpus").join(target),
            artifacts: fuzz_dir.join("artifacts").join(target),
            log: fuzz_dir.join("logs").join(format!("{target}.log")),
        };
        let logs = dirs.log.parent().unwrap_or(fuzz_dir);
        for dir in [&dirs.corpus, &dirs.artifacts, logs] {
            fs::create_dir_all(dir)
                .map_err(|err| format!("could not create {}: {err}", dir.display()))?;
        }
        Ok(dirs)
    }
}

/// Runs one fuzz target for `seconds` and summarizes the run, or says why it failed.
fn fuzz(binary: &Path, dirs: &TargetDirs, seconds: u64) -> Result<String, String> {
    let log = fs::File::create(&dirs.log)
        .map_err(|err| format!("could not create {}: {err}", dirs.log.display()))?;
    let log_err = log
        .try_clone()
        .map_err(|err| format!("could not open {}: {err}", dirs.log.display()))?;
    // libFuzzer joins the prefix and the file name as strings: keep the trailing slash.
    let mut artifact_prefix = OsString::from("-artifact_prefix=");
    artifact_prefix.push(&dirs.artifacts);
    artifact_prefix.push("/");
    let mut command = Command::new(binary);
    command
        .arg(&dirs.corpus)
        .arg(&dirs.seeds)
        .arg(artifact_prefix)
        .args(LIBFUZZER_OPTIONS)
        .arg(if seconds == 0 {
            "-runs=0".to_owned()
        } else {
            format!("-max_total_time={seconds}")
        })
        .env("RUST_BACKTRACE", "1")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err);

    let started = Instant::now();
    let status = command
        .status()
        .map_err(|err| format!("could not run {}: {err}", binary.display()))?;
    let elapsed = started.elapsed();
    let output = fs::read_to_string(&dirs.log).unwrap_or_default();

    if status.success() {
        Ok(Stats::parse(&output).summary(elapsed))
    } else {
        eprintln!(
            "---- from {} ----\n{}\n----",
            dirs.log.display(),
            crash_report(&output, REPORT_LINES)
        );
        let artifact = output
            .lines()
            .find_map(|line| {
                line.split_once("Test unit written to ")
                    .map(|(_, path)| path)
            })
            .unwrap_or("none written");
        Err(format!(
            "libFuzzer exited with {status} after {:.0} s; input: {artifact}; log: {}",
            elapsed.as_secs_f64(),
            dirs.log.display()
        ))
    }
}

/// At most `count` lines of a failed run's output: from the panic message (or libFuzzer's own
/// error, for a timeout or an out-of-memory) on, else the last lines.
fn crash_report(output: &str, count: usize) -> String {
    let lines: Vec<&str> = output.lines().collect();
    let start = lines
        .iter()
        .position(|line| line.contains("panicked at"))
        .or_else(|| {
            lines
                .iter()
                .position(|line| line.contains("ERROR: libFuzzer"))
        })
        .unwrap_or(lines.len().saturating_sub(count));
    let end = lines.len().min(start.saturating_add(count));
    lines[start..end].join("\n")
}

/// What one libFuzzer run reports.
#[derive(Debug, Default, PartialEq)]
struct Stats {
    /// Inputs executed (`stat::number_of_executed_units`).
    runs: u64,
    /// Coverage after loading the corpus (the `INITED` line): covered edges, then features.
    initial: Option<(u64, u64)>,
    /// Coverage at the end (the last status line).
    last: Option<(u64, u64)>,
    /// Inputs added to the corpus (`stat::new_units_added`).
    new_units: u64,
    /// The corpus size at the end: inputs, and their size as libFuzzer prints it.
    corpus: Option<String>,
}

impl Stats {
    /// Reads the status lines and the final statistics out of libFuzzer's output.
    fn parse(output: &str) -> Stats {
        let mut stats = Stats::default();
        for line in output.lines() {
            if let Some(value) = line.strip_prefix("stat::number_of_executed_units:") {
                stats.runs = value.trim().parse().unwrap_or(0);
            } else if let Some(value) = line.strip_prefix("stat::new_units_added:") {
                stats.new_units = value.trim().parse().unwrap_or(0);
            } else if line.starts_with('#') {
                let (Some(cov), Some(ft)) = (field(line, "cov:"), field(line, "ft:")) else {
                    continue;
                };
                let (Ok(cov), Ok(ft)) = (cov.parse(), ft.parse()) else {
                    continue;
                };
                if line.contains("INITED") {
                    stats.initial = Some((cov, ft));
                }
                stats.last = Some((cov, ft));
                stats.corpus = field(line, "corp:").map(str::to_owned);
            }
        }
        stats
    }

    /// One line: runs and their rate, coverage from start to end, corpus growth, time.
    fn summary(&self, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        let rate = if secs > 0.0 {
            self.runs as f64 / secs
        } else {
            0.0
        };
        let coverage = match (self.initial, self.last) {
            (Some((cov0, ft0)), Some((cov, ft))) => {
                format!("cov {cov0} -> {cov}, ft {ft0} -> {ft}")
            }
            (None, Some((cov, ft))) => format!("cov {cov}, ft {ft}"),
            _ => "no coverage reported".to_owned(),
        };
        format!(
            "{runs} runs in {secs:.0} s ({rate:.0}/s), {coverage}, corpus {corpus} (+{new} new), ok",
            runs = self.runs,
            corpus = self.corpus.as_deref().unwrap_or("?"),
            new = self.new_units,
        )
    }
}

/// The word after `name` in a libFuzzer status line, such as `812` for `cov:`.
fn field<'a>(line: &'a str, name: &str) -> Option<&'a str> {
    let mut words = line.split_whitespace();
    words.find(|word| *word == name)?;
    words.next()
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "\
INFO: Seed: 1234
#2\tINITED cov: 100 ft: 120 corp: 9/1130b exec/s: 0 rss: 30Mb
#5\tNEW    cov: 104 ft: 130 corp: 10/1200b lim: 4 exec/s: 0 rss: 30Mb L: 3/3 MS: 1 ChangeBit-
#65536\tpulse  cov: 110 ft: 150 corp: 12/1300b lim: 40 exec/s: 21845 rss: 31Mb
#70000\tDONE   cov: 111 ft: 151 corp: 13/1310b lim: 40 exec/s: 23333 rss: 31Mb
Done 70000 runs in 3 second(s)
stat::number_of_executed_units: 70000
stat::average_exec_per_sec:     23333
stat::new_units_added:          4
stat::slowest_unit_time_sec:    0
stat::peak_rss_mb:              31
";

    #[test]
    fn parses_coverage_growth_and_final_stats() {
        let stats = Stats::parse(OUTPUT);
        assert_eq!(
            stats,
            Stats {
                runs: 70000,
                initial: Some((100, 120)),
                last: Some((111, 151)),
                new_units: 4,
                corpus: Some("13/1310b".to_owned()),
            }
        );
        assert_eq!(
            stats.summary(Duration::from_secs(2)),
            "70000 runs in 2 s (35000/s), cov 100 -> 111, ft 120 -> 151, corpus 13/1310b \
             (+4 new), ok"
        );
    }

    #[test]
    fn selects_all_targets_by_default_and_rejects_unknown_ones() {
        assert_eq!(select(&[]).ok(), Some(TARGETS.to_vec()));
        assert_eq!(
            select(&["hub_json".to_owned()]).ok(),
            Some(vec!["hub_json"])
        );
        assert!(select(&["hub_xml".to_owned()]).is_err());
    }

    #[test]
    fn crash_report_starts_at_the_panic() {
        let output = "INFO: Seed: 1\n#2 INITED\nthread '<unnamed>' panicked at src/lib.rs:1:1:\n\
                      boom\n==1== ERROR: libFuzzer: deadly signal\nTest unit written to x";
        assert_eq!(
            crash_report(output, 3),
            "thread '<unnamed>' panicked at src/lib.rs:1:1:\nboom\n==1== ERROR: libFuzzer: deadly signal"
        );
        let timeout = "#2 INITED\n==1== ERROR: libFuzzer: timeout after 5 seconds\nSUMMARY";
        assert_eq!(
            crash_report(timeout, 10),
            "==1== ERROR: libFuzzer: timeout after 5 seconds\nSUMMARY"
        );
        assert_eq!(crash_report("a\nb\nc", 2), "b\nc");
    }
}
