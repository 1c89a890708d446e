//! The gRPC server on a private unix socket.

use std::future::Future;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
use nix::sys::stat::Mode;
use sscsi_proto::csi::v1::controller_server::ControllerServer;
use sscsi_proto::csi::v1::identity_server::IdentityServer;
use sscsi_proto::csi::v1::node_server::NodeServer;
use tokio::net::UnixListener;

use crate::{ControllerService, IdentityService, NodeService};

/// A CSI endpoint: `unix:///csi/csi.sock` (absolute) or `unix://tmp/csi.sock`
/// (relative, upstream's default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub path: PathBuf,
}

impl FromStr for Endpoint {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.strip_prefix("unix://") {
            Some(path) if !path.is_empty() => Ok(Self { path: PathBuf::from(path) }),
            _ => Err(format!("endpoint {s:?} must be a unix socket: unix:///path/to/csi.sock")),
        }
    }
}

/// Binds a unix socket only its owner can connect to.
///
/// The mode is set on the socket before bind(2): Linux gives the socket file
/// the socket inode's mode, so there is no moment when the file exists with
/// wider permissions. A stale socket from a previous run is removed; any
/// other file at the path is left alone and reported.
pub fn bind_private(path: &Path) -> io::Result<UnixListener> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket; refusing to replace it", path.display()),
            ));
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(0o600))?;
    let addr = UnixAddr::new(path)?;
    {
        use std::os::fd::AsRawFd;
        nix::sys::socket::bind(fd.as_raw_fd(), &addr)?;
    }
    nix::sys::socket::listen(&fd, Backlog::new(128)?)?;
    UnixListener::from_std(std::os::unix::net::UnixListener::from(fd))
}

/// Serves Identity, Node and the minimal Controller on `listener` until `shutdown` resolves, then
/// lets the calls in flight finish for at most `grace` (a pod has 30 s by
/// default between SIGTERM and SIGKILL), and removes the socket file.
pub async fn serve(
    listener: UnixListener,
    identity: IdentityService,
    node: NodeService,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) -> Result<(), tonic::transport::Error> {
    let routes = tonic::service::Routes::new(IdentityServer::new(identity))
        .add_service(NodeServer::new(node))
        .add_service(ControllerServer::new(ControllerService));
    serve_routes(listener, routes, shutdown, grace).await
}

/// Serves `routes` on `listener` (any gRPC server of ours on a unix
/// socket) until `shutdown` resolves, then lets the calls in flight finish
/// for at most `grace`, and removes the socket file.
pub async fn serve_routes(
    listener: UnixListener,
    routes: tonic::service::Routes,
    shutdown: impl Future<Output = ()> + Send,
    grace: Duration,
) -> Result<(), tonic::transport::Error> {
    let path = listener.local_addr().ok().and_then(|a| a.as_pathname().map(Path::to_owned));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tonic::transport::Server::builder()
        .add_routes(routes)
        .serve_with_incoming_shutdown(crate::authority::incoming(listener), async {
            let _ = stopped.await;
        });
    tokio::pin!(server);
    let result = tokio::select! {
        result = &mut server => result,
        () = shutdown => {
            let _ = stop.send(());
            tokio::time::timeout(grace, &mut server).await.unwrap_or_else(|_| {
                tracing::warn!(?grace, "calls still in flight after the shutdown grace period; stopping anyway");
                Ok(())
            })
        }
    };
    if let Some(path) = path {
        let _ = std::fs::remove_file(path);
    }
    result
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn parses_endpoints() {
        assert_eq!("unix:///csi/csi.sock".parse(), Ok(Endpoint { path: "/csi/csi.sock".into() }));
        assert_eq!("unix://tmp/csi.sock".parse(), Ok(Endpoint { path: "tmp/csi.sock".into() }));
        assert!("tcp://127.0.0.1:10000".parse::<Endpoint>().is_err());
        assert!("unix://".parse::<Endpoint>().is_err());
        assert!("/csi/csi.sock".parse::<Endpoint>().is_err());
    }

    #[tokio::test]
    async fn socket_is_private_and_stale_sockets_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/csi.sock");
        let first = bind_private(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        drop(first); // leaves a stale socket file behind
        assert!(path.exists());
        let _second = bind_private(&path).unwrap();

        let file = dir.path().join("not-a-socket");
        std::fs::write(&file, "precious").unwrap();
        let err = bind_private(&file).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "precious");
    }
}
