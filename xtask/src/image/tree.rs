//! A layer's file tree, written as a tar that depends on its contents alone:
//! entries sorted by path (a directory before what it holds), one fixed
//! mtime, numeric owners with no names, the modes given.

use std::collections::BTreeMap;
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Symlink(PathBuf),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    node: Node,
    mode: u32,
    owner: u64,
}

#[derive(Debug, Default)]
pub struct Tree {
    entries: BTreeMap<String, Entry>,
}

impl Tree {
    /// Adds `path` (relative, `/`-separated) owned by root, and any missing
    /// parent directory (0755).
    pub fn insert(&mut self, path: &str, node: Node, mode: u32) {
        self.insert_owned(path, node, mode, 0);
    }

    pub fn insert_owned(&mut self, path: &str, node: Node, mode: u32, owner: u64) {
        let path = path.trim_matches('/');
        let mut parent = String::new();
        for part in path.split('/').collect::<Vec<_>>().split_last().map_or(&[][..], |(_, p)| p) {
            if !parent.is_empty() {
                parent.push('/');
            }
            parent.push_str(part);
            self.entries.entry(parent.clone()).or_insert(Entry {
                node: Node::Dir,
                mode: 0o755,
                owner: 0,
            });
        }
        self.entries.insert(path.to_owned(), Entry { node, mode, owner });
    }

    /// The entries whose path starts with `prefix`, in path order.
    pub fn under<'a>(&'a self, prefix: &'a str) -> impl Iterator<Item = (&'a str, &'a Node)> {
        self.entries
            .range(prefix.to_owned()..)
            .take_while(move |(path, _)| path.starts_with(prefix))
            .map(|(path, entry)| (path.as_str(), &entry.node))
    }

    /// The tar of the tree, every entry dated `mtime`.
    pub fn tar(&self, mtime: u64) -> std::io::Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        builder.mode(tar::HeaderMode::Deterministic);
        for (path, entry) in &self.entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(entry.mode);
            header.set_uid(entry.owner);
            header.set_gid(entry.owner);
            header.set_mtime(mtime);
            match &entry.node {
                Node::Dir => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_size(0);
                    builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
                }
                Node::File(bytes) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_size(bytes.len() as u64);
                    builder.append_data(&mut header, path, bytes.as_slice())?;
                }
                Node::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_size(0);
                    builder.append_link(&mut header, path, target)?;
                }
            }
        }
        builder.into_inner()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parents_come_first_and_order_is_by_path() {
        let mut tree = Tree::default();
        tree.insert("usr/lib/b", Node::File(b"b".to_vec()), 0o644);
        tree.insert("etc/a", Node::File(b"a".to_vec()), 0o600);
        tree.insert("lib64/ld", Node::Symlink("/lib/ld".into()), 0o777);
        let tar = tree.tar(7).unwrap();
        let mut archive = tar::Archive::new(tar.as_slice());
        let listed: Vec<(String, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (e.path().unwrap().display().to_string(), h.mode().unwrap(), h.mtime().unwrap())
            })
            .collect();
        assert_eq!(
            listed,
            [
                ("etc/".into(), 0o755, 7),
                ("etc/a".into(), 0o600, 7),
                ("lib64/".into(), 0o755, 7),
                ("lib64/ld".into(), 0o777, 7),
                ("usr/".into(), 0o755, 7),
                ("usr/lib/".into(), 0o755, 7),
                ("usr/lib/b".into(), 0o644, 7),
            ]
        );
    }

    #[test]
    fn the_same_tree_gives_the_same_bytes_whatever_the_insertion_order() {
        let files = [("a/x", "1"), ("b", "2"), ("a/y/z", "3")];
        let mut one = Tree::default();
        let mut two = Tree::default();
        for (p, c) in files {
            one.insert(p, Node::File(c.into()), 0o644);
        }
        for (p, c) in files.iter().rev() {
            two.insert(p, Node::File(c.as_bytes().to_vec()), 0o644);
        }
        assert_eq!(one.tar(0).unwrap(), two.tar(0).unwrap());
    }
}
