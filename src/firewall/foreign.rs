//! Packet filters brickup does not manage, found before the first change: iptables rules and
//! policies of the nft backend that are not csf's or ufw's, iptables-legacy tables beside them,
//! and native nftables tables that are not iptables-nft's or firewalld's (iptables-save(8),
//! nft(8) "JSON"). Each is judged only where it can drop the owner's packets: the filter
//! table's INPUT chain and the chains it jumps to, or a native table with an input hook.
//! The login proof through the packet path catches whatever this misses.

use std::collections::BTreeSet;

/// What an iptables-save dump's filter table does to incoming packets, if it can drop them:
/// "INPUT policy DROP", "a DROP rule in INPUT", "a REJECT rule in MYCHAIN (jumped to from
/// INPUT)". None when nothing on INPUT's path drops.
pub(crate) fn iptables_drops(dump: &str) -> Option<String> {
    let mut in_filter = false;
    let mut policy = None;
    let mut rules: Vec<(&str, &str)> = Vec::new(); // (chain, target)
    for line in dump.lines().map(str::trim) {
        if let Some(table) = line.strip_prefix('*') {
            in_filter = table == "filter";
        } else if !in_filter {
            continue;
        } else if let Some(rest) = line.strip_prefix(":INPUT ") {
            policy = rest.split_whitespace().next();
        } else if let Some(rest) = line.strip_prefix("-A ") {
            let chain = rest.split_whitespace().next().unwrap_or("");
            if let Some(target) = jump_target(rest) {
                rules.push((chain, target));
            }
        }
    }
    if let Some(p @ ("DROP" | "REJECT")) = policy {
        return Some(format!("INPUT policy {p}"));
    }
    let mut seen = BTreeSet::from(["INPUT"]);
    let mut todo = vec!["INPUT"];
    while let Some(chain) = todo.pop() {
        for (c, target) in rules.iter().filter(|(c, _)| *c == chain) {
            match *target {
                "DROP" | "REJECT" => {
                    let from = if *c == "INPUT" {
                        String::new()
                    } else {
                        " (jumped to from INPUT)".into()
                    };
                    return Some(format!("a {target} rule in {c}{from}"));
                }
                "ACCEPT" | "RETURN" | "LOG" | "MARK" | "CONNMARK" => {}
                other if seen.insert(other) => todo.push(other),
                _ => {}
            }
        }
    }
    None
}

/// The `-j`/`-g` target of one `-A` rule's text.
fn jump_target(rule: &str) -> Option<&str> {
    let mut words = rule.split_whitespace();
    while let Some(w) = words.next() {
        if w == "-j" || w == "-g" || w == "--jump" || w == "--goto" {
            return words.next();
        }
    }
    None
}

/// Does the dump hold csf's chains (csf loaded its rules) or ufw's?
pub(crate) fn iptables_owner(dump: &str) -> Option<&'static str> {
    let chains = dump.lines().filter_map(|l| l.strip_prefix(':'));
    for c in chains {
        let name = c.split_whitespace().next().unwrap_or("");
        if matches!(name, "LOCALINPUT" | "ALLOWIN" | "DENYIN") {
            return Some("csf");
        }
        if name.starts_with("ufw-") || name.starts_with("ufw6-") {
            return Some("ufw");
        }
    }
    None
}

/// The tables iptables-nft, arptables-nft and ebtables-nft create: those dumps judge them.
fn iptables_nft_table(family: &str, name: &str) -> bool {
    match family {
        "ip" | "ip6" => matches!(name, "filter" | "nat" | "mangle" | "raw" | "security"),
        "arp" => name == "filter",
        "bridge" => matches!(name, "filter" | "nat" | "broute"),
        _ => false,
    }
}

