//! An external provider as the upstream driver sees one: a v1alpha1 gRPC
//! server on `<dir>/<name>.sock`, built from the proto, whose answer a test
//! sets and which records every request it gets.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sscsi_proto::provider::v1alpha1::csi_driver_provider_server::{
    CsiDriverProvider, CsiDriverProviderServer,
};
use sscsi_proto::provider::v1alpha1::{
    Error, File, MountRequest, MountResponse, ObjectVersion, VersionRequest, VersionResponse,
};
use tokio::sync::Notify;
use tonic::{Request, Response, Status};

/// What the provider answers to `Mount`.
#[derive(Debug, Clone)]
pub enum Answer {
    /// These files (path, mode, contents) and versions (id, version).
    Files(Vec<(String, i32, Vec<u8>)>, Vec<(String, String)>),
    /// `error.code` set, nothing else.
    Code(String),
    /// A gRPC error.
    Status(tonic::Code, String),
    /// Never answers.
    Hang,
    /// Writes these files into `target_path` itself and returns none, as a
    /// provider of the legacy kind does.
    WritesItself(Vec<(String, Vec<u8>)>, Vec<(String, String)>),
}

#[derive(Debug)]
struct State {
    answer: Mutex<Answer>,
    requests: Mutex<Vec<MountRequest>>,
    versions_asked: Mutex<Vec<String>>,
    never: Notify,
}

/// A running provider; stops when dropped.
#[derive(Debug)]
pub struct FakeProvider {
    socket: PathBuf,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeProvider {
    /// Serves `<dir>/<name>.sock` on the current runtime.
    pub fn start(dir: &Path, name: &str, answer: Answer) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let socket = dir.join(format!("{name}.sock"));
        let _ = std::fs::remove_file(&socket);
        let listener = tokio::net::UnixListener::bind(&socket).unwrap();
        let state = Arc::new(State {
            answer: Mutex::new(answer),
            requests: Mutex::new(Vec::new()),
            versions_asked: Mutex::new(Vec::new()),
            never: Notify::new(),
        });
        let service = Service(state.clone());
        let task = tokio::spawn(async move {
            let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
            let _ = tonic::transport::Server::builder()
                .add_service(CsiDriverProviderServer::new(service))
                .serve_with_incoming(incoming)
                .await;
        });
        Self { socket, state, task }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn answer(&self, answer: Answer) {
        *self.state.answer.lock().unwrap() = answer;
    }

    /// Every `Mount` request so far, in order.
    pub fn requests(&self) -> Vec<MountRequest> {
        self.state.requests.lock().unwrap().clone()
    }

    /// The `version` of every `Version` request so far.
    pub fn versions_asked(&self) -> Vec<String> {
        self.state.versions_asked.lock().unwrap().clone()
    }
}

impl Drop for FakeProvider {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[derive(Debug, Clone)]
struct Service(Arc<State>);

fn versions(versions: &[(String, String)]) -> Vec<ObjectVersion> {
    versions.iter().map(|(id, v)| ObjectVersion { id: id.clone(), version: v.clone() }).collect()
}

#[tonic::async_trait]
impl CsiDriverProvider for Service {
    async fn version(
        &self,
        request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        self.0.versions_asked.lock().unwrap().push(request.into_inner().version);
        Ok(Response::new(VersionResponse {
            version: "v1alpha1".into(),
            runtime_name: "fake-provider".into(),
            runtime_version: "0.0.1".into(),
        }))
    }

    async fn mount(
        &self,
        request: Request<MountRequest>,
    ) -> Result<Response<MountResponse>, Status> {
        let request = request.into_inner();
        self.0.requests.lock().unwrap().push(request.clone());
        let answer = self.0.answer.lock().unwrap().clone();
        match answer {
            Answer::Files(files, v) => Ok(Response::new(MountResponse {
                object_version: versions(&v),
                error: None,
                files: files
                    .into_iter()
                    .map(|(path, mode, contents)| File { path, mode, contents })
                    .collect(),
            })),
            Answer::Code(code) => Ok(Response::new(MountResponse {
                error: Some(Error { code }),
                ..Default::default()
            })),
            Answer::Status(code, message) => Err(Status::new(code, message)),
            Answer::Hang => {
                self.0.never.notified().await;
                Err(Status::internal("unreachable"))
            }
            Answer::WritesItself(files, v) => {
                let target = Path::new(&request.target_path);
                for (path, contents) in files {
                    std::fs::write(target.join(path), contents)
                        .map_err(|e| Status::internal(e.to_string()))?;
                }
                Ok(Response::new(MountResponse {
                    object_version: versions(&v),
                    ..Default::default()
                }))
            }
        }
    }
}
