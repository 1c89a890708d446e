//! Test doubles that speak the real wire protocols, so production client
//! code (kube, cloud SDKs) runs unmodified against them.

pub mod kube_api;
