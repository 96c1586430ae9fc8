//! Finding, installing and running the `redis-server` that the tests talk to.
//!
//! Every run starts its own server on a free loopback port, with persistence off and its files
//! under `target/xtask/`, so tests never touch a redis the machine already runs (port 6379 is
//! never assumed). [`RedisServer`] owns the process and stops it when dropped.

use std::{
    env,
    ffi::OsString,
    fs::{self, OpenOptions},
    io::{self, BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

/// The environment variable that carries the running server's URL to the tests.
pub(crate) const URL_ENV: &str = "SWITCHBOARD_REDIS_URL";

/// The environment variable that carries the `redis-server` binary to the tests (so that tests
/// which stop and restart redis can start their own), and that, when set, tells xtask which
/// binary to use.
pub(crate) const SERVER_ENV: &str = "SWITCHBOARD_REDIS_SERVER";

/// The program's file name.
const BINARY: &str = "redis-server";

/// Where distributions and Homebrew put `redis-server`, searched after PATH: `/usr/sbin` is often
/// missing from a non-root PATH.
const FALLBACK_DIRS: [&str; 3] = ["/usr/bin", "/usr/sbin", "/usr/local/bin"];

/// The Debian/Ubuntu package that provides `redis-server`.
const DEBIAN_PACKAGE: &str = "redis-server";

/// How long a new server has to answer PING before startup is declared failed.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

/// The pause between two readiness probes.
const PROBE_INTERVAL: Duration = Duration::from_millis(50);

/// The connect, read and write timeout of one readiness probe.
const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// How many free ports to try: another program may take the port between the moment it is found
/// free and the moment redis binds it.
const START_ATTEMPTS: usize = 3;

/// Returns the `redis-server` to use, installing Debian's package first when it is missing and
/// this process may do so (root, with apt-get).
pub(crate) fn find_or_install() -> Result<PathBuf, String> {
    if let Some(path) = env::var_os(SERVER_ENV).filter(|path| !path.is_empty()) {
        let path = PathBuf::from(path);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(format!(
                "{SERVER_ENV} is set to {}, which is not an executable file.",
                path.display()
            ))
        };
    }
    if let Some(path) = find_program(BINARY) {
        return Ok(path);
    }
    let apt_get = match find_program("apt-get") {
        Some(apt_get) if is_root() => apt_get,
        _ => return Err(format!("{BINARY} was not found.\n{}", how_to_install())),
    };
    install(&apt_get)?;
    find_program(BINARY).ok_or_else(|| {
        format!(
            "{BINARY} is still not found after installing the `{DEBIAN_PACKAGE}` package.\n{}",
            how_to_install()
        )
    })
}

/// The help shown when `redis-server` is missing and cannot be installed automatically.
fn how_to_install() -> String {
    format!(
        "The tests need {BINARY}; it is looked for on PATH and in {}.\n\
         Install it, for example:\n  \
           Debian/Ubuntu:  sudo apt-get install {DEBIAN_PACKAGE}\n  \
           Fedora/RHEL:    sudo dnf install redis\n  \
           macOS:          brew install redis\n\
         or put a {BINARY} binary on PATH, or set {SERVER_ENV} to its path.",
        FALLBACK_DIRS.join(", ")
    )
}

/// Looks for an executable called `name` on PATH, then in [`FALLBACK_DIRS`].
pub(crate) fn find_program(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH").unwrap_or_default();
    env::split_paths(&path)
        .chain(FALLBACK_DIRS.iter().map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| is_executable(candidate))
}

/// Whether `path` is a file that may be executed.
#[cfg(unix)]
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path).is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
}

/// Whether `path` is a file that may be executed.
#[cfg(not(unix))]
pub(crate) fn is_executable(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|meta| meta.is_file())
}

