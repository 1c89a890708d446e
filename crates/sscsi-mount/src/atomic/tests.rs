use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use super::*;
use crate::Mounter;

fn file(path: &str, mode: u32, contents: &str) -> SecretFile {
    SecretFile { path: path.into(), mode, contents: contents.into() }
}

fn setup() -> (tempfile::TempDir, PathBuf, AtomicWriter) {
    let root = tempfile::tempdir().unwrap();
    let target = root.path().join("mount");
    fs::create_dir(&target).unwrap();
    let writer = AtomicWriter::new(&target);
    (root, target, writer)
}

/// Every entry under `dir`, relative, sorted; symlinks shown with their target.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
            let t = e.file_type().unwrap();
            if t.is_symlink() {
                out.push(format!("{rel} -> {}", fs::read_link(e.path()).unwrap().display()));
            } else if t.is_dir() {
                out.push(format!("{rel}/"));
                stack.push((e.path(), format!("{rel}/")));
            } else {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

#[test]
fn creates_the_kubelet_layout() {
    let (_root, target, writer) = setup();
    let out = writer
        .write(&[file("username", 0o644, "admin"), file("db/password", 0o600, "pw")])
        .unwrap();
    let WriteOutcome::Written(version) = out else { panic!("expected a write") };
    assert!(is_version_dir_name(&version), "{version}");
    assert_eq!(
        tree(&target),
        vec![
            format!("{version}/"),
            format!("{version}/db/"),
            format!("{version}/db/password"),
            format!("{version}/username"),
            format!("..data -> {version}"),
            "db -> ..data/db".to_owned(),
            "username -> ..data/username".to_owned(),
        ]
    );
    assert_eq!(fs::read_to_string(target.join("username")).unwrap(), "admin");
    assert_eq!(fs::read_to_string(target.join("db/password")).unwrap(), "pw");
    assert_eq!(mode_of(&target.join(&version)), 0o755);
    assert_eq!(mode_of(&target.join(&version).join("db")), 0o755);
}

#[test]
fn modes_are_exact_whatever_the_umask() {
    let (_root, target, writer) = setup();
    // The test process's umask is typically 022; 0o666 and 0o777 show it is ignored.
    writer
        .write(&[
            file("a", 0o666, "x"),
            file("b", 0o400, "x"),
            file("c", 0o777, "x"),
            file("d", 0, "x"),
        ])
        .unwrap();
    for (name, want) in [("a", 0o666), ("b", 0o400), ("c", 0o777), ("d", 0)] {
        assert_eq!(mode_of(&target.join("..data").join(name)), want, "{name}");
    }
}

#[test]
fn unchanged_content_is_not_rewritten() {
    let (_root, target, writer) = setup();
    let files = [file("a", 0o644, "1"), file("n/b", 0o600, "2")];
    let WriteOutcome::Written(first) = writer.write(&files).unwrap() else { panic!() };
    assert_eq!(writer.write(&files).unwrap(), WriteOutcome::Unchanged);
    assert_eq!(fs::read_link(target.join(DATA_DIR)).unwrap(), Path::new(&first));
    // A mode change alone is a change.
    let changed = [file("a", 0o640, "1"), file("n/b", 0o600, "2")];
    assert!(matches!(writer.write(&changed).unwrap(), WriteOutcome::Written(_)));
}

#[test]
fn update_swaps_data_and_removes_stale_files_and_versions() {
    let (_root, target, writer) = setup();
    let WriteOutcome::Written(v1) = writer
        .write(&[file("keep", 0o644, "old"), file("gone", 0o644, "x"), file("d/x", 0o644, "x")])
        .unwrap()
    else {
        panic!()
    };
    let WriteOutcome::Written(v2) =
        writer.write(&[file("keep", 0o644, "new"), file("added", 0o644, "a")]).unwrap()
    else {
        panic!()
    };
    assert_ne!(v1, v2);
    assert_eq!(
        tree(&target),
        vec![
            format!("{v2}/"),
            format!("{v2}/added"),
            format!("{v2}/keep"),
            format!("..data -> {v2}"),
            "added -> ..data/added".to_owned(),
            "keep -> ..data/keep".to_owned(),
        ]
    );
    assert_eq!(fs::read_to_string(target.join("keep")).unwrap(), "new");
}

#[test]
fn writing_nothing_empties_the_volume() {
    let (_root, target, writer) = setup();
    writer.write(&[file("a", 0o644, "1")]).unwrap();
    let WriteOutcome::Written(v) = writer.write(&[]).unwrap() else { panic!() };
    assert_eq!(tree(&target), vec![format!("{v}/"), format!("..data -> {v}")]);
}

#[test]
fn replaces_files_an_old_provider_wrote_itself() {
    let (_root, target, writer) = setup();
    fs::write(target.join("a"), "written in place").unwrap();
    fs::write(target.join("unrelated"), "kept").unwrap();
    writer.write(&[file("a", 0o644, "new")]).unwrap();
    assert!(fs::symlink_metadata(target.join("a")).unwrap().file_type().is_symlink());
    assert_eq!(fs::read_to_string(target.join("a")).unwrap(), "new");
    assert_eq!(fs::read_to_string(target.join("unrelated")).unwrap(), "kept");
}

#[test]
fn bad_paths_write_nothing_anywhere() {
    let (root, target, writer) = setup();
    writer.write(&[file("a", 0o644, "v1")]).unwrap();
    let before = tree(root.path());
    let cases: Vec<Vec<SecretFile>> = vec![
        vec![file("ok", 0o644, "x"), file("../../etc/x", 0o644, "x")],
        vec![file("/etc/x", 0o644, "x")],
        vec![file("a/../../x", 0o644, "x")],
        vec![file("..data/x", 0o644, "x")],
        vec![file("x", 0o644, "1"), file("x", 0o644, "2")],
        vec![file("x", 0o644, "1"), file("x/y", 0o644, "2")],
        vec![file("x", 0o4755, "1")],
    ];
    for files in cases {
        let err = writer.write(&files).unwrap_err();
        assert!(err.is_invalid_input(), "{err}");
        assert_eq!(tree(root.path()), before, "after {err}");
    }
    assert_eq!(fs::read_to_string(target.join("a")).unwrap(), "v1");
}

#[test]
fn a_failed_write_keeps_the_previous_version() {
    let (_root, target, writer) = setup();
    let is_root = nix::unistd::geteuid().is_root();
    if is_root {
        // A real, tiny tmpfs: the second write runs out of space half way.
        crate::TmpfsMounter::new(64 << 10).mount(&target, None).unwrap();
    }
    writer.write(&[file("a", 0o644, "v1")]).unwrap();
    let before = tree(&target);
    let big = "x".repeat(1 << 20);
    let files = [file("a", 0o644, "v2"), file("b", 0o644, &big)];
    if !is_root {
        // Without root, a read-only target makes creating the version dir fail.
        fs::set_permissions(&target, fs::Permissions::from_mode(0o555)).unwrap();
    }
    let result = writer.write(&files);
    fs::set_permissions(&target, fs::Permissions::from_mode(0o755)).unwrap();
    let after = tree(&target);
    let content = fs::read_to_string(target.join("a")).unwrap();
    if is_root {
        crate::TmpfsMounter::new(0).unmount(&target).unwrap();
    }
    let err = result.unwrap_err();
    assert!(!err.is_invalid_input(), "{err}");
    assert_eq!(after, before, "no half-written version may stay behind");
    assert_eq!(content, "v1");
}

#[test]
fn remove_all_leaves_foreign_files() {
    let (_root, target, writer) = setup();
    writer.write(&[file("a", 0o644, "1"), file("d/b", 0o644, "2")]).unwrap();
    fs::write(target.join("foreign"), "x").unwrap();
    writer.remove_all().unwrap();
    assert_eq!(tree(&target), vec!["foreign".to_owned()]);
    fs::remove_file(target.join("foreign")).unwrap();
    writer.remove_all().unwrap();
    assert!(tree(&target).is_empty());
}

#[test]
fn read_current_returns_what_was_written() {
    let (_root, _target, writer) = setup();
    assert!(writer.read_current().unwrap().is_empty());
    writer.write(&[file("a", 0o600, "1"), file("d/b", 0o644, "2")]).unwrap();
    let current = writer.read_current().unwrap();
    let got: Vec<(&str, u32, &[u8])> =
        current.iter().map(|(p, (m, b))| (p.as_str(), *m, b.expose())).collect();
    assert_eq!(got, vec![("a", 0o600, &b"1"[..]), ("d/b", 0o644, &b"2"[..])]);
}

/// Each version writes two files whose contents both name the version, each
/// padded to a size that differs per version, so a torn or mixed read shows.
fn version_files(n: usize) -> Vec<SecretFile> {
    let body = |tag: &str| format!("{tag}:{n}:{}", "x".repeat(n % 97 * 50));
    vec![file("one", 0o644, &body("one")), file("nested/two", 0o644, &body("two"))]
}

fn parse(tag: &str, s: &str) -> usize {
    let mut parts = s.splitn(3, ':');
    assert_eq!(parts.next(), Some(tag), "torn read: {s:.40}");
    let n: usize = parts.next().unwrap().parse().unwrap();
    assert_eq!(parts.next().unwrap(), "x".repeat(n % 97 * 50), "torn read of version {n}");
    n
}

#[test]
fn concurrent_reader_sees_one_whole_version_during_1000_updates() {
    let (_root, target, writer) = setup();
    writer.write(&version_files(0)).unwrap();
    let done = Arc::new(AtomicBool::new(false));
    let reader = {
        let (done, target) = (done.clone(), target.clone());
        std::thread::spawn(move || {
            let (mut consistent, mut last) = (0usize, 0usize);
            while !done.load(Ordering::Relaxed) {
                // Resolve ..data once, then read both files of that version.
                let Ok(dir) = fs::read_link(target.join(DATA_DIR)) else {
                    continue;
                };
                let dir = target.join(dir);
                let (Ok(a), Ok(b)) = (
                    fs::read_to_string(dir.join("one")),
                    fs::read_to_string(dir.join("nested/two")),
                ) else {
                    continue; // that version was removed meanwhile: a retry, not a mix
                };
                let (na, nb) = (parse("one", &a), parse("two", &b));
                assert_eq!(na, nb, "mixed versions in one ..data");
                assert!(na >= last, "went back from {last} to {na}");
                last = na;
                // The user-visible link alone must always give a whole file.
                if let Ok(s) = fs::read_to_string(target.join("one")) {
                    parse("one", &s);
                }
                consistent += 1;
            }
            consistent
        })
    };
    for n in 1..=1000 {
        writer.write(&version_files(n)).unwrap();
    }
    done.store(true, Ordering::Relaxed);
    let reads = reader.join().expect("reader saw a torn or mixed version");
    assert!(reads > 0, "the reader never completed a read");
    assert_eq!(parse("one", &fs::read_to_string(target.join("one")).unwrap()), 1000);
}

/// Every entry under `dir` (the dir included) with its group, links too.
fn groups(dir: &Path) -> Vec<(String, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = vec![(".".to_owned(), fs::symlink_metadata(dir).unwrap().gid())];
    let mut stack = vec![(dir.to_owned(), String::new())];
    while let Some((d, prefix)) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let rel = format!("{prefix}{}", e.file_name().to_string_lossy());
            let meta = fs::symlink_metadata(e.path()).unwrap();
            if meta.is_dir() {
                stack.push((e.path(), format!("{rel}/")));
            }
            out.push((rel, meta.gid()));
        }
    }
    out.sort();
    out
}

