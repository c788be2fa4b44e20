//! The admin user step (`ssh.create_user`): creates `ssh.user` when the node has none (home,
//! login shell, its own group, the supplementary groups asked for, no password), keeps it in those
//! groups, and writes its sudo rule, checked by `visudo` before it is installed. It runs first, in
//! the early run too, so the key step has the user's home to put the key in before sshd first
//! starts. An account that exists is never changed beyond its groups.
//!
//! The user has no password (logins are by key only), so a sudo rule that asks for one could never
//! be satisfied: the policy is `NOPASSWD` (whoever holds the SSH key is root) or no rule at all.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};

use crate::config::{CreateUser, SudoPolicy};
use crate::engine::{Action, Applied, Context, Drift, Refused, Step};
use crate::fsops::{NewFile, Transaction};
use crate::runner::Cmd;

const SUDOERS_DIR: &str = "/etc/sudoers.d";
/// A scratch copy of the candidate rule for `visudo -cf` (sudo never reads this directory).
const CHECK_DIR: &str = "/run/brickup";

/// brickup's sudo rule for `user`. A creatable name has no `.`, so sudo's `@includedir` reads it
/// (it skips names with a `.` or ending in `~`).
fn sudoers_path(user: &str) -> PathBuf {
    Path::new(SUDOERS_DIR).join(format!("brickup-{user}"))
}

fn sudoers_rule(user: &str) -> String {
    format!(
        "# Written by brickup (ssh.create_user.sudo: nopasswd). {user} logs in by SSH key only\n\
         # and has no password to give sudo: holding the key is holding root.\n\
         {user} ALL=(ALL:ALL) NOPASSWD: ALL\n"
    )
}

fn useradd_cmd(cx: &Context, user: &str, create: &CreateUser) -> Cmd {
    let mut cmd = Cmd::new("useradd").chroot(cx.root.dir()).args([
        "--create-home",
        "--home-dir",
        &crate::passwd::home(user).display().to_string(),
        "--shell",
        &create.shell.display().to_string(),
        "--user-group",
        "--comment",
        "admin user (created by brickup)",
    ]);
    if !create.groups.is_empty() {
        cmd = cmd.args(["--groups", &create.groups.join(",")]);
    }
    cmd.arg(user)
}

/// The root's `/etc/group`: (group name, gid, members).
fn groups(cx: &Context) -> Result<Vec<(String, u32, Vec<String>)>> {
    let path = cx.root.path("/etc/group");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() >= 4).then(|| {
                let members = f[3].split(',').filter(|m| !m.is_empty());
                (
                    f[0].to_string(),
                    f[2].parse().unwrap_or(u32::MAX),
                    members.map(str::to_string).collect(),
                )
            })
        })
        .collect())
}

/// The asked-for groups `user` (primary group `gid`) is not in.
fn missing_groups(cx: &Context, user: &str, gid: u32, create: &CreateUser) -> Result<Vec<String>> {
    let all = groups(cx)?;
    Ok(create
        .groups
        .iter()
        .filter(|want| {
            !all.iter().any(|(name, g, members)| {
                name == *want && (*g == gid || members.iter().any(|m| m == user))
            })
        })
        .cloned()
        .collect())
}

/// The rule file as it should be: Some(content), or None when there must be none.
fn wanted_rule(user: &str, create: &CreateUser) -> Option<String> {
    (create.sudo == SudoPolicy::Nopasswd).then(|| sudoers_rule(user))
}

fn current_rule(cx: &Context, user: &str) -> Result<Option<String>> {
    let path = cx.root.path(sudoers_path(user));
    match std::fs::read_to_string(&path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

/// `visudo -cf` on the candidate, written to a scratch file under the root.
fn check_rule(cx: &Context, rule: &str) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = cx.root.path(CHECK_DIR);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let host = Path::new(CHECK_DIR).join(format!("sudoers-check-{}", std::process::id()));
    let real = cx.root.path(&host);
    crate::fsops::atomic_write(&real, rule.as_bytes(), 0o440, Some((0, 0)))?;
    let checked = cx
        .runner
        .check(&Cmd::new("visudo").chroot(cx.root.dir()).args([
            "-c",
            "-q",
            "-f",
            &host.display().to_string(),
        ]));
    let _ = std::fs::remove_file(&real);
    checked
        .map(drop)
        .context("visudo refused brickup's sudo rule")
}

fn create<'a>(cx: &Context<'a>) -> &'a CreateUser {
    cx.config
        .ssh
        .create_user
        .as_ref()
        .expect("the user step runs only with ssh.create_user (skip_reason)")
}

