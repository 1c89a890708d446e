//! Where secret volumes live on the node: the [`Mounter`] that puts a tmpfs
//! on the target path and the [`AtomicWriter`] that lays files out in it.

mod atomic;
mod mounter;

pub use atomic::{AtomicWriter, DATA_DIR, WriteError, WriteOutcome};
pub use mounter::{FakeMounter, MountError, Mounter, TmpfsMounter, parse_size};