#[test]
fn a_group_owns_every_entry_keeps_modes_and_a_new_group_rewrites() {
    // Changing a file's group to any group needs root; CI runs as root.
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let (_root, target, _) = setup();
    let files = [file("db/password", 0o640, "s3cret"), file("token", 0o440, "t")];
    let writer = AtomicWriter::new(&target).with_group(Some(2000));
    let WriteOutcome::Written(first) = writer.write(&files).unwrap() else { panic!("not written") };
    let owned = groups(&target);
    assert!(owned.len() > 6, "{owned:?}");
    assert!(owned.iter().all(|(_, gid)| *gid == 2000), "{owned:?}");
    let mode = |p: &str| fs::metadata(target.join(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!((mode("db/password"), mode("token")), (0o640, 0o440));

    // The same bytes for the same group: nothing to do.
    assert_eq!(writer.write(&files).unwrap(), WriteOutcome::Unchanged);
    // A rotation keeps the group on the new version.
    let rotated = [file("db/password", 0o640, "s3cret-2"), file("token", 0o440, "t")];
    assert!(matches!(writer.write(&rotated).unwrap(), WriteOutcome::Written(n) if n != first));
    assert!(groups(&target).iter().all(|(_, gid)| *gid == 2000));
    // Another group (a pod of another fsGroup on a reused path) rewrites.
    let other = AtomicWriter::new(&target).with_group(Some(3000));
    assert!(matches!(other.write(&rotated).unwrap(), WriteOutcome::Written(_)));
    assert!(groups(&target).iter().all(|(_, gid)| *gid == 3000), "{:?}", groups(&target));
}