/// Whether this process runs with effective user id 0.
pub(crate) fn is_root() -> bool {
    if let Ok(status) = fs::read_to_string("/proc/self/status") {
        // "Uid:" is followed by the real, effective, saved and filesystem ids.
        if let Some(line) = status.lines().find(|line| line.starts_with("Uid:")) {
            return line.split_whitespace().nth(2) == Some("0");
        }
    }
    Command::new("id")
        .arg("-u")
        .stderr(Stdio::null())
        .output()
        .is_ok_and(|out| out.status.success() && out.stdout.trim_ascii() == b"0")
}

/// Installs Debian's `redis-server` package with apt-get, without questions.
///
/// The package's maintainer scripts may start a system-wide redis on port 6379 where an init
/// system allows it; xtask never uses that server.
fn install(apt_get: &Path) -> Result<(), String> {
    eprintln!(
        "xtask: {BINARY} not found; installing Debian's `{DEBIAN_PACKAGE}` package with apt-get"
    );
    apt_install(apt_get, DEBIAN_PACKAGE).map_err(|e| format!("{e}\n{}", how_to_install()))
}

/// Installs one Debian package with apt-get, without questions (after
/// refreshing the package lists).
pub(crate) fn apt_install(apt_get: &Path, package: &str) -> Result<(), String> {
    apt(apt_get, &["update", "-qq"])?;
    apt(
        apt_get,
        &["install", "-y", "-qq", "--no-install-recommends", package],
    )
}

/// Runs apt-get non-interactively with `args`. Its output goes to stderr, like xtask's own
/// notes, so that stdout carries only what a command promises there (the URL, for `redis`).
fn apt(apt_get: &Path, args: &[&str]) -> Result<(), String> {
    let command = format!("apt-get {}", args.join(" "));
    eprintln!("xtask: running `{command}`");
    let status = Command::new(apt_get)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .stdin(Stdio::null())
        .stdout(io::stderr())
        .status()
        .map_err(|err| format!("could not run `{command}`: {err}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{command}` failed ({status})."))
    }
}

/// A `redis-server` child process listening on 127.0.0.1, stopped when dropped.
///
/// Dropping kills the process and waits for it, so the server goes away when a test step fails
/// or xtask panics. On Ctrl-C the terminal sends SIGINT to the whole foreground process group,
/// redis-server included, so it stops then too.
#[derive(Debug)]
pub(crate) struct RedisServer {
    /// The running server; killed and reaped on drop.
    child: Child,
    /// The loopback port it listens on.
    port: u16,
    /// The binary it runs, handed on to tests that start their own.
    binary: PathBuf,
    /// Its log file (stdout and stderr go there too), kept after it stops.
    log: PathBuf,
    /// Its working directory (`--dir`), removed after it stops.
    dir: PathBuf,
}

/// Why one attempt to start a server failed.
#[derive(Debug)]
enum StartFailure {
    /// Something else holds the port; another free port may work.
    PortTaken(String),
    /// Any other failure: trying again would not help.
    Fatal(String),
}

impl RedisServer {
    /// Starts `binary` on a free loopback port, keeping its files under `work_dir`, and waits
    /// until it answers PING.
    pub(crate) fn start(binary: &Path, work_dir: &Path) -> Result<Self, String> {
        Self::start_with(binary, work_dir, &[], free_port)
    }

