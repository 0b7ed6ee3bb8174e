//! Helpers shared by the tests that run the real `flashkv` binary.

// Each test crate uses a different part of this module.
#![allow(dead_code, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use flashkv::api::grpc::proto::admin_client::AdminClient;
use flashkv::api::grpc::proto::kv_client::KvClient;
use tonic::transport::Channel;

/// `--io-engine X` when FLASHKV_TEST_IO_ENGINE=X (make test runs the daemon
/// tests on each engine).
pub fn engine_flag() -> Vec<String> {
    std::env::var("FLASHKV_TEST_IO_ENGINE")
        .map(|e| vec!["--io-engine".to_string(), e])
        .unwrap_or_default()
}

/// A two-worker tokio runtime for the tests' clients.
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A `flashkv` process on 127.0.0.1 with an ephemeral port; killed when
/// dropped (also when a check fails).
pub struct Daemon {
    pub child: Child,
    pub addr: String,
    /// The HTTP listen address.
    pub http: String,
    /// The RESP listen address.
    pub resp: String,
}

impl Daemon {
    /// Starts the daemon on `dir` with extra flags; panics if it does not start.
    pub fn start(dir: &Path, extra: &[&str]) -> Daemon {
        Self::try_start(dir, extra).unwrap_or_else(|e| panic!("daemon did not start: {e}"))
    }

    /// Starts the daemon; on failure returns what it printed on stderr.
    pub fn try_start(dir: &Path, extra: &[&str]) -> Result<Daemon, String> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flashkv"))
            .args([
                "--data-dir",
                dir.to_str().unwrap(),
                "--grpc-addr",
                "127.0.0.1:0",
                "--http-addr",
                "127.0.0.1:0",
                "--resp-addr",
                "127.0.0.1:0",
                "--no-pin",
                "--log-level",
                "warn",
            ])
            .args(extra)
            .args(engine_flag())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.is_empty() {
            let out = child.wait_with_output().unwrap();
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        // Keep the daemon's stderr flowing (a full pipe would stall it).
        let mut err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf) {
                if n == 0 {
                    break;
                }
                eprint!("{}", String::from_utf8_lossy(&buf[..n]));
            }
        });
        let addr = line
            .split("gRPC on ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .unwrap()
            .to_string();
        let field = |name: &str| {
            line.split(name)
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .unwrap()
                .to_string()
        };
        let (http, resp) = (field("HTTP on "), field("RESP on "));
        Ok(Daemon {
            child,
            addr,
            http,
            resp,
        })
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn kv(&self) -> KvClient<Channel> {
        KvClient::connect(self.url())
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(128 << 20)
    }

    pub async fn admin(&self) -> AdminClient<Channel> {
        AdminClient::connect(self.url()).await.unwrap()
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn stop(mut self) -> i32 {
        // SAFETY: sending a signal to our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let code = self.child.wait().unwrap().code().unwrap_or(-1);
        std::mem::forget(self);
        code
    }

    /// SIGKILL and wait.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
