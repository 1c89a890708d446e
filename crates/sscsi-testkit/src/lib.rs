//! Test doubles that speak the real wire protocols, so production client
//! code (kube, cloud SDKs) runs unmodified against them, and the real test
//! servers they need, started on loopback.

pub mod azure;
pub mod bao;
pub mod csi;
pub mod gcp;
pub mod grpc_go;
pub mod jwt;
pub mod kube_api;
pub mod moto;
mod mount_dir;
pub use mount_dir::MountDir;
pub mod pki;
mod process;
pub mod provider;
pub use process::{program, test_env};