    /// Like [`RedisServer::start`], with `extra_args` after the usual ones (a relative file name
    /// in them is relative to the server's own directory, its `--dir`) and the port taken from
    /// `pick_port`, asked again when the port it gave turns out to be taken.
    pub(crate) fn start_with(
        binary: &Path,
        work_dir: &Path,
        extra_args: &[&str],
        pick_port: impl Fn() -> Result<u16, String>,
    ) -> Result<Self, String> {
        fs::create_dir_all(work_dir)
            .map_err(|err| format!("could not create {}: {err}", work_dir.display()))?;
        let mut last_failure = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::start_on(binary, work_dir, extra_args, pick_port()?) {
                Ok(server) => return Ok(server),
                Err(StartFailure::PortTaken(message)) => last_failure = message,
                Err(StartFailure::Fatal(message)) => return Err(message),
            }
        }
        Err(format!(
            "{BINARY} could not get a free port in {START_ATTEMPTS} attempts; last: {last_failure}"
        ))
    }

    /// One attempt at [`RedisServer::start_with`] on `port`.
    fn start_on(
        binary: &Path,
        work_dir: &Path,
        extra_args: &[&str],
        port: u16,
    ) -> Result<Self, StartFailure> {
        let fatal = |what: &str, path: &Path, err: io::Error| {
            StartFailure::Fatal(format!("could not {what} {}: {err}", path.display()))
        };
        let dir = work_dir.join(format!("redis-{port}"));
        let log = work_dir.join(format!("redis-{port}.log"));
        match fs::remove_dir_all(&dir) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                return Err(fatal("remove", &dir, err));
            }
            _ => {}
        }
        fs::create_dir_all(&dir).map_err(|err| fatal("create", &dir, err))?;
        match fs::remove_file(&log) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                return Err(fatal("remove", &log, err));
            }
            _ => {}
        }
        // Append mode, as redis opens its log file: early errors printed before redis opens the
        // file, and everything it logs afterwards, end up in the one file without overwriting.
        let stdout = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|err| fatal("create", &log, err))?;
        let stderr = stdout.try_clone().map_err(|err| fatal("open", &log, err))?;

        let child = Command::new(binary)
            .arg("--port")
            .arg(port.to_string())
            .args(["--bind", "127.0.0.1"])
            .args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .args(["--protected-mode", "yes"])
            .arg("--logfile")
            .arg(&log)
            .arg("--dir")
            .arg(&dir)
            .args(extra_args)
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
            .map_err(|err| fatal("start", binary, err))?;
        // From here on, dropping `server` stops the process, whatever goes wrong.
        let mut server = RedisServer {
            child,
            port,
            binary: binary.to_path_buf(),
            log,
            dir,
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// Polls the server until it answers PING, it exits, or [`READY_TIMEOUT`] passes.
    fn wait_ready(&mut self) -> Result<(), StartFailure> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    let log = read_log(&self.log);
                    let message = format!(
                        "{BINARY} on port {} exited during startup ({status}). Its log, {}:\n{log}",
                        self.port,
                        self.log.display()
                    );
                    return Err(if log.contains("Address already in use") {
                        StartFailure::PortTaken(message)
                    } else {
                        StartFailure::Fatal(message)
                    });
                }
                Err(err) => {
                    return Err(StartFailure::Fatal(format!(
                        "could not check on {BINARY}: {err}"
                    )));
                }
            }
            match probe(self.port) {
                Some(pid) if pid == self.pid() => return Ok(()),
                // Another redis answers on this port: ours could not bind it and is exiting.
                Some(_) => {
                    return Err(StartFailure::PortTaken(format!(
                        "another redis-server answers on port {}",
                        self.port
                    )));
                }
                None => {}
            }
            if Instant::now() >= deadline {
                return Err(StartFailure::Fatal(format!(
                    "{BINARY} did not answer PING on port {} within {} s. Its log, {}:\n{}",
                    self.port,
                    READY_TIMEOUT.as_secs(),
                    self.log.display(),
                    read_log(&self.log)
                )));
            }
            thread::sleep(PROBE_INTERVAL);
        }
    }

    /// The URL clients connect to: `redis://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The loopback port the server listens on.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The `redis-server` binary this server runs.
    pub(crate) fn binary(&self) -> &Path {
        &self.binary
    }

    /// The server's log file.
    pub(crate) fn log(&self) -> &Path {
        &self.log
    }

    /// The variables that point tests at this server: its URL and its binary.
    pub(crate) fn env(&self) -> [(&'static str, OsString); 2] {
        [
            (URL_ENV, OsString::from(self.url())),
            (SERVER_ENV, self.binary.clone().into_os_string()),
        ]
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Killing fails only if the process has already exited; waiting reaps it either way.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Finds a loopback port that nothing listens on, by letting the OS pick one and releasing it.
pub(crate) fn free_port() -> Result<u16, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|err| format!("could not bind a loopback port: {err}"))?;
    let port = listener
        .local_addr()
        .map_err(|err| format!("could not read the bound port: {err}"))?
        .port();
    drop(listener);
    Ok(port)
}

