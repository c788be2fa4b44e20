//! unpack_safely against archives built here with tar's low-level Header API, hostile ones
//! included: each must be refused with the entry named and nothing written outside `into`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

use brickup::archive::unpack_safely;
use tar::{EntryType, Header};

/// One raw entry: the name and link target bytes go into the header unchecked.
struct Raw {
    name: String,
    kind: EntryType,
    mode: u32,
    link: Option<String>,
    data: Vec<u8>,
}

fn file(name: &str, data: &str) -> Raw {
    Raw {
        name: name.into(),
        kind: EntryType::Regular,
        mode: 0o644,
        link: None,
        data: data.as_bytes().to_vec(),
    }
}

fn dir(name: &str) -> Raw {
    Raw {
        name: name.into(),
        kind: EntryType::Directory,
        mode: 0o755,
        link: None,
        data: Vec::new(),
    }
}

fn link(kind: EntryType, name: &str, target: &str) -> Raw {
    Raw {
        name: name.into(),
        kind,
        mode: 0o777,
        link: Some(target.into()),
        data: Vec::new(),
    }
}

fn node(kind: EntryType, name: &str) -> Raw {
    Raw {
        name: name.into(),
        kind,
        mode: 0o644,
        link: None,
        data: Vec::new(),
    }
}

/// Writes the entries into a .tgz inside `dir` without any of tar's path sanitising.
fn build(dir: &Path, entries: &[Raw]) -> PathBuf {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut builder = tar::Builder::new(gz);
    for e in entries {
        let mut h = Header::new_old();
        let name = e.name.as_bytes();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(target) = &e.link {
            let t = target.as_bytes();
            h.as_old_mut().linkname[..t.len()].copy_from_slice(t);
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_size(e.data.len() as u64);
        h.set_cksum();
        builder.append(&h, &e.data[..]).unwrap();
    }
    let bytes = builder.into_inner().unwrap().finish().unwrap();
    let path = dir.join("test.tgz");
    std::fs::write(&path, bytes).unwrap();
    path
}

/// Every path below `root`, relative, sorted.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().display().to_string());
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    out.sort();
    out
}

/// Unpacks `entries` into `<tmp>/a/b/into`; asserts a refusal naming `bad` and that outside
/// `into` nothing but the tarball exists.
fn assert_refused(entries: Vec<Raw>, bad: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let into = tmp.path().join("a/b/into");
    std::fs::create_dir_all(&into).unwrap();
    let tgz = build(tmp.path(), &entries);

    let err = unpack_safely(&tgz, &into).unwrap_err();

    let msg = format!("{err:#}");
    assert!(
        msg.contains(&format!("{bad:?}")),
        "error should name {bad:?}: {msg}"
    );
    assert!(msg.contains("refusing"), "{msg}");
    let outside: Vec<String> = tree(tmp.path())
        .into_iter()
        .filter(|p| !p.starts_with("a/b/into"))
        .collect();
    assert_eq!(outside, vec!["a", "a/b", "test.tgz"], "{msg}");
}

