//! Table tests for the csf.conf editor on a generated ~4,000-line file in csf's format (written
//! by us: comment blocks that name keys, `KEY = "value"` settings, the defaults from FACTS.md).

use std::collections::BTreeMap;

use brickup::csf::conf::{apply_policy, drift, port_list, read_keys, CsfConfError};

/// The keys brickup owns, with the defaults a fresh csf install ships (FACTS.md).
const OWNED_DEFAULTS: &[(&str, &str)] = &[
    ("TESTING", "1"),
    ("TESTING_INTERVAL", "5"),
    ("TCP_IN", "20,21,22,25,53,80,110,143,443,465,587,993,995"),
    ("TCP_OUT", "20,21,22,25,53,80,110,113,443,587,993,995"),
    ("UDP_IN", "20,21,53,80,443"),
    ("UDP_OUT", "20,21,53,113,123"),
    ("IPV6", "0"),
    ("TCP6_IN", "20,21,22,25,53,80,110,143,443,465,587,993,995"),
    ("TCP6_OUT", "20,21,22,25,53,80,110,113,443,587,993,995"),
    ("UDP6_IN", "20,21,53,80,443"),
    ("UDP6_OUT", "20,21,53,113,123"),
    ("AUTO_UPDATES", "1"),
    ("RESTRICT_SYSLOG", "0"),
    ("LF_DAEMON", "1"),
];