/// Sends the inline command `PING` to 127.0.0.1:`port`; on `+PONG`, asks `INFO server` and
/// returns the `process_id` it reports, so the caller can tell its own server from another.
/// `None` means nothing usable answered (yet).
fn probe(port: u16) -> Option<u32> {
    /// An INFO reply larger than this is not from a redis-server.
    const MAX_INFO_LEN: usize = 1 << 20;

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let stream = TcpStream::connect_timeout(&addr, PROBE_TIMEOUT).ok()?;
    stream.set_read_timeout(Some(PROBE_TIMEOUT)).ok()?;
    stream.set_write_timeout(Some(PROBE_TIMEOUT)).ok()?;
    let mut reader = BufReader::new(&stream);
    let mut line = String::new();

    (&stream).write_all(b"PING\r\n").ok()?;
    reader.read_line(&mut line).ok()?;
    if !line.starts_with("+PONG") {
        return None;
    }

    (&stream).write_all(b"INFO server\r\n").ok()?;
    line.clear();
    reader.read_line(&mut line).ok()?;
    let len: usize = line.strip_prefix('$')?.trim_end().parse().ok()?;
    if len > MAX_INFO_LEN {
        return None;
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    String::from_utf8_lossy(&body)
        .lines()
        .find_map(|line| line.strip_prefix("process_id:"))?
        .trim()
        .parse()
        .ok()
}

/// The log's contents for an error message, or why they cannot be shown.
fn read_log(path: &Path) -> String {
    match fs::read(path) {
        Ok(bytes) if bytes.is_empty() => "(empty)".to_owned(),
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(err) => format!("(could not read it: {err})"),
    }
}

/// `cargo xtask redis`: starts a server and a Redis Cluster of three masters beside it, prints
/// the server's URL, and stops both when stdin yields a line or reaches its end. A cluster that
/// cannot start only earns a warning.
///
/// Without a signal-handling dependency xtask cannot catch Ctrl-C; it needs to, though, only for
/// the cleanup, and Ctrl-C reaches redis-server directly (same process group).
pub(crate) fn serve() -> Result<(), String> {
    let binary = find_or_install()?;
    let server = RedisServer::start(&binary, &crate::xtask_dir())?;
    let cluster = crate::cluster::serve_beside(&binary);
    // The URL alone on stdout, for scripts; the rest is for people, on stderr.
    println!("{}", server.url());
    eprintln!(
        "xtask: {BINARY} is running on port {} (pid {}, log {}).",
        server.port(),
        server.pid(),
        server.log().display()
    );
    let mut cluster_env = String::new();
    if let Some(cluster) = &cluster {
        eprintln!(
            "xtask: a Redis Cluster is running at {} (pids {:?}, logs in {}).",
            cluster.url(),
            cluster.pids(),
            cluster.log_dir().display()
        );
        // Quoted: the URL holds `?` and `&`.
        cluster_env = format!("{}='{}' ", crate::cluster::URL_ENV, cluster.url());
    }
    eprintln!("xtask: to run the tests against it, from another shell:");
    eprintln!(
        "    {URL_ENV}={} {SERVER_ENV}={} {cluster_env}cargo test --workspace",
        server.url(),
        server.binary().display()
    );
    eprintln!("xtask: press Enter or Ctrl-D to stop it.");
    io::stdout().flush().ok();

    // Any outcome, a line, end of input or a read error, means stop.
    let _ = io::stdin().lock().read_line(&mut String::new());
    if cluster.is_some() {
        drop(cluster);
        eprintln!("xtask: the Redis Cluster stopped.");
    }
    drop(server);
    eprintln!("xtask: {BINARY} stopped.");
    Ok(())
}
