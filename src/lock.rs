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
    let start = Instant::now();
    let mut told = false;
    loop {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut lock) => {
                lock.set_len(0)?;
                lock.rewind()?;
                write!(lock, "{}", std::process::id())?;
                return Ok(RunLock { _lock: lock });
            }
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
