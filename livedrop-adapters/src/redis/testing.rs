//! The local Redis server that outage tests stop and start again (feature
//! `testing`): one implementation for the adapter's and the HTTP server's tests.

use std::process::Command;
use std::time::{Duration, Instant};

use livedrop_core::testing::env;
use redis::{ConnectionAddr, IntoConnectionInfo};

/// The Redis server on loopback that a test URL names.
#[derive(Debug, Clone)]
pub struct LocalRedis {
    host: String,
    port: u16,
}

impl LocalRedis {
    /// The server `url` names; panics when it is not one a test can stop and
    /// restart (not TCP, or not on loopback), so the test fails instead of passing
    /// unexercised.
    pub fn from_url(url: &str) -> Self {
        let var = env::REDIS_URL;
        let info = url
            .into_connection_info()
            .unwrap_or_else(|e| panic!("{var}={url} is not a Redis URL: {e}"));
        let ConnectionAddr::Tcp(host, port) = info.addr().clone() else {
            panic!("an outage test restarts a plain TCP server; {var}={url} is not one");
        };
        assert!(
            matches!(host.as_str(), "127.0.0.1" | "localhost" | "::1" | "[::1]"),
            "an outage test stops and restarts only a local server; {var}={url}"
        );
        Self { host, port }
    }

    fn cli(&self, args: &[&str]) -> Option<std::process::Output> {
        Command::new("redis-cli")
            .args(["-h", &self.host, "-p", &self.port.to_string()])
            .args(args)
            .output()
            .ok()
    }

    /// Whether the server answers `PING`.
    pub fn ping(&self) -> bool {
        self.cli(&["PING"])
            .is_some_and(|out| String::from_utf8_lossy(&out.stdout).trim() == "PONG")
    }

    fn wait_for(&self, up: bool, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.ping() == up {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.ping() == up
    }

    /// Stops the server (`SHUTDOWN NOSAVE`); fails unless it stops answering
    /// within 10 s.
    pub fn shut_down(&self) {
        // The server closes the connection instead of answering; the exit status
        // says nothing, the PING does.
        let _ = self.cli(&["SHUTDOWN", "NOSAVE"]);
        assert!(
            self.wait_for(false, Duration::from_secs(10)),
            "Redis still answers after SHUTDOWN"
        );
    }

    /// Starts the server unless it answers, with the command line of
    /// `scripts/services.sh`, and waits (≤ 15 s) for it to answer.
    pub fn start(&self) {
        if self.ping() {
            return;
        }
        let _ = std::fs::create_dir_all("/var/lib/redis");
        let _ = std::fs::create_dir_all("/var/log/redis");
        let status = Command::new("redis-server")
            .args([
                "--daemonize",
                "yes",
                "--bind",
                "127.0.0.1",
                "-::1",
                "--port",
                &self.port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                "/var/lib/redis",
                "--logfile",
                "/var/log/redis/ci.log",
            ])
            .status();
        if let Err(err) = status {
            eprintln!("could not run redis-server: {err}");
        }
        if !self.wait_for(true, Duration::from_secs(15)) {
            eprintln!("Redis did not answer PING within 15 s of restarting");
        }
    }

    /// A guard that starts the server again when dropped, so a failed assertion
    /// never leaves it down.
    pub fn restart_on_drop(&self) -> RestartOnDrop<'_> {
        RestartOnDrop(self)
    }
}

/// Starts its [`LocalRedis`] again when dropped.
#[derive(Debug)]
pub struct RestartOnDrop<'a>(&'a LocalRedis);

impl Drop for RestartOnDrop<'_> {
    fn drop(&mut self) {
        self.0.start();
    }
}