/// Native nftables tables (from `nft -j list ruleset`) that can drop incoming packets: a table
/// with an input-hook chain whose policy is drop, or with a drop or reject rule. Tables of
/// iptables-nft and (when `firewalld` is managed) firewalld's are left out. "inet filter: chain
/// input policy drop".
pub(crate) fn nft_drops(json: &str, firewalld: bool) -> Result<Vec<String>, serde_json::Error> {
    let v: serde_json::Value = serde_json::from_str(json)?;
    let items = v["nftables"].as_array().cloned().unwrap_or_default();
    let key = |o: &serde_json::Value| {
        (
            o["family"].as_str().unwrap_or("").to_string(),
            o["table"].as_str().unwrap_or("").to_string(),
        )
    };
    let mut input_tables = BTreeSet::new();
    let mut found = Vec::new();
    for item in &items {
        let Some(ch) = item.get("chain") else {
            continue;
        };
        if ch["hook"] == "input" || ch["hook"] == "prerouting" {
            input_tables.insert(key(ch));
            if ch["policy"] == "drop" {
                found.push((
                    key(ch),
                    format!("chain {} policy drop", ch["name"].as_str().unwrap_or("?")),
                ));
            }
        }
    }
    for item in &items {
        let Some(rule) = item.get("rule") else {
            continue;
        };
        let text = rule["expr"].to_string();
        if text.contains("{\"drop\":") || text.contains("{\"reject\":") {
            found.push((
                key(rule),
                format!(
                    "a drop/reject rule in chain {}",
                    rule["chain"].as_str().unwrap_or("?")
                ),
            ));
        }
    }
    let mut out: Vec<String> = Vec::new();
    for ((family, table), what) in found {
        let managed = iptables_nft_table(&family, &table) || (firewalld && table == "firewalld");
        let line = format!("nftables table {family} {table}: {what}");
        if !managed
            && input_tables.contains(&(family.clone(), table.clone()))
            && !out.contains(&line)
        {
            out.push(line);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iptables_dumps_judged_on_inputs_path() {
        let cases = [
            ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\nCOMMIT\n", None),
            ("*filter\n:INPUT DROP [0:0]\n-A INPUT -p tcp --dport 22 -j ACCEPT\nCOMMIT\n", Some("INPUT policy DROP")),
            ("*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -p tcp -j REJECT --reject-with tcp-reset\nCOMMIT\n", Some("a REJECT rule in INPUT")),
            (
                "*filter\n:INPUT ACCEPT [0:0]\n:A - [0:0]\n:B - [0:0]\n-A INPUT -j A\n-A A -g B\n-A B -j DROP\nCOMMIT\n",
                Some("a DROP rule in B (jumped to from INPUT)"),
            ),
            // A chain no INPUT path reaches, and other tables, do not count.
            ("*filter\n:INPUT ACCEPT [0:0]\n:X - [0:0]\n-A X -j DROP\n-A FORWARD -j DROP\nCOMMIT\n*raw\n:PREROUTING DROP [0:0]\nCOMMIT\n", None),
            // Loops end.
            ("*filter\n:INPUT ACCEPT [0:0]\n:A - [0:0]\n-A INPUT -j A\n-A A -j A\nCOMMIT\n", None),
            ("", None),
        ];
        for (dump, want) in cases {
            assert_eq!(iptables_drops(dump).as_deref(), want, "{dump}");
        }
    }

    #[test]
    fn csf_and_ufw_chains_are_recognised() {
        assert_eq!(
            iptables_owner("*filter\n:INPUT DROP [0:0]\n:LOCALINPUT - [0:0]\n"),
            Some("csf")
        );
        assert_eq!(
            iptables_owner("*filter\n:ufw-before-input - [0:0]\n"),
            Some("ufw")
        );
        assert_eq!(
            iptables_owner("*filter\n:INPUT DROP [0:0]\n-A INPUT -j LOCALINPUT\n"),
            None
        );
    }

    #[test]
    fn native_nft_tables_judged() {
        let json = r#"{"nftables":[{"metainfo":{"json_schema_version":1}},
          {"table":{"family":"inet","name":"filter","handle":1}},
          {"chain":{"family":"inet","table":"filter","name":"input","handle":1,"type":"filter","hook":"input","prio":0,"policy":"drop"}},
          {"chain":{"family":"inet","table":"quiet","name":"input","handle":1,"type":"filter","hook":"input","prio":0,"policy":"accept"}},
          {"chain":{"family":"inet","table":"out","name":"output","handle":1,"type":"filter","hook":"output","prio":0,"policy":"drop"}},
          {"rule":{"family":"inet","table":"out","chain":"output","handle":2,"expr":[{"drop":null}]}},
          {"chain":{"family":"ip","table":"filter","name":"INPUT","handle":1,"type":"filter","hook":"input","prio":0,"policy":"drop"}},
          {"chain":{"family":"inet","table":"firewalld","name":"filter_INPUT","handle":1,"type":"filter","hook":"input","prio":10,"policy":"accept"}},
          {"rule":{"family":"inet","table":"firewalld","chain":"filter_INPUT","handle":9,"expr":[{"reject":{"type":"icmpx"}}]}},
          {"rule":{"family":"inet","table":"guard","chain":"x","handle":2,"expr":[{"reject":null}]}},
          {"chain":{"family":"inet","table":"guard","name":"in","handle":1,"type":"filter","hook":"input","prio":0,"policy":"accept"}}
        ]}"#;
        let got = nft_drops(json, false).unwrap();
        assert_eq!(
            got,
            [
                "nftables table inet filter: chain input policy drop",
                "nftables table inet firewalld: a drop/reject rule in chain filter_INPUT",
                "nftables table inet guard: a drop/reject rule in chain x",
            ]
        );
        assert_eq!(
            nft_drops(json, true).unwrap().len(),
            2,
            "firewalld's own table when it is managed"
        );
        assert!(nft_drops("{\"nftables\":[]}", false).unwrap().is_empty());
        assert!(nft_drops("not json", false).is_err());
    }
}
