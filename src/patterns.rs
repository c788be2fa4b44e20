//! sshd's own pattern matching, for the restrictions by the client's address that brickup checks
//! against `ssh.owner_addresses`: `*`/`?` globs and pattern lists with `!` negation
//! (ssh_config(5) PATTERNS), address lists with CIDR entries, and `user@host` entries as
//! AllowUsers/DenyUsers (sshd_config(5)) and `from=` (sshd(8) AUTHORIZED_KEYS FILE FORMAT) use
//! them. Written from OpenSSH 9.2's match.c and addrmatch.c: the same results, -1 for an error
//! where sshd reports one. The host name is the address itself, as sshd has it with its default
//! `UseDNS no`.

use std::net::IpAddr;

/// `*` any run, `?` one character (match.c `match_pattern`).
pub(crate) fn glob(pattern: &str, text: &str) -> bool {
    fn go(p: &[char], t: &[char]) -> bool {
        match p.split_first() {
            None => t.is_empty(),
            Some(('*', rest)) => (0..=t.len()).any(|i| go(rest, &t[i..])),
            Some(('?', rest)) => !t.is_empty() && go(rest, &t[1..]),
            Some((c, rest)) => t.first() == Some(c) && go(rest, &t[1..]),
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    go(&p, &t)
}

/// A comma-separated pattern list (match.c `match_pattern_list`): -1 when a negated pattern
/// matches, 1 when a positive one does, else 0.
fn pattern_list(text: &str, list: &str, lower: bool) -> i32 {
    let text = if lower {
        text.to_ascii_lowercase()
    } else {
        text.to_string()
    };
    let mut positive = 0;
    for p in list.split(',') {
        let (neg, p) = match p.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, p),
        };
        let p = if lower {
            p.to_ascii_lowercase()
        } else {
            p.to_string()
        };
        if glob(&p, &text) {
            if neg {
                return -1;
            }
            positive = 1;
        }
    }
    positive
}

/// An address or CIDR entry: Ok(None) when the entry is no address at all (a host pattern).
fn cidr(entry: &str) -> Result<Option<(IpAddr, u8)>, ()> {
    let (addr, len) = match entry.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (entry, None),
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        return Ok(None);
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) if l.is_empty() || !l.bytes().all(|b| b.is_ascii_digit()) => return Ok(None),
        Some(l) => match l.parse::<u8>() {
            Ok(n) if n <= max => n,
            Ok(n) if n <= 128 => return Err(()),
            _ => return Ok(None),
        },
    };
    // addrmatch.c `masklen_valid` and the host bits: "10.0.0.1/8" is an inconsistent mask.
    if bits(addr) & !mask(addr, len) != 0 {
        return Err(());
    }
    Ok(Some((addr, len)))
}

fn bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v) => u32::from(v) as u128,
        IpAddr::V6(v) => u128::from(v),
    }
}

fn mask(a: IpAddr, len: u8) -> u128 {
    let width = if a.is_ipv4() { 32 } else { 128 };
    if len == 0 {
        return 0;
    }
    let ones = u128::MAX >> (128 - width);
    ones & !ones.checked_shr(u32::from(len)).unwrap_or(0)
}

/// An address list (addrmatch.c `addr_match_list`): -2 on a malformed entry, -1 when a negated
/// entry matches, 1 when a positive one does, else 0. Entries that are no address are skipped.
fn addr_list(addr: IpAddr, list: &str) -> i32 {
    let mut ret = 0;
    for e in list.split(',') {
        let (neg, e) = match e.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, e),
        };
        let Ok(entry) = cidr(e) else {
            return -2;
        };
        let Some((net, len)) = entry else {
            continue;
        };
        if net.is_ipv4() != addr.is_ipv4() {
            continue;
        }
        if bits(addr) & mask(addr, len) == bits(net) {
            if neg {
                return -1;
            }
            ret = 1;
        }
    }
    ret
}