/// A deterministic csf.conf: sections of `#` comment blocks (which quote key names and whole
/// commented-out settings) followed by settings, the owned keys spread through filler keys.
fn generated_conf() -> String {
    let mut out = String::new();
    out.push_str("#!/usr/bin/perl\n");
    out.push_str(&"#".repeat(78));
    out.push_str("\n# brickup test fixture in csf.conf format (generated, not csf's text)\n");
    out.push_str("# To leave testing mode set TESTING to 0 and restart the firewall.\n");
    out.push_str("# TESTING = \"0\"\n#TCP_IN = \"1,2,3\"\n");
    out.push_str(&"#".repeat(78));
    out.push('\n');
    let mut owned = OWNED_DEFAULTS.iter();
    let mut n = 0;
    while out.lines().count() < 4000 {
        n += 1;
        let section = format!("SECTION:Generated block {n}");
        out.push_str(&format!(
            "\n{}\n# {section}\n{}\n",
            "#".repeat(78),
            "#".repeat(78)
        ));
        for i in 0..6 {
            let key = format!("LF_FILLER_{n}_{i}");
            out.push_str(&format!(
                "# {key} works together with TCP_IN and UDP6_OUT; see also\n\
                 # TESTING_INTERVAL. Example: {key} = \"{i}\"\n\
                 #\n# TCP_IN = \"22,{n}\"  (a commented-out setting)\n\
                 {key} = \"{}\"\n\n",
                n * 10 + i
            ));
        }
        if let Some((key, value)) = owned.next() {
            out.push_str(&format!(
                "# {key}: set TESTING to 0 once the server works. Default: {key} = \"{value}\"\n\
                 {key} = \"{value}\"\n\n"
            ));
        }
    }
    assert!(
        owned.next().is_none(),
        "generator must place every owned key"
    );
    out
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn brickup_policy() -> BTreeMap<String, String> {
    map(&[
        ("TESTING", "0"),
        ("TCP_IN", "2222,9999"),
        ("TCP6_IN", "2222,9999"),
        ("UDP_IN", ""),
        ("UDP6_IN", ""),
        ("IPV6", "1"),
        ("AUTO_UPDATES", "0"),
        ("RESTRICT_SYSLOG", "3"),
    ])
}

/// Line numbers (0-based) where `a` and `b` differ; both must have the same line count.
fn changed_lines(a: &str, b: &str) -> Vec<usize> {
    let (la, lb): (Vec<_>, Vec<_>) = (a.split('\n').collect(), b.split('\n').collect());
    assert_eq!(la.len(), lb.len(), "line count changed");
    (0..la.len()).filter(|&i| la[i] != lb[i]).collect()
}

#[test]
fn generated_fixture_is_csf_sized_and_reads_defaults() {
    let conf = generated_conf();
    assert!(conf.lines().count() >= 4000);
    let keys = read_keys(&conf);
    for (k, v) in OWNED_DEFAULTS {
        assert_eq!(keys.get(*k).map(String::as_str), Some(*v), "{k}");
    }
    // Commented-out settings (`# TESTING = "0"`, `#TCP_IN = "1,2,3"`) are not read.
    assert_eq!(keys["TESTING"], "1");
    assert_eq!(keys["LF_FILLER_3_2"], "32");
    assert!(keys.keys().all(|k| !k.starts_with('#')));
}

#[test]
fn apply_changes_only_owned_lines() {
    let conf = generated_conf();
    let policy = brickup_policy();
    let new = apply_policy(&conf, &policy).unwrap();
    let new_lines: Vec<&str> = new.split('\n').collect();
    let changed = changed_lines(&conf, &new);
    // UDP_IN/UDP6_IN... every policy value differs from its default here, so each changes once.
    assert_eq!(changed.len(), policy.len());
    for i in changed {
        let line = new_lines[i];
        let key = line.split(' ').next().unwrap();
        assert_eq!(
            line,
            format!("{key} = \"{}\"", policy[key]),
            "line {}",
            i + 1
        );
    }
    let keys = read_keys(&new);
    for (k, v) in OWNED_DEFAULTS {
        let want = policy.get(*k).map(String::as_str).unwrap_or(v);
        assert_eq!(keys[*k], want, "{k}");
    }
}

#[test]
fn comment_lines_naming_keys_stay_untouched() {
    let conf = generated_conf();
    let new = apply_policy(&conf, &brickup_policy()).unwrap();
    let comments = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    let before = comments(&conf);
    assert!(before.iter().any(|l| l == "# TESTING = \"0\""));
    assert!(before.iter().any(|l| l.contains("set TESTING to 0")));
    assert!(before.iter().filter(|l| l.contains("TCP_IN = ")).count() > 100);
    assert_eq!(before, comments(&new));
}

#[test]
fn missing_key_is_an_error_naming_it() {
    let conf: String = generated_conf()
        .split_inclusive('\n')
        .filter(|l| !l.starts_with("LF_DAEMON ="))
        .collect();
    let mut policy = brickup_policy();
    policy.insert("LF_DAEMON".into(), "1".into());
    let err = apply_policy(&conf, &policy).unwrap_err();
    assert_eq!(
        err,
        CsfConfError::MissingKey {
            key: "LF_DAEMON".into()
        }
    );
    assert_eq!(
        err.to_string(),
        "csf.conf has no LF_DAEMON setting: this csf release may have renamed it"
    );
    // A key only mentioned in comments is still missing.
    let only_comment = "# NEW_KEY = \"1\"\n#NEW_KEY = \"1\"\nOTHER = \"NEW_KEY\"\n";
    let err = apply_policy(only_comment, &map(&[("NEW_KEY", "0")])).unwrap_err();
    assert!(err.to_string().contains("NEW_KEY"), "{err}");
    assert!(apply_policy("", &map(&[("TESTING", "0")])).is_err());
}

#[test]
fn rerun_is_a_no_op() {
    let conf = generated_conf();
    let policy = brickup_policy();
    let once = apply_policy(&conf, &policy).unwrap();
    assert_ne!(once, conf);
    assert_eq!(apply_policy(&once, &policy).unwrap(), once);
    assert_eq!(apply_policy(&conf, &BTreeMap::new()).unwrap(), conf);
}

#[test]
fn line_endings_and_final_newline_are_kept() {
    let policy = brickup_policy();
    let lf = generated_conf();
    let crlf = lf.replace('\n', "\r\n");
    let new = apply_policy(&crlf, &policy).unwrap();
    assert_eq!(
        new,
        apply_policy(&lf, &policy).unwrap().replace('\n', "\r\n")
    );
    assert_eq!(read_keys(&new)["TESTING"], "0");

    let table: &[(&str, &str)] = &[
        ("TESTING = \"1\"", "TESTING = \"0\""),
        ("TESTING = \"1\"\n", "TESTING = \"0\"\n"),
        ("TESTING = \"1\"\r\n", "TESTING = \"0\"\r\n"),
        (
            "A = \"x\"\r\nTESTING = \"1\"",
            "A = \"x\"\r\nTESTING = \"0\"",
        ),
        (
            "# c\n\n\nTESTING=\"1\"\t\n\n",
            "# c\n\n\nTESTING=\"0\"\t\n\n",
        ),
        (
            "TESTING  =  \"1\" \r\nB = \"\"\n",
            "TESTING  =  \"0\" \r\nB = \"\"\n",
        ),
    ];
    for (input, want) in table {
        let got = apply_policy(input, &map(&[("TESTING", "0")])).unwrap();
        assert_eq!(&got, want, "input {input:?}");
    }
}

#[test]
fn duplicate_settings_all_change_and_last_one_reads() {
    let conf = "TESTING = \"1\"\n# x\nTESTING = \"2\"\n";
    assert_eq!(read_keys(conf)["TESTING"], "2");
    let new = apply_policy(conf, &map(&[("TESTING", "0")])).unwrap();
    assert_eq!(new, "TESTING = \"0\"\n# x\nTESTING = \"0\"\n");
}

#[test]
fn bad_values_keys_and_lines_are_errors() {
    let conf = "TESTING = \"1\"\nTCP_IN = \"22\"\n";
    for value in ["a\"b", "1\n2", "1\r"] {
        let err = apply_policy(conf, &map(&[("TCP_IN", value)])).unwrap_err();
        assert!(
            matches!(&err, CsfConfError::BadValue { key, .. } if key == "TCP_IN"),
            "{err:?}"
        );
    }
    for key in ["tcp_in", "", "TCP IN", "# TCP_IN"] {
        let err = apply_policy(conf, &map(&[(key, "1")])).unwrap_err();
        assert!(
            matches!(err, CsfConfError::BadKey { .. }),
            "{key:?}: {err:?}"
        );
    }
    let broken = "A = \"1\"\nTESTING = 1\n";
    let err = apply_policy(broken, &map(&[("TESTING", "0")])).unwrap_err();
    assert_eq!(
        err,
        CsfConfError::Malformed {
            key: "TESTING".into(),
            line: 2,
            text: "TESTING = 1".into()
        }
    );
    // A malformed line of a key we do not own is left alone.
    assert_eq!(
        apply_policy(broken, &map(&[("A", "2")])).unwrap(),
        "A = \"2\"\nTESTING = 1\n"
    );
}

#[test]
fn drift_lists_differences_only() {
    let conf = generated_conf();
    let mut policy = brickup_policy();
    policy.insert("TESTING_INTERVAL".into(), "5".into());
    let d = drift(&conf, &policy);
    assert_eq!(
        d.len(),
        policy.len() - 1,
        "TESTING_INTERVAL already matches"
    );
    assert!(d.contains(&("TESTING".into(), Some("1".into()), "0".into())));
    assert!(d.contains(&("IPV6".into(), Some("0".into()), "1".into())));
    let new = apply_policy(&conf, &policy).unwrap();
    assert_eq!(drift(&new, &policy), vec![]);
    assert_eq!(
        drift("# GONE = \"1\"\n", &map(&[("GONE", "1")])),
        vec![("GONE".into(), None, "1".into())]
    );
}

#[test]
fn port_lists() {
    let table: &[(&[u16], &str)] = &[
        (&[], ""),
        (&[22], "22"),
        (&[2222, 9999, 443], "2222,9999,443"),
        (&[22, 80, 22, 443, 80], "22,80,443"),
        (&[65535, 0, 1], "65535,0,1"),
    ];
    for (ports, want) in table {
        assert_eq!(port_list(ports), *want, "{ports:?}");
    }
}

#[test]
fn fixture_generic_conf_carries_every_owned_key() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/csf/csf.generic.conf"
    );
    let conf = std::fs::read_to_string(path).expect(path);
    let keys = read_keys(&conf);
    for (k, v) in OWNED_DEFAULTS {
        assert_eq!(keys.get(*k).map(String::as_str), Some(*v), "{k} in {path}");
    }
    let policy = brickup_policy();
    let new = apply_policy(&conf, &policy).unwrap();
    assert_eq!(changed_lines(&conf, &new).len(), policy.len());
}
