//! A redis-server of a test's own, to kill, pause and restart.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server process on a free loopback port, killed when dropped.
#[derive(Debug)]
pub struct RedisProcess {
    binary: PathBuf,
    port: u16,
    extra_args: Vec<String>,
    child: Option<Child>,
}

/// The redis-server binary handed over by `cargo xtask test`, or the one on PATH.
pub fn redis_server_binary() -> PathBuf {
    std::env::var_os("SWITCHBOARD_REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("redis-server"))
}

/// A loopback port nothing listens on right now (the OS picks it).
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl RedisProcess {
    /// Starts a server with no persistence on a free port.
    pub fn start() -> RedisProcess {
        Self::start_with(Vec::new())
    }

    /// Starts a server with extra command-line arguments.
    pub fn start_with(extra_args: Vec<String>) -> RedisProcess {
        let mut process = RedisProcess {
            binary: redis_server_binary(),
            port: free_port(),
            extra_args,
            child: None,
        };
        process.spawn();
        process
    }

    /// The port it listens on (kept across restarts).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("redis is running").id()
    }

    fn spawn(&mut self) {
        let mut args: Vec<String> = vec![
            "--port".into(),
            self.port.to_string(),
            "--bind".into(),
            "127.0.0.1".into(),
            "--save".into(),
            String::new(),
            "--appendonly".into(),
            "no".into(),
            "--daemonize".into(),
            "no".into(),
        ];
        args.extend(self.extra_args.iter().cloned());
        let child = Command::new(&self.binary)
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.binary.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                if stream.write_all(b"PING\r\n").is_ok() {
                    let mut line = String::new();
                    let mut reader = BufReader::new(&mut stream);
                    // "+PONG", or "-NOAUTH" when a password is required:
                    // either way the server is up.
                    if reader.read_line(&mut line).is_ok() && !line.is_empty() {
                        return;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("redis-server on port {} did not start", self.port);
    }

    /// Kills the server (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Freezes the server (SIGSTOP): connections stay open, nothing answers.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Resumes a paused server (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(signal)
            .arg(self.pid().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill {signal} failed");
    }

    /// Sends one inline command and returns the first reply line.
    pub fn command(&self, command: &str) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.write_all(command.as_bytes()).expect("write");
        stream.write_all(b"\r\n").expect("write");
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

impl Drop for RedisProcess {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A paused server ignores SIGKILL only until resumed; resume first.
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(child.id().to_string())
                .status();
        }
        self.kill();
    }
}