#[test]
fn good_archive_returns_the_install_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let mut script = file("csf/install.sh", "#!/bin/sh\n");
    script.mode = 0o4755;
    let entries = vec![
        dir("./"),
        dir("./csf/"),
        script,
        file("./csf/csf.pl", "#!/usr/bin/perl\n"),
        file("./csf/version.txt", "15.10\n"),
        file("./csf/tpl/alert.txt", "hello"),
        link(EntryType::Symlink, "csf/tpl/up", "../install.sh"),
        link(EntryType::Symlink, "csf/inst", "install.sh"),
        link(EntryType::Link, "csf/install.generic.sh", "csf/install.sh"),
    ];
    let tgz = build(tmp.path(), &entries);
    let into = tmp.path().join("fresh");

    let got = unpack_safely(&tgz, &into).unwrap();

    assert_eq!(got, into.join("csf"));
    assert_eq!(
        tree(&into),
        vec![
            "csf",
            "csf/csf.pl",
            "csf/inst",
            "csf/install.generic.sh",
            "csf/install.sh",
            "csf/tpl",
            "csf/tpl/alert.txt",
            "csf/tpl/up",
            "csf/version.txt"
        ]
    );
    assert_eq!(
        std::fs::read_to_string(got.join("tpl/alert.txt")).unwrap(),
        "hello"
    );
    assert_eq!(
        std::fs::read_to_string(got.join("tpl/up")).unwrap(),
        "#!/bin/sh\n"
    );
    let mode = std::fs::metadata(got.join("install.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7000, 0, "setuid must be dropped: {mode:o}");
    assert_eq!(mode & 0o100, 0o100, "exec bit kept: {mode:o}");
    let into_mode = std::fs::metadata(&into).unwrap().permissions().mode();
    assert_eq!(into_mode & 0o777, 0o700);
}

#[test]
fn parent_dir_traversal_is_refused() {
    assert_refused(vec![file("../x", "pwned")], "../x");
    assert_refused(vec![file("csf/../../x", "pwned")], "csf/../../x");
}

#[test]
fn absolute_paths_are_refused() {
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("x");
    assert_refused(
        vec![file(target.to_str().unwrap(), "pwned")],
        target.to_str().unwrap(),
    );
    assert!(!target.exists());
    assert_refused(
        vec![file("/etc/brickup-test-x", "pwned")],
        "/etc/brickup-test-x",
    );
    assert!(!Path::new("/etc/brickup-test-x").exists());
}

#[test]
fn symlink_out_then_file_through_it_is_refused() {
    let outside = tempfile::tempdir().unwrap();
    let out = outside.path().to_str().unwrap().to_string();
    assert_refused(
        vec![
            link(EntryType::Symlink, "csf/etc", "/etc"),
            file("csf/etc/brickup-test-x", "pwned"),
        ],
        "csf/etc",
    );
    assert!(!Path::new("/etc/brickup-test-x").exists());
    assert_refused(
        vec![
            link(EntryType::Symlink, "csf/out", &out),
            file("csf/out/x", "pwned"),
        ],
        "csf/out",
    );
    assert!(std::fs::read_dir(outside.path()).unwrap().next().is_none());
}

#[test]
fn relative_symlink_escaping_is_refused() {
    assert_refused(vec![link(EntryType::Symlink, "csf/x", "../../x")], "csf/x");
    // `y` resolves to d1, so `y/../..` is d1/../.. - outside - although it looks like d1
    // lexically and climbs no more levels than x is deep: `..` after a name is refused.
    assert_refused(
        vec![
            link(EntryType::Symlink, "d1/d2/y", ".."),
            link(EntryType::Symlink, "d1/d2/x", "y/../.."),
        ],
        "d1/d2/x",
    );
}

#[test]
fn writing_through_an_inner_symlink_is_refused() {
    assert_refused(
        vec![
            dir("csf/real"),
            link(EntryType::Symlink, "csf/alias", "real"),
            file("csf/alias/x", "via link"),
        ],
        "csf/alias/x",
    );
}

#[test]
fn hard_links_outside_are_refused() {
    assert_refused(
        vec![link(EntryType::Link, "csf/pw", "/etc/passwd")],
        "csf/pw",
    );
    assert_refused(vec![link(EntryType::Link, "csf/pw", "../x")], "csf/pw");
    assert_refused(
        vec![
            link(EntryType::Symlink, "csf/s", "t"),
            file("csf/t", "x"),
            link(EntryType::Link, "csf/h", "csf/s"),
        ],
        "csf/h",
    );
}

#[test]
fn device_and_fifo_nodes_are_refused() {
    assert_refused(vec![node(EntryType::Char, "csf/null")], "csf/null");
    assert_refused(vec![node(EntryType::Block, "csf/sda")], "csf/sda");
    assert_refused(vec![node(EntryType::Fifo, "csf/pipe")], "csf/pipe");
}

#[test]
fn duplicate_file_is_not_overwritten() {
    let tmp = tempfile::tempdir().unwrap();
    let tgz = build(
        tmp.path(),
        &[
            file("csf/install.sh", "first"),
            file("csf/install.sh", "second"),
        ],
    );
    let into = tmp.path().join("into");

    let err = unpack_safely(&tgz, &into).unwrap_err();

    let msg = format!("{err:#}");
    assert!(msg.contains("\"csf/install.sh\""), "{msg}");
    assert!(msg.contains("exists"), "{msg}");
    assert_eq!(
        std::fs::read_to_string(into.join("csf/install.sh")).unwrap(),
        "first"
    );
}

/// csf's own three marker files under `top`.
fn csf_dir(top: &str) -> Vec<Raw> {
    ["install.sh", "csf.pl", "version.txt"]
        .iter()
        .map(|f| file(&format!("{top}/{f}"), "x"))
        .collect()
}

#[test]
fn nested_installers_are_ignored_as_in_the_real_release() {
    // csf 15.10 carries a DirectAdmin plugin's install.sh at csf/da/scripts/ (FACTS.md).
    let tmp = tempfile::tempdir().unwrap();
    let mut entries = csf_dir("csf");
    entries.push(file("csf/da/scripts/install.sh", "not csf's installer"));
    entries.push(file("csf/da/install.sh", "nor this"));
    let tgz = build(tmp.path(), &entries);
    let into = tmp.path().join("into");

    assert_eq!(unpack_safely(&tgz, &into).unwrap(), into.join("csf"));
}

#[test]
fn install_dir_must_be_unique_and_complete() {
    let tmp = tempfile::tempdir().unwrap();
    let none = build(tmp.path(), &[file("csf/readme", "x")]);
    let err = unpack_safely(&none, &tmp.path().join("none")).unwrap_err();
    assert!(
        format!("{err:#}")
            .contains("no top-level directory holding install.sh + csf.pl + version.txt"),
        "{err:#}"
    );

    // install.sh alone (no csf.pl, no version.txt) is not csf's directory.
    let bare = build(tmp.path(), &[file("csf/install.sh", "x")]);
    let err = unpack_safely(&bare, &tmp.path().join("bare")).unwrap_err();
    assert!(
        format!("{err:#}").contains("top-level directories: "),
        "{err:#}"
    );

    // Markers only below the top level do not count either.
    let deep = build(tmp.path(), &csf_dir("csf/inner"));
    assert!(unpack_safely(&deep, &tmp.path().join("deep")).is_err());

    let mut both = csf_dir("a");
    both.extend(csf_dir("b"));
    let two = build(tmp.path(), &both);
    let err = unpack_safely(&two, &tmp.path().join("two")).unwrap_err();
    assert!(
        format!("{err:#}").contains("2 top-level directories"),
        "{err:#}"
    );
}

#[test]
fn not_a_gzip_tarball_is_an_error_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let bogus = tmp.path().join("bogus.tgz");
    std::fs::write(&bogus, b"<html>not found</html>").unwrap();
    let err = unpack_safely(&bogus, &tmp.path().join("into")).unwrap_err();
    assert!(format!("{err:#}").contains("bogus.tgz"), "{err:#}");
}
