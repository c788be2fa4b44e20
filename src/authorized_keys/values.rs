//! The values of `authorized_keys` options, checked as sshd checks them (OpenSSH auth-options.c
//! `sshauthopt_parse`/`handle_permit`, misc.c `parse_absolute_time`, `a2tun`, `a2port`,
//! `hpdelim2`, `valid_env_name`; addrmatch.c `addr_match_list` for `from=`). One rule is
//! stricter than sshd: a port must be a number (sshd also looks names up in /etc/services).
//! No I/O.

use std::net::IpAddr;

/// Check the dequoted `value` of option `name`; Err says what is wrong, without the value.
pub(crate) fn check(name: &str, value: &str) -> Result<(), String> {
    let ok = match name {
        "expiry-time" => expiry_time(value),
        "tunnel" => value.eq_ignore_ascii_case("any") || strtonum(value, 0x7fff_fffd).is_some(),
        "environment" => environment(value),
        "permitopen" => permit(value, false),
        "permitlisten" => permit(value, true),
        "from" => from_list(value),
        _ => true,
    };
    if ok {
        return Ok(());
    }
    Err(match name {
        "expiry-time" => "is not a time sshd reads (YYYYMMDD[HHMM[SS]], optionally Z or UTC)",
        "tunnel" => "is not a tunnel device number or `any`",
        "environment" => "is not NAME=value with a NAME of letters, digits and `_`",
        "permitopen" | "permitlisten" => "is not host:port with a port of 1-65535 or `*`",
        _ => "holds an entry sshd cannot read (empty, or an address/mask with host bits set)",
    }
    .into())
}

/// strtonum(s, 0, max) as sshd calls it: strtoll's leading blanks and sign, nothing after.
fn strtonum(s: &str, max: i64) -> Option<i64> {
    let t = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let v: i64 = digits.parse().ok()?;
    let v = if neg { -v } else { v };
    (0..=max).contains(&v).then_some(v)
}

/// parse_absolute_time: 8, 12 or 14 digits (date, minutes, seconds), optionally ending `Z` or
/// `UTC`; the fields in range as strptime checks them; not the epoch itself (sshd's "0").
fn expiry_time(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    let digits = lower
        .strip_suffix('z')
        .filter(|_| s.len() > 1)
        .or_else(|| lower.strip_suffix("utc").filter(|_| s.len() > 3))
        .unwrap_or(&lower);
    if ![8, 12, 14].contains(&digits.len()) || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let field = |at: usize| {
        digits
            .get(at..at + 2)
            .map(|f| f.parse::<u32>().unwrap_or(99))
    };
    let in_range = |at, lo, hi| field(at).is_none_or(|v| (lo..=hi).contains(&v));
    let epoch = digits
        .trim_start_matches("19700101")
        .bytes()
        .all(|b| b == b'0');
    in_range(4, 1, 12)
        && in_range(6, 1, 31)
        && in_range(8, 0, 23)
        && in_range(10, 0, 59)
        && in_range(12, 0, 61)
        && !epoch
}

fn environment(s: &str) -> bool {
    s.split_once('=').is_some_and(|(name, _)| {
        !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    })
}

/// handle_permit: `host:port` (or `host/port`, `[v6]:port`); permitlisten also takes a bare port.
fn permit(s: &str, bare_port: bool) -> bool {
    let owned;
    let s = if bare_port && !s.contains(':') {
        owned = format!("*:{s}");
        &owned
    } else {
        s
    };
    let (host, port) = if s.starts_with('[') {
        let Some(close) = s.find(']') else {
            return false;
        };
        match s[close + 1..].chars().next() {
            Some(':' | '/') => (&s[..=close], Some(&s[close + 2..])),
            None => (s, None),
            Some(_) => return false,
        }
    } else {
        match s.find([':', '/']) {
            Some(i) => (&s[..i], Some(&s[i + 1..])),
            None => (s, None),
        }
    };
    host.len() < 1025 && port.is_some_and(|p| p == "*" || strtonum(p, 65535).is_some_and(|v| v > 0))
}

/// addr_match_list's errors: an empty entry, or an address/mask sshd reads as CIDR but whose mask
/// is too long or leaves host bits set. Anything else is a wildcard pattern, which is fine.
fn from_list(s: &str) -> bool {
    s.split(',').all(|entry| {
        let entry = entry.strip_prefix('!').unwrap_or(entry);
        !entry.is_empty() && cidr_ok(entry)
    })
}

fn cidr_ok(entry: &str) -> bool {
    let (addr, mask) = match entry.split_once('/') {
        Some((a, m)) => match strtonum(m, i64::from(i32::MAX)) {
            Some(m) => (a, Some(m as u32)),
            None => return true,
        },
        None => (entry, None),
    };
    let Ok(ip) = addr.parse::<IpAddr>() else {
        return true;
    };
    let (bits, width) = match ip {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
        IpAddr::V6(v6) => (u128::from(v6), 128),
    };
    let mask = mask.unwrap_or(width);
    if mask > width {
        return false;
    }
    let host = u128::MAX.checked_shr(mask).unwrap_or(0);
    bits & host == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_as_sshd_reads_them() {
        for (name, value, ok) in [
            ("expiry-time", "20300101", true),
            ("expiry-time", "203001011200Z", true),
            ("expiry-time", "20300101120000UTC", true),
            ("expiry-time", "20301301", false),
            ("expiry-time", "2030-01-01", false),
            ("expiry-time", "19700101Z", false),
            ("tunnel", "any", true),
            ("tunnel", "+7", true),
            ("tunnel", "-1", false),
            ("tunnel", "2147483646", false),
            ("permitopen", "localhost:8080", true),
            ("permitopen", "[::1]:*", true),
            ("permitopen", "host/22", true),
            ("permitopen", "host:ssh", false),
            ("permitopen", "::1:22", false),
            ("permitlisten", "8080", true),
            ("permitlisten", "0", false),
            ("environment", "PATH=/bin", true),
            ("environment", "=x", false),
            ("from", "10.0.0.0/8,!10.0.0.1,fd00::/8,*.lan", true),
            ("from", "10.0.0.1/8", false),
            ("from", "10.0.0.0/33", false),
            ("from", "a,,b", false),
            ("from", "198.18.4.2,fd00:b1c::2", true),
        ] {
            assert_eq!(check(name, value).is_ok(), ok, "{name}={value}");
        }
    }
}
