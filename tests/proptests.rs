//! Property tests of the parts that read attacker- or operator-supplied text: the config loader,
//! the sshd_config editor, the csf.conf editor and the tar unpacker. Each property prints how
//! many cases it ran (`cargo test --test proptests -- --nocapture`).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use brickup::csf::conf as csfconf;
use brickup::{archive, config, sshd::edit};
use proptest::prelude::*;
use proptest::test_runner::{Config as RunConfig, FileFailurePersistence, TestRunner};

/// Marks a value that must never appear in an error.
const MARK: &str = "SEKRIT";

fn run<S: Strategy>(
    name: &str,
    cases: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    // A failure's seed is kept in tests/proptest-regressions/NAME.txt (NAME with `-` for what is
    // not a letter or digit; commit it): every later
    // run tries the kept seeds first.
    let kept: &'static str = Box::leak(
        format!(
            "{}/tests/proptest-regressions/{}.txt",
            env!("CARGO_MANIFEST_DIR"),
            name.replace(|c: char| !c.is_ascii_alphanumeric(), "-")
        )
        .into_boxed_str(),
    );
    let mut runner = TestRunner::new(RunConfig {
        cases,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(kept))),
        ..RunConfig::default()
    });
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{name}: {e}");
    }
    println!("{name}: {cases} cases passed");
}

// ---- config loader ----

/// Values a careless owner might paste, each carrying [`MARK`], in many YAML shapes (values
/// only: an unknown key is named in its error, as it must be to be found).
fn secret_value() -> impl Strategy<Value = String> {
    // No ':' here: `word:` at the start of a line is a key, and unknown keys are named.
    let word = "[A-Za-z0-9+/=@.-]{0,12}";
    (word, word, 0..10usize).prop_map(|(a, b, shape)| {
        let s = format!("{a}{MARK}{b}");
        match shape {
            0 => s,
            1 => format!("\"{a}\\n{MARK}\\r{b}\\0\""),
            2 => format!("'{s}'"),
            3 => format!("|\n      -----BEGIN KEY-----\n      {s}\n      -----END KEY-----"),
            4 => format!("[{s}, 1]"),
            5 => format!("{{a: {s}}}"),
            6 => format!("!{MARK}tag {s}"),
            7 => format!(">\n      {a}\n      {s}"),
            8 => format!("http://{a}{MARK}:{b}@{MARK}.example/p?{MARK}={b}"),
            _ => format!("{MARK}{a}://{MARK}.example/{b}"),
        }
    })
}

fn plain_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("1".to_string()),
        Just("2222".to_string()),
        Just("70000".to_string()),
        Just("-5".to_string()),
        Just("true".to_string()),
        Just("[pivx, 9999]".to_string()),
        Just("[]".to_string()),
        Just("{}".to_string()),
        Just("~".to_string()),
        Just("auto".to_string()),
        Just("\"https://example.com/r\"".to_string()),
        Just(format!("\"{}\"", "ab".repeat(32))),
        Just(
            "[ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIG1bh5Dyv/MbhAvzLRXQqVpyA9GJmaBkNt9CSFBOhuZi x]"
                .to_string()
        ),
    ]
}

const KEYS: &[&str] = &[
    "version",
    "ssh",
    "user",
    "port",
    "authorized_keys",
    "password_authentication",
    "settings",
    "firewall",
    "masternode_ports",
    "extra_tcp_in",
    "ipv6",
    "restrict_syslog",
    "tcp_out",
    "csf",
    "url",
    "sha256",
    "allow_http",
    "ca_file",
    "packages",
    "extra",
    "report",
    "token",
    "token_file",
    "hmac_secret",
    "total_timeout_secs",
    "MaxAuthTries",
    "LF_DAEMON",
    "bogus",
];

/// YAML-ish documents: lines of `key: value`, nested by indentation, list items, stray text.
fn yamlish() -> impl Strategy<Value = String> {
    let value = prop_oneof![secret_value(), plain_value(), Just(String::new())];
    let line = (0..4usize, prop::sample::select(KEYS), value, 0..8usize).prop_map(
        |(depth, key, value, shape)| {
            let indent = "  ".repeat(depth);
            match shape {
                0 => format!("{indent}- {value}"),
                1 => format!("{indent}{value}"),
                2 => format!("{indent}{key}:"),
                _ => format!("{indent}{key}: {value}"),
            }
        },
    );
    prop::collection::vec(line, 0..12).prop_map(|lines| {
        let mut text = String::from("version: 1\nssh:\n  port: 2222\n");
        for l in lines {
            text.push_str(&l);
            text.push('\n');
        }
        text
    })
}

#[test]
fn config_errors_never_echo_values() {
    run("config loader", 2048, yamlish(), |text| {
        if let Err(e) = config::parse(&text, Path::new("b.yaml")) {
            let shown = format!("{e}\n{e:?}");
            prop_assert!(
                !shown.contains(MARK),
                "value echoed:\n{shown}\n--- from:\n{text}"
            );
            prop_assert!(e.problems.iter().all(|p| !p.message.contains('\n')));
        }
        Ok(())
    });
}

