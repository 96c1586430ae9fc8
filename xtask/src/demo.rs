//! `cargo xtask demo`: two chat servers sharing one private redis-server,
//! so that a message typed on one page appears on the other.

use std::net::TcpStream;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::redis::{self, RedisServer};

/// The ports the two chat servers listen on.
const PORTS: [u16; 2] = [5000, 5001];

/// A chat server process, killed when dropped.
struct ChatServer(Child);

impl Drop for ChatServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds the chat example, starts redis and two servers, and waits for
/// Enter, Ctrl-D or Ctrl-C.
pub(crate) fn run() -> Result<(), String> {
    let status = Command::new(crate::cargo())
        .args(["build", "--release", "--example", "chat"])
        .current_dir(crate::project_root())
        .status()
        .map_err(|e| format!("could not run cargo: {e}"))?;
    if !status.success() {
        return Err(format!("building the chat example failed ({status})"));
    }
    let binary = crate::target_dir()
        .join("release")
        .join("examples")
        .join("chat");
    let server = RedisServer::start(&redis::find_or_install()?, &crate::xtask_dir())?;
    let mut servers = Vec::new();
    for port in PORTS {
        let child = Command::new(&binary)
            .args(["--port", &port.to_string(), "--redis", &server.url()])
            .spawn()
            .map_err(|e| format!("could not start {}: {e}", binary.display()))?;
        servers.push(ChatServer(child));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err(format!("the chat server on port {port} did not start"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    println!(
        "\nswitchboard demo: two chat servers on one Redis ({})\n\n  \
         server A: http://127.0.0.1:{}/\n  server B: http://127.0.0.1:{}/\n\n\
         Open one page per server, connect both, and send a message: it appears on both.\n\
         Press Enter (or Ctrl-D) to stop.",
        server.url(),
        PORTS[0],
        PORTS[1]
    );
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
    drop(servers);
    drop(server);
    Ok(())
}
