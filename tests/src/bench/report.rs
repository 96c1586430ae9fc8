//! Result rows, the printed table and `results.json`.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::BenchResult;

/// How a figure is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Events per second.
    PerSecond,
    /// A duration in nanoseconds, printed in microseconds.
    Nanos,
    /// A short duration in nanoseconds (CPU time per message), printed in
    /// microseconds with two decimals.
    FineNanos,
    /// A size in bytes.
    Bytes,
    /// A duration in seconds (CPU time, for instance).
    Seconds,
    /// A fraction of a whole (0..=1), printed as a percentage.
    Share,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::PerSecond => "1/s",
            Unit::Nanos | Unit::FineNanos => "ns",
            Unit::Bytes => "B",
            Unit::Seconds => "s",
            Unit::Share => "fraction",
        }
    }

    /// `value` for people.
    pub fn format(self, value: f64) -> String {
        match self {
            Unit::PerSecond if value >= 1e6 => format!("{:.2}M/s", value / 1e6),
            Unit::PerSecond if value >= 1e3 => format!("{:.1}k/s", value / 1e3),
            Unit::PerSecond => format!("{value:.0}/s"),
            Unit::Nanos if value >= 1e6 => format!("{:.2} ms", value / 1e6),
            Unit::Nanos => format!("{:.0} us", value / 1e3),
            Unit::FineNanos => format!("{:.2} us", value / 1e3),
            Unit::Bytes => format!("{value:.0} B"),
            Unit::Seconds => format!("{value:.2} s"),
            Unit::Share => format!("{:.0} %", value * 100.0),
        }
    }
}

/// What a figure must reach.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Reported only.
    None,
    /// switchboard / baseline >= this.
    RatioAtLeast(f64),
    /// switchboard / baseline <= this (lower is better: CPU, latency).
    RatioAtMost(f64),
    /// switchboard >= this, in the row's unit.
    AtLeast(f64),
    /// switchboard <= this, in the row's unit.
    AtMost(f64),
    /// switchboard <= baseline + this, in the row's unit.
    PlusAtMost(f64),
}

impl Target {
    fn describe(self, unit: Unit) -> String {
        match self {
            Target::None => "-".to_owned(),
            Target::RatioAtLeast(r) => format!(">= {r} x base"),
            Target::RatioAtMost(r) => format!("<= {r} x base"),
            Target::AtLeast(v) => format!(">= {}", unit.format(v)),
            Target::AtMost(v) => format!("<= {}", unit.format(v)),
            Target::PlusAtMost(v) => format!("<= base + {}", unit.format(v)),
        }
    }

    fn met(self, switchboard: Option<f64>, baseline: Option<f64>) -> Option<bool> {
        let s = switchboard?;
        match self {
            Target::None => None,
            Target::RatioAtLeast(r) => baseline.map(|b| b > 0.0 && s / b >= r),
            Target::RatioAtMost(r) => baseline.map(|b| b > 0.0 && s / b <= r),
            Target::AtLeast(v) => Some(s >= v),
            Target::AtMost(v) => Some(s <= v),
            Target::PlusAtMost(v) => baseline.map(|b| s <= b + v),
        }
    }
}

/// One line of the table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Scenario id: `B1`..`B7`, or `B1.x` for a secondary figure.
    pub id: String,
    /// What ran.
    pub scenario: String,
    /// What was measured.
    pub figure: String,
    /// The unit of the two values.
    pub unit: Unit,
    /// switchboard's value; `None` when it could not be measured.
    pub switchboard: Option<f64>,
    /// The raw-Redis value measured in the same run, if the figure has one.
    pub baseline: Option<f64>,
    /// The goal.
    pub target: Target,
    /// A short remark: losses, why a row is skipped, what a value means.
    pub note: String,
    /// Extra measurements, written to the JSON file only.
    pub details: Value,
}

