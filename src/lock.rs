//! One brickup at a time: an exclusive flock(2) on `/run/brickup.lock` under the root, held for
//! the whole run. A second run waits a bounded time, saying who holds it, then gives up.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use nix::fcntl::{Flock, FlockArg};

use crate::root::Root;

pub(crate) const LOCK_PATH: &str = "/run/brickup.lock";

/// Another run held the lock for the whole wait (exit 4: nothing was done).
#[derive(Debug, thiserror::Error)]
#[error("another brickup run (pid {holder}) holds {path}; try again when it has finished (or wait longer with --lock-wait)")]
pub(crate) struct Busy {
    holder: String,
    path: String,
}

/// Held until dropped.
pub(crate) struct RunLock {
    _lock: Flock<File>,
}

/// Take the lock, waiting up to `wait`.
pub(crate) fn acquire(root: &Root, wait: Duration) -> Result<RunLock> {
    let path = root.path(LOCK_PATH);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let open = || {
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
    };
    let mut lock = take(&path, wait, open, FlockArg::LockExclusiveNonblock)?;
    lock.set_len(0)?;
    lock.rewind()?;
    write!(lock, "{}", std::process::id())?;
    Ok(RunLock { _lock: lock })
}

/// For a command that only reads a root (`plan`, `check` under `--root`): wait up to `wait`,
/// as [`acquire`] does, for a run holding that root's lock - a shared lock on the lock file,
/// when there is one. Nothing is created or written.
pub(crate) fn wait_read_only(root: &Root, wait: Duration) -> Result<Option<RunLock>> {
    let path = root.path(LOCK_PATH);
    if !path.exists() {
        return Ok(None);
    }
    let lock = take(
        &path,
        wait,
        || File::open(&path),
        FlockArg::LockSharedNonblock,
    )?;
    Ok(Some(RunLock { _lock: lock }))
}

fn take(
    path: &std::path::Path,
    wait: Duration,
    open: impl Fn() -> std::io::Result<File>,
    how: FlockArg,
) -> Result<Flock<File>> {
    let start = Instant::now();
    let mut told = false;
    loop {
        let file = open().with_context(|| format!("opening {}", path.display()))?;
        match Flock::lock(file, how) {
            Ok(lock) => return Ok(lock),
            Err((mut file, _)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                let holder = holder.trim();
                if start.elapsed() >= wait {
                    return Err(Busy {
                        holder: holder.to_string(),
                        path: path.display().to_string(),
                    }
                    .into());
                }
                if !told {
                    tracing::warn!(
                        "another brickup run (pid {holder}) holds {}; waiting up to {}s",
                        path.display(),
                        wait.as_secs()
                    );
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader under a root waits for a run's lock and gives up as a run would; with no lock
    /// file it creates none; a reader does not keep another reader out.
    #[test]
    fn a_reader_waits_for_a_run_and_writes_nothing() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        assert!(wait_read_only(&root, Duration::ZERO).unwrap().is_none());
        assert!(
            !d.path().join("run").exists(),
            "a reader created the lock's directory"
        );
        let held = acquire(&root, Duration::ZERO).unwrap();
        let err = wait_read_only(&root, Duration::from_millis(300))
            .err()
            .unwrap();
        assert!(err.is::<Busy>(), "{err:#}");
        assert!(err
            .to_string()
            .contains(&format!("pid {}", std::process::id())));
        drop(held);
        let one = wait_read_only(&root, Duration::ZERO).unwrap();
        assert!(one.is_some());
        assert!(wait_read_only(&root, Duration::ZERO).unwrap().is_some());
        assert!(
            acquire(&root, Duration::ZERO).is_err(),
            "a run waits for the reader"
        );
    }

    #[test]
    fn second_run_is_refused_with_holder() {
        let d = tempfile::tempdir().unwrap();
        let root = Root::new(d.path());
        let held = acquire(&root, Duration::ZERO).unwrap();
        let err = acquire(&root, Duration::from_millis(300))
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(held);
        acquire(&root, Duration::ZERO).unwrap();
    }
}