// ---- sshd_config editor ----

fn keyword() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "Port",
        "PasswordAuthentication",
        "PermitRootLogin",
        "MaxAuthTries",
        "X11Forwarding",
        "Match",
        "Include",
    ])
    .prop_map(str::to_string)
}

/// Values with line breaks, NUL and an injected directive.
fn hostile_value() -> impl Strategy<Value = String> {
    (
        "[a-z0-9 ]{0,6}",
        prop::sample::select(vec!["", "\n", "\r", "\r\n", "\0", "\u{b}", "\u{85}"]),
    )
        .prop_map(|(v, brk)| format!("{v}{brk}INJECTED yes"))
}

fn settings() -> impl Strategy<Value = edit::Settings> {
    prop::collection::vec(
        (keyword(), prop_oneof![hostile_value(), "[a-z0-9]{1,5}"]),
        0..5,
    )
}

/// An existing sshd_config: directives, comments, Match blocks, brickup's own markers, CRLF.
fn sshd_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        (keyword(), "[a-z0-9]{1,4}").prop_map(|(k, v)| format!("{k} {v}")),
        (keyword(), "[a-z0-9]{1,4}").prop_map(|(k, v)| format!("  {k}={v}")),
        Just("# a comment".to_string()),
        Just("Include /etc/ssh/sshd_config.d/*.conf".to_string()),
        Just("Match User bob".to_string()),
        Just(edit::BEGIN.to_string()),
        Just(edit::END.to_string()),
        Just(format!("{}Port 22", edit::DISABLED)),
        Just(String::new()),
    ];
    (
        prop::collection::vec((line, prop::bool::ANY), 0..10),
        prop::bool::ANY,
    )
        .prop_map(|(lines, last_nl)| {
            let mut text: String = lines
                .iter()
                .map(|(l, crlf)| format!("{l}{}", if *crlf { "\r\n" } else { "\n" }))
                .collect();
            if !last_nl {
                text.pop();
            }
            text
        })
}

/// Lines sshd would read as directives that nobody wrote on purpose.
fn injected(text: &str) -> bool {
    text.split(['\n', '\r', '\0'])
        .any(|l| l.trim_start().starts_with("INJECTED"))
}

#[test]
fn sshd_edits_are_idempotent_and_inject_no_line() {
    let strategy = (sshd_text(), settings());
    run("sshd_config editor", 2048, strategy, |(text, settings)| {
        let once = edit::edit_in_place(&text, &settings);
        prop_assert_eq!(&edit::edit_in_place(&once, &settings), &once);
        prop_assert!(!injected(&once), "injected line in:\n{}", once);
        let dropin = edit::render_dropin(&settings);
        prop_assert!(!injected(&dropin), "injected line in:\n{}", dropin);
        prop_assert_eq!(dropin.lines().count(), 2 + settings.len());
        let keywords: Vec<String> = settings
            .iter()
            .map(|(k, _)| k.to_ascii_lowercase())
            .collect();
        let disabled =
            edit::disable_before_include(&edit::disable_keywords(&text, &keywords), &keywords);
        let again =
            edit::disable_before_include(&edit::disable_keywords(&disabled, &keywords), &keywords);
        prop_assert_eq!(again, disabled);
        Ok(())
    });
}

// ---- csf.conf editor ----

const CSF_KEYS: &[&str] = &["TESTING", "TCP_IN", "IPV6", "LF_DAEMON"];

fn csf_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        (prop::sample::select(CSF_KEYS), "[0-9,]{0,6}").prop_map(|(k, v)| format!("{k} = \"{v}\"")),
        (prop::sample::select(CSF_KEYS), "[0-9,]{0,6}").prop_map(|(k, v)| format!("{k}=\"{v}\"  ")),
        prop::sample::select(CSF_KEYS).prop_map(|k| format!("# {k} = \"1\" in a comment")),
        Just("OTHER = \"x\"".to_string()),
        Just(String::new()),
    ];
    prop::collection::vec((line, prop::bool::ANY), 0..12).prop_map(|lines| {
        lines
            .iter()
            .map(|(l, crlf)| format!("{l}{}", if *crlf { "\r\n" } else { "\n" }))
            .collect()
    })
}

fn csf_wanted() -> impl Strategy<Value = BTreeMap<String, String>> {
    let value = prop_oneof!["[0-9,]{0,6}", hostile_value()];
    prop::collection::btree_map(
        prop::sample::select(CSF_KEYS).prop_map(str::to_string),
        value,
        0..4,
    )
}