impl Row {
    /// A row with a value and a baseline.
    pub fn new(
        id: &str,
        scenario: &str,
        figure: &str,
        unit: Unit,
        switchboard: Option<f64>,
        baseline: Option<f64>,
        target: Target,
    ) -> Row {
        Row {
            id: id.to_owned(),
            scenario: scenario.to_owned(),
            figure: figure.to_owned(),
            unit,
            switchboard,
            baseline,
            target,
            note: String::new(),
            details: Value::Null,
        }
    }

    /// A row saying why a scenario did not run.
    pub fn skipped(id: &str, scenario: &str, why: impl Into<String>) -> Row {
        let mut row = Row::new(id, scenario, "-", Unit::PerSecond, None, None, Target::None);
        row.note = format!("skipped: {}", why.into());
        row
    }

    /// Adds a remark.
    pub fn note(mut self, note: impl Into<String>) -> Row {
        self.note = note.into();
        self
    }

    /// Attaches extra measurements for the JSON file.
    pub fn details(mut self, details: Value) -> Row {
        self.details = details;
        self
    }

    /// switchboard / baseline.
    pub fn ratio(&self) -> Option<f64> {
        match (self.switchboard, self.baseline) {
            (Some(s), Some(b)) if b > 0.0 => Some(s / b),
            _ => None,
        }
    }

    /// Whether the target is met; `None` when there is none or nothing to judge.
    pub fn met(&self) -> Option<bool> {
        self.target.met(self.switchboard, self.baseline)
    }

    fn cells(&self) -> [String; 8] {
        let value = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| self.unit.format(v));
        [
            self.id.clone(),
            self.scenario.clone(),
            self.figure.clone(),
            value(self.switchboard),
            value(self.baseline),
            self.ratio()
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
            self.target.describe(self.unit),
            match self.met() {
                Some(true) => "yes".to_owned(),
                Some(false) => "NO".to_owned(),
                None => "-".to_owned(),
            },
        ]
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "scenario": self.scenario,
            "figure": self.figure,
            "unit": self.unit.name(),
            "switchboard": self.switchboard,
            "baseline": self.baseline,
            "ratio": self.ratio(),
            "target": self.target.describe(self.unit),
            "met": self.met(),
            "note": self.note,
            "details": self.details,
        })
    }
}

/// The table, with notes under it.
pub fn table(rows: &[Row]) -> String {
    const HEADER: [&str; 8] = [
        "id",
        "scenario",
        "figure",
        "switchboard",
        "baseline",
        "ratio",
        "target",
        "met?",
    ];
    let cells: Vec<[String; 8]> = rows.iter().map(Row::cells).collect();
    let mut widths = HEADER.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, row: &[String]| {
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            let sep = if i == 0 { "" } else { "  " };
            // Numbers right-aligned, text left-aligned.
            if (3..=5).contains(&i) {
                let _ = write!(out, "{sep}{cell:>width$}");
            } else {
                let _ = write!(out, "{sep}{cell:<width$}");
            }
        }
        out.push('\n');
    };
    line(&mut out, &HEADER.map(str::to_owned));
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
    line(&mut out, &rule);
    for row in &cells {
        line(&mut out, row);
    }
    let notes: Vec<&Row> = rows.iter().filter(|r| !r.note.is_empty()).collect();
    if !notes.is_empty() {
        out.push('\n');
        for row in notes {
            let _ = writeln!(out, "{} {}: {}", row.id, row.figure, row.note);
        }
    }
    out
}

/// Facts about the machine and the run, for the JSON file.
#[derive(Debug, Clone)]
pub struct Machine {
    /// `std::thread::available_parallelism`.
    pub cores: usize,
    /// From `INFO server`.
    pub redis_version: String,
    /// `git rev-parse HEAD`, with `-dirty` if the tree has changes.
    pub git_commit: Option<String>,
    /// Seconds since the Unix epoch at the start of the run.
    pub unix_time: u64,
    /// The CPU model from /proc/cpuinfo.
    pub cpu: Option<String>,
    /// The 1-minute load average when the run started.
    pub load_average: Option<f64>,
    /// Quick mode.
    pub quick: bool,
}

