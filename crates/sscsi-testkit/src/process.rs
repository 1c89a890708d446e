//! Test servers run as child processes on free loopback ports.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Where `cargo xtask test` provisions the test servers (a Python virtual
/// environment): `SSCSI_TEST_ENV`, else `target/test-env` of this workspace.
pub fn test_env() -> PathBuf {
    std::env::var_os("SSCSI_TEST_ENV").map_or_else(
        || {
            let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2);
            workspace.expect("crates/sscsi-testkit is two levels down").join("target/test-env")
        },
        PathBuf::from,
    )
}

/// A test server's program (`moto_server`, `bao`, `drongo`, or the
/// environment's `python3`): from the provisioned environment when it is
/// there, else from `PATH`.
pub fn program(name: &str) -> PathBuf {
    let provisioned = test_env().join("bin").join(name);
    if provisioned.exists() { provisioned } else { PathBuf::from(name) }
}

/// What to say when a test server cannot be started.
pub(crate) const PROVISION: &str =
    "cargo xtask test (it provisions the pinned test servers under target/test-env)";

/// Starts `command(port)` on a free port and waits until the port accepts
/// connections and `ready(port)` holds. Starts are serialised: a port is
/// picked free, then held by the new server before another start picks one.
/// Panics saying how to get it (`install`) when the program cannot be run.
pub(crate) fn start_on_free_port(
    name: &str,
    install: &str,
    command: impl FnOnce(u16) -> Command,
    ready: impl Fn(u16) -> bool,
) -> (Child, u16) {
    static STARTING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = STARTING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = command(port)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name} ({e}); install it with: {install}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() || !ready(port) {
        assert!(Instant::now() < deadline, "{name} did not start listening on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (child, port)
}