/// Creates `ssh.user` and keeps its groups and sudo rule (`ssh.create_user`).
pub struct UserStep;

impl Step for UserStep {
    fn name(&self) -> &'static str {
        "user"
    }

    fn changes_user(&self) -> bool {
        true
    }

    fn skip_reason(&self, cx: &Context) -> Option<String> {
        cx.config
            .ssh
            .create_user
            .is_none()
            .then(|| "no ssh.create_user: ssh.user must exist".to_string())
    }

    /// The tools and groups the user needs are on the node, and sudo reads its drop-ins.
    fn preflight(&self, cx: &Context) -> Result<()> {
        let create = create(cx);
        let user = cx.facts.user()?;
        if user.to_create {
            if !cx.root.path("/usr/sbin/useradd").exists() {
                return Err(Refused::error(
                    "ssh.create_user",
                    "useradd is not installed on this node (Debian: package passwd)",
                ));
            }
            if !cx.root.path(&create.shell).exists() {
                return Err(Refused::error(
                    "ssh.create_user.shell",
                    format!("{} does not exist on this node", create.shell.display()),
                ));
            }
        }
        let all = groups(cx)?;
        for (i, g) in create.groups.iter().enumerate() {
            if !all.iter().any(|(name, _, _)| name == g) {
                return Err(Refused::error(
                    format!("ssh.create_user.groups[{i}]"),
                    format!("this node has no group {g:?}"),
                ));
            }
        }
        if create.sudo == SudoPolicy::Nopasswd {
            for tool in ["/usr/bin/sudo", "/usr/sbin/visudo"] {
                if !cx.root.path(tool).exists() {
                    return Err(Refused::error(
                        "ssh.create_user.sudo",
                        format!(
                            "{tool} is missing: sudo is not installed on this node \
                             (install it, or choose sudo: none)"
                        ),
                    ));
                }
            }
            let sudoers = cx.root.path("/etc/sudoers");
            let text = std::fs::read_to_string(&sudoers)
                .with_context(|| format!("reading {}", sudoers.display()))?;
            let includes = text.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                matches!(w.as_slice(), [kw, dir] if (*kw == "@includedir" || *kw == "#includedir")
                    && dir.trim_end_matches('/') == SUDOERS_DIR)
            });
            if !includes {
                return Err(Refused::error(
                    "ssh.create_user.sudo",
                    format!(
                        "{} does not read {SUDOERS_DIR} (no @includedir line): a rule there \
                         would do nothing",
                        sudoers.display()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn plan(&self, cx: &Context) -> Result<Vec<Action>> {
        let create = create(cx);
        let user = cx.facts.user()?;
        let mut actions = Vec::new();
        if user.to_create {
            actions.push(Action::Command(
                useradd_cmd(cx, &user.name, create).display(),
            ));
        } else {
            let missing = missing_groups(cx, &user.name, user.gid, create)?;
            if !missing.is_empty() {
                actions.push(Action::Command(
                    usermod_cmd(cx, &user.name, &missing).display(),
                ));
            }
        }
        let path = sudoers_path(&user.name);
        let old = current_rule(cx, &user.name)?;
        match wanted_rule(&user.name, create) {
            Some(new) if old.as_deref() != Some(new.as_str()) => actions.push(Action::File {
                path: path.display().to_string(),
                old: old.unwrap_or_default(),
                new,
            }),
            None if old.is_some() => actions.push(Action::Note(format!(
                "remove {} (sudo: none)",
                path.display()
            ))),
            _ => {}
        }
        Ok(actions)
    }

    fn apply(&self, cx: &Context, tx: &mut Transaction) -> Result<Applied> {
        let create = create(cx);
        let name = &cx.config.ssh.user;
        let mut done = Vec::new();
        // Read now, not from the facts: an earlier pass may have made it.
        let created = match crate::passwd::passwd_user(&cx.root, name)? {
            Some(_) => false,
            None => {
                cx.runner.check(&useradd_cmd(cx, name, create))?;
                done.push(format!("created user {name}"));
                true
            }
        };
        let rest = (|| -> Result<()> {
            let Some(user) = crate::passwd::passwd_user(&cx.root, name)? else {
                bail!("useradd succeeded but {name} is not in /etc/passwd");
            };
            let missing = missing_groups(cx, name, user.gid, create)?;
            if !missing.is_empty() {
                cx.runner.check(&usermod_cmd(cx, name, &missing))?;
                if !created {
                    done.push(format!("added {name} to {}", missing.join(", ")));
                }
            }
            let path = sudoers_path(name);
            match wanted_rule(name, create) {
                Some(rule) => {
                    if current_rule(cx, name)?.as_deref() != Some(rule.as_str()) {
                        check_rule(cx, &rule)?;
                        let new = NewFile {
                            mode: 0o440,
                            uid: Some(0),
                            gid: Some(0),
                        };
                        tx.write(&path, rule.as_bytes(), new)?;
                        // The whole policy, with the rule in place; a failure rolls it back.
                        cx.runner
                            .check(&Cmd::new("visudo").chroot(cx.root.dir()).args(["-c", "-q"]))
                            .context("visudo refused the sudo policy with brickup's rule")?;
                        done.push(format!("wrote {}", path.display()));
                    }
                }
                None => {
                    if tx.remove(&path)? {
                        done.push(format!("removed {} (sudo: none)", path.display()));
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = rest {
            if created {
                // The account goes with the step's files: a half-made admin user is not left.
                let del = Cmd::new("userdel")
                    .chroot(cx.root.dir())
                    .args(["--remove", name]);
                if let Err(d) = cx.runner.check(&del) {
                    return Err(e.context(format!("and removing the new user failed: {d:#}")));
                }
            }
            return Err(e);
        }
        Ok(if done.is_empty() {
            Applied::unchanged(format!("user {name} as configured"))
        } else {
            Applied::changed(done.join("; "))
        })
    }

    fn check(&self, cx: &Context) -> Result<Vec<Drift>> {
        let create = create(cx);
        let name = &cx.config.ssh.user;
        let Some(user) = crate::passwd::passwd_user(&cx.root, name)? else {
            return Ok(vec![Drift::new(
                "user",
                format!("user {name} does not exist"),
            )
            .values(format!("user {name}"), None)]);
        };
        let mut drift = Vec::new();
        for g in missing_groups(cx, name, user.gid, create)? {
            drift.push(
                Drift::new("user.groups", format!("{name} is not in group {g}"))
                    .values(g.clone(), None),
            );
        }
        let path = sudoers_path(name);
        let have = current_rule(cx, name)?;
        match wanted_rule(name, create) {
            Some(want) if have.as_deref() != Some(want.as_str()) => drift.push(
                Drift::new(
                    "user.sudo",
                    match have {
                        Some(_) => format!("{} differs from brickup's rule", path.display()),
                        None => format!("{} is missing", path.display()),
                    },
                )
                .values("nopasswd", have.map(|_| "changed".to_string())),
            ),
            None if have.is_some() => drift.push(
                Drift::new(
                    "user.sudo",
                    format!("{} is there while sudo is none", path.display()),
                )
                .values("none", Some("a rule".into())),
            ),
            _ => {}
        }
        Ok(drift)
    }
}

fn usermod_cmd(cx: &Context, user: &str, groups: &[String]) -> Cmd {
    Cmd::new("usermod").chroot(cx.root.dir()).args([
        "--append",
        "--groups",
        &groups.join(","),
        user,
    ])
}