impl Machine {
    /// Gathers what can be found; missing facts stay `None`.
    pub fn detect(redis_version: String, quick: bool) -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|l| l.split_once(':'))
            .map(|(_, model)| model.trim().to_owned());
        let load_average = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().and_then(|v| v.parse().ok()));
        Machine {
            cores: std::thread::available_parallelism().map_or(1, usize::from),
            redis_version,
            git_commit: git_commit(),
            unix_time: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            cpu,
            load_average,
            quick,
        }
    }

    /// One line for the top of the printed report.
    pub fn summary(&self) -> String {
        format!(
            "{} cores{}, Redis {}, commit {}, {}{}",
            self.cores,
            self.cpu
                .as_ref()
                .map(|c| format!(" ({c})"))
                .unwrap_or_default(),
            self.redis_version,
            self.git_commit.as_deref().unwrap_or("unknown"),
            utc_timestamp(self.unix_time),
            self.load_average
                .map(|l| format!(", load {l:.2} at start"))
                .unwrap_or_default(),
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "cores": self.cores,
            "cpu": self.cpu,
            "redis_version": self.redis_version,
            "git_commit": self.git_commit,
            "timestamp": utc_timestamp(self.unix_time),
            "load_average_at_start": self.load_average,
            "quick": self.quick,
        })
    }
}

/// The commit of the work tree the bench was built from, if git knows it.
fn git_commit() -> Option<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?;
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(root)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let mut commit = String::from_utf8_lossy(&head.stdout).trim().to_owned();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .current_dir(root)
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    if dirty {
        commit.push_str("-dirty");
    }
    Some(commit)
}

/// `secs` since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_timestamp(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date in the proleptic Gregorian calendar, counting
    // eras of 400 years from 0000-03-01.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Writes `results.json`.
pub fn write_json(path: &Path, machine: &Machine, rows: &[Row]) -> BenchResult<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let document = json!({
        "command": if machine.quick { "cargo xtask bench --quick" } else { "cargo xtask bench" },
        "machine": machine.to_json(),
        "rows": rows.iter().map(Row::to_json).collect::<Vec<_>>(),
    });
    std::fs::write(path, serde_json::to_string_pretty(&document)? + "\n")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_calendar_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01T00:00:00Z");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(utc_timestamp(1_767_225_599), "2025-12-31T23:59:59Z");
    }

    #[test]
    fn targets_judge_against_the_baseline() {
        let row = |s, b, t| Row::new("B", "s", "f", Unit::PerSecond, Some(s), Some(b), t);
        assert_eq!(
            row(80.0, 100.0, Target::RatioAtLeast(0.8)).met(),
            Some(true)
        );
        assert_eq!(
            row(79.0, 100.0, Target::RatioAtLeast(0.8)).met(),
            Some(false)
        );
        assert_eq!(
            row(150.0, 100.0, Target::PlusAtMost(50.0)).met(),
            Some(true)
        );
        assert_eq!(
            row(151.0, 100.0, Target::PlusAtMost(50.0)).met(),
            Some(false)
        );
        assert_eq!(row(50.0, 100.0, Target::RatioAtMost(0.5)).met(), Some(true));
        assert_eq!(
            row(51.0, 100.0, Target::RatioAtMost(0.5)).met(),
            Some(false)
        );
        assert_eq!(row(1.0, 0.0, Target::RatioAtMost(1.0)).met(), Some(false));
        assert_eq!(row(1.0, 1.0, Target::None).met(), None);
        assert_eq!(Unit::FineNanos.format(1_234.0), "1.23 us");
        assert!(table(&[row(1.0, 2.0, Target::AtLeast(1.0))]).contains("0.50"));
    }
}