#[test]
fn csf_edits_are_idempotent_and_inject_no_line() {
    run(
        "csf.conf editor",
        2048,
        (csf_text(), csf_wanted()),
        |(text, wanted)| {
            let hostile = wanted.values().any(|v| v.chars().any(char::is_control));
            match csfconf::apply_policy(&text, &wanted) {
                Ok(once) => {
                    prop_assert!(
                        !hostile,
                        "a value with a control character was written:\n{once}"
                    );
                    prop_assert!(!injected(&once), "injected line in:\n{}", once);
                    prop_assert_eq!(once.split('\n').count(), text.split('\n').count());
                    prop_assert_eq!(csfconf::apply_policy(&once, &wanted).unwrap(), once.clone());
                    prop_assert!(csfconf::drift(&once, &wanted).is_empty());
                }
                Err(csfconf::CsfConfError::BadValue { .. }) => prop_assert!(hostile),
                Err(_) => {}
            }
            Ok(())
        },
    );
}

// ---- tar unpacker ----

#[derive(Debug, Clone)]
enum Kind {
    File,
    Dir,
    Symlink(String),
    Hardlink(String),
    Fifo,
    CharDevice,
}

fn hostile_path() -> impl Strategy<Value = String> {
    let part = prop::sample::select(vec!["a", "b", "..", ".", "", "link", "install.sh", "csf"]);
    (
        prop::bool::weighted(0.15),
        prop::collection::vec(part, 1..5),
    )
        .prop_map(|(abs, parts)| format!("{}{}", if abs { "/" } else { "" }, parts.join("/")))
}

fn entry() -> impl Strategy<Value = (String, Kind)> {
    let kind = prop_oneof![
        3 => Just(Kind::File),
        2 => Just(Kind::Dir),
        3 => hostile_path().prop_map(Kind::Symlink),
        2 => hostile_path().prop_map(Kind::Hardlink),
        1 => Just(Kind::Fifo),
        1 => Just(Kind::CharDevice),
    ];
    (hostile_path(), kind)
}

/// A gzip tarball whose names are written byte for byte (the `tar` crate's `set_path` would
/// refuse the hostile ones).
fn tarball(entries: &[(String, Kind)], out: &Path) {
    use tar::{EntryType, Header};
    let file = std::fs::File::create(out).unwrap();
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::fast());
    let mut b = tar::Builder::new(gz);
    for (name, kind) in entries {
        let mut h = Header::new_gnu();
        let raw = name.as_bytes();
        h.as_gnu_mut().unwrap().name[..raw.len()].copy_from_slice(raw);
        let (ty, link) = match kind {
            Kind::File => (EntryType::Regular, None),
            Kind::Dir => (EntryType::Directory, None),
            Kind::Symlink(t) => (EntryType::Symlink, Some(t)),
            Kind::Hardlink(t) => (EntryType::Link, Some(t)),
            Kind::Fifo => (EntryType::Fifo, None),
            Kind::CharDevice => (EntryType::Char, None),
        };
        if let Some(t) = link {
            h.as_gnu_mut().unwrap().linkname[..t.len()].copy_from_slice(t.as_bytes());
        }
        let data: &[u8] = if matches!(kind, Kind::File) {
            b"payload\n"
        } else {
            b""
        };
        h.set_entry_type(ty);
        h.set_mode(0o4777);
        h.set_size(data.len() as u64);
        h.set_cksum();
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap().finish().unwrap();
}

/// Every path under `dir`, without following symlinks.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        out.push(p.clone());
        if std::fs::symlink_metadata(&p).unwrap().is_dir() {
            walk(&p, out);
        }
    }
}

/// Where a symlink at `link` points, resolved lexically; `None` once it climbs above `/`.
fn lexical_target(link: &Path) -> Option<PathBuf> {
    let target = std::fs::read_link(link).unwrap();
    let mut out = link.parent().unwrap().to_path_buf();
    for c in target.components() {
        match c {
            Component::RootDir => out = PathBuf::from("/"),
            // The guard pops as it tests: `..` above `/` ends the walk.
            Component::ParentDir if !out.pop() => return None,
            Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    Some(out)
}

#[test]
fn unpacking_never_writes_outside_the_target() {
    let strategy = prop::collection::vec(entry(), 1..8);
    run("tar unpacker", 512, strategy, |entries| {
        let tmp = tempfile::tempdir().unwrap();
        let (outside, into) = (tmp.path().join("outside"), tmp.path().join("into"));
        std::fs::create_dir(&outside).unwrap();
        let tgz = tmp.path().join("a.tgz");
        tarball(&entries, &tgz);
        let _ = archive::unpack_safely(&tgz, &into);
        let mut all = Vec::new();
        walk(tmp.path(), &mut all);
        for p in &all {
            prop_assert!(
                p.starts_with(&into) || p == &outside || p == &tgz,
                "written outside: {}",
                p.display()
            );
            let meta = std::fs::symlink_metadata(p).unwrap();
            if meta.file_type().is_symlink() {
                let t = lexical_target(p);
                prop_assert!(
                    t.as_ref().is_some_and(|t| t.starts_with(&into)),
                    "symlink {} points outside: {:?}",
                    p.display(),
                    t
                );
            } else if meta.is_file() {
                use std::os::unix::fs::PermissionsExt as _;
                prop_assert_eq!(meta.permissions().mode() & 0o7022, 0, "{}", p.display());
            } else {
                prop_assert!(meta.is_dir(), "special file {}", p.display());
            }
        }
        Ok(())
    });
}
