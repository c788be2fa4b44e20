//! Differential test of brickup's authorized_keys key parsing against the real `ssh-keygen -l`:
//! valid keys of every type ssh-keygen makes without a security key, then mutations of them (the
//! base64 cut at many points, the decoded blob cut short, length bytes flipped, trailing bytes,
//! the wrong curve, a compressed or off-curve point, blanks and odd characters in the line). For
//! every line without odd characters, brickup must accept exactly what ssh-keygen accepts; lines
//! with non-ASCII or control characters brickup refuses by its own rule, whatever ssh-keygen says.

use std::path::Path;
use std::process::Command;

use base64::Engine as _;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

fn keygen(dir: &Path, kind: &str, bits: &str) -> String {
    let path = dir.join(format!("{kind}-{bits}"));
    let out = Command::new("ssh-keygen")
        .args([
            "-q",
            "-t",
            kind,
            "-b",
            bits,
            "-N",
            "",
            "-C",
            "owner@laptop",
            "-f",
        ])
        .arg(&path)
        .output()
        .expect("running ssh-keygen");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(path.with_extension("pub"))
        .unwrap()
        .trim()
        .to_string()
}

/// Does `ssh-keygen -l` read the line as a public key?
fn keygen_accepts(dir: &Path, line: &str) -> bool {
    let file = dir.join("line.pub");
    std::fs::write(&file, format!("{line}\n")).unwrap();
    Command::new("ssh-keygen")
        .arg("-l")
        .arg("-f")
        .arg(&file)
        .output()
        .expect("running ssh-keygen -l")
        .status
        .success()
}

/// Big-endian u32 fields of a blob: (offset of the length, length).
fn fields(raw: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    while at + 4 <= raw.len() {
        let len = u32::from_be_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
        out.push((at, len));
        at += 4 + len;
    }
    out
}

fn mutations(line: &str) -> Vec<String> {
    let mut parts = line.splitn(3, ' ');
    let (kind, b64, comment) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let raw = B64.decode(b64).unwrap();
    let with = |blob: &[u8]| format!("{kind} {} {comment}", B64.encode(blob));
    let mut out = vec![
        line.to_string(),
        format!("{kind}\t{b64}\t{comment}"),
        format!("{kind} {b64}"),
    ];
    for cut in (8..b64.len()).step_by(b64.len() / 12 + 1) {
        out.push(format!("{kind} {}", &b64[..cut]));
        out.push(with(&raw[..cut * 3 / 4]));
    }
    for (at, _) in fields(&raw) {
        for delta in [1u8, 0x80] {
            let mut m = raw.clone();
            m[at + 3] ^= delta;
            out.push(with(&m));
        }
    }
    for extra in [&[0u8][..], &[0, 0, 0, 0], b"junk"] {
        out.push(with(&[&raw[..], extra].concat()));
    }
    if kind.starts_with("ecdsa") {
        // The curve name is the second field; a valid name of another curve goes in its place.
        let (at, len) = fields(&raw)[1];
        for other in ["nistp256", "nistp384", "nistp521"] {
            let mut m = raw.clone();
            if len == other.len() {
                m[at + 4..at + 4 + len].copy_from_slice(other.as_bytes());
            }
            out.push(with(&m));
        }
        let (at, _) = *fields(&raw).last().unwrap();
        for (byte, value) in [
            (at + 4, 2u8),
            (at + 4, 3),
            (raw.len() - 1, raw[raw.len() - 1] ^ 1),
        ] {
            let mut m = raw.clone();
            m[byte] = value;
            out.push(with(&m));
        }
    }
    out
}

/// Lines that differ from a valid one by a blank or an odd character at some place.
fn odd_characters(line: &str) -> Vec<String> {
    let space = line.find(' ').unwrap();
    let mut out = Vec::new();
    for c in ['\u{a0}', '\u{200b}', '\u{1}', '\r', '\u{feff}', '\u{e9}'] {
        out.push(format!("{}{c}{}", &line[..space], &line[space + 1..]));
        out.push(format!("{}{c}{}", &line[..space + 1], &line[space + 1..]));
        out.push(format!("{c}{line}"));
        out.push(format!("{line}{c}"));
        out.push(format!("{}{c}{}", &line[..space + 10], &line[space + 10..]));
    }
    out
}

#[test]
fn key_lines_agree_with_ssh_keygen() {
    let dir = tempfile::tempdir().unwrap();
    let valid: Vec<String> = [
        ("ed25519", "256"),
        ("rsa", "1024"),
        ("rsa", "2048"),
        ("ecdsa", "256"),
        ("ecdsa", "384"),
        ("ecdsa", "521"),
    ]
    .iter()
    .map(|(k, b)| keygen(dir.path(), k, b))
    .collect();
    let (mut compared, mut accepted, mut disagree) = (0, 0, Vec::new());
    for line in valid.iter().flat_map(|l| mutations(l)) {
        let real = keygen_accepts(dir.path(), &line);
        let ours = brickup::check_authorized_key_line(&line);
        compared += 1;
        accepted += usize::from(real);
        if real != ours.is_ok() {
            disagree.push(format!("ssh-keygen {real}, brickup {ours:?}: {line}"));
        }
    }
    let (mut odd, mut odd_real) = (0, 0);
    for line in valid.iter().flat_map(|l| odd_characters(l)) {
        odd += 1;
        odd_real += usize::from(keygen_accepts(dir.path(), &line));
        if brickup::check_authorized_key_line(&line).is_ok() {
            disagree.push(format!("brickup accepted odd characters: {line:?}"));
        }
    }
    eprintln!(
        "keyline: {compared} lines compared with ssh-keygen -l ({accepted} valid to it), \
         {odd} with odd characters all refused ({odd_real} of them ssh-keygen reads), \
         {} disagreements",
        disagree.len()
    );
    assert!(compared > 200 && accepted >= 12 && compared - accepted > 150);
    assert!(disagree.is_empty(), "{}", disagree.join("\n"));
}