/// match.c `match_host_and_ip` with the host name being the address: 1 match, 0 no match, -1 a
/// malformed list.
pub(crate) fn host_and_ip(addr: IpAddr, list: &str) -> i32 {
    let ip = addr_list(addr, list);
    if ip == -2 {
        return -1;
    }
    if ip == -1 {
        return 0;
    }
    let host = pattern_list(&addr.to_string(), list, true);
    if host == -1 {
        return 0;
    }
    i32::from(host == 1 || ip == 1)
}

/// match.c `match_user`: an AllowUsers/DenyUsers entry against `user` connecting from `addr`.
pub(crate) fn user(user: &str, addr: IpAddr, entry: &str) -> i32 {
    match entry.split_once('@') {
        None => i32::from(glob(entry, user)),
        Some((u, host)) => match glob(u, user) {
            true => host_and_ip(addr, host),
            false => 0,
        },
    }
}

/// Whether AllowUsers/DenyUsers (each list's entries, whitespace-separated) admit `name` from
/// `addr` (auth.c `allowed_user`): Err names an entry sshd would refuse to run with.
pub(crate) fn admits(
    name: &str,
    addr: IpAddr,
    allow: &[String],
    deny: &[String],
) -> Result<bool, String> {
    let entries = |l: &[String]| -> Vec<String> {
        l.iter()
            .flat_map(|v| v.split_whitespace().map(str::to_string))
            .collect()
    };
    for e in entries(deny) {
        match user(name, addr, &e) {
            -1 => return Err(format!("invalid DenyUsers entry {e:?}")),
            0 => {}
            _ => return Ok(false),
        }
    }
    let allow = entries(allow);
    if allow.is_empty() {
        return Ok(true);
    }
    for e in &allow {
        match user(name, addr, e) {
            -1 => return Err(format!("invalid AllowUsers entry {e:?}")),
            1 => return Ok(true),
            _ => {}
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn address_lists_as_sshd_reads_them() {
        let a = ip("198.51.100.7");
        for (list, want) in [
            ("198.51.100.7", 1),
            ("198.51.100.0/24", 1),
            ("198.51.100.0/25,!198.51.100.7", 0),
            ("!198.51.100.7,198.51.100.0/24", 0),
            ("203.0.113.0/24", 0),
            ("198.51.100.*", 1),
            ("198.51.*,!198.51.100.?", 0),
            ("*", 1),
            ("10.0.0.1/8", -1),
            ("198.51.100.0/33", -1),
            ("2001:db8::/32", 0),
            ("example.com,198.51.100.7/32", 1),
        ] {
            assert_eq!(host_and_ip(a, list), want, "{list}");
        }
        let v6 = ip("2001:db8::7");
        assert_eq!(host_and_ip(v6, "2001:db8::/32"), 1);
        assert_eq!(host_and_ip(v6, "2001:db8::/32,!2001:db8::7"), 0);
        assert_eq!(host_and_ip(v6, "198.51.100.0/24"), 0);
        assert_eq!(host_and_ip(ip("10.1.2.3"), "0.0.0.0/0"), 1);
    }

    #[test]
    fn allow_and_deny_users() {
        let a = ip("198.51.100.7");
        let l = |s: &str| vec![s.to_string()];
        assert_eq!(admits("root", a, &[], &[]), Ok(true));
        assert_eq!(admits("root", a, &l("root@198.51.100.0/24"), &[]), Ok(true));
        assert_eq!(admits("root", a, &l("root@203.0.113.0/24"), &[]), Ok(false));
        assert_eq!(admits("root", a, &l("admin root"), &[]), Ok(true));
        assert_eq!(admits("root", a, &l("r?ot@*"), &[]), Ok(true));
        assert_eq!(admits("root", a, &[], &l("root@203.0.113.0/24")), Ok(true));
        assert_eq!(admits("root", a, &[], &l("*@198.51.100.7")), Ok(false));
        assert_eq!(admits("root", a, &l("root"), &l("bob root")), Ok(false));
        assert!(admits("root", a, &[], &l("root@10.0.0.1/8")).is_err());
        // A negated address excludes even when a later wildcard matches.
        assert_eq!(
            admits("root", a, &l("root@!198.51.100.7,*"), &[]),
            Ok(false)
        );
    }
}
