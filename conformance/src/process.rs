//! Process control for the implementation under test: start it with `sh -c <command>` in its own
//! process group with the contract's environment, send its output to a log file, notice when it
//! exits, and stop it with SIGTERM, then SIGKILL after a grace period.
//!
//! Owns the child process. It does not choose the environment's values (see
//! [`crate::contract`]).

use std::collections::HashSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::contract::ImplEnv;

/// The process groups of every implementation started and not yet stopped, so that an
/// interrupted suite can stop them (they are in their own groups and do not get the terminal's
/// Ctrl-C).
static RUNNING: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

fn register(pgid: Pid) {
    RUNNING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get_or_insert_with(HashSet::new)
        .insert(pgid.as_raw());
}

fn unregister(pgid: Pid) {
    if let Some(set) = RUNNING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_mut()
    {
        set.remove(&pgid.as_raw());
    }
}

/// Stops every implementation still running (SIGTERM, then SIGKILL after `grace`): for an
/// interrupted suite.
pub fn stop_all(grace: Duration) {
    let groups: Vec<i32> = RUNNING
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
        .map(|s| s.into_iter().collect())
        .unwrap_or_default();
    if groups.is_empty() {
        return;
    }
    for &g in &groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGTERM);
    }
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline
        && groups
            .iter()
            .any(|&g| killpg(Pid::from_raw(g), None).is_ok())
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    for &g in &groups {
        let _ = killpg(Pid::from_raw(g), Signal::SIGKILL);
    }
}

/// A running (or exited) implementation.
pub struct ImplProcess {
    child: Child,
    pgid: Option<Pid>,
    log_path: PathBuf,
    status: Option<ExitStatus>,
    stopped: bool,
}

/// How the process ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// It had exited before it was asked to stop.
    ExitedEarly(String),
    /// It exited after SIGTERM.
    Terminated(String),
    /// It ignored SIGTERM for the grace period and was killed.
    Killed,
}

impl ImplProcess {
    /// Starts `sh -c <command>` with the contract's variables added to the suite's environment.
    pub fn start(command: &str, env: &ImplEnv, log_path: &Path) -> std::io::Result<Self> {
        if let Some(dir) = log_path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let log = File::create(log_path)?;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(command)
            .envs(env.vars())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(0)
            .kill_on_drop(true);
        let child = cmd.spawn()?;
        let pgid = child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .map(Pid::from_raw);
        if let Some(pgid) = pgid {
            register(pgid);
        }
        Ok(Self {
            child,
            pgid,
            log_path: log_path.to_owned(),
            status: None,
            stopped: false,
        })
    }

    /// The exit status, if the process has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Whether any process of its group is still alive (after the shell itself is reaped).
    pub fn group_alive(&mut self) -> bool {
        if self.exit_status().is_none() {
            return true;
        }
        self.pgid.is_some_and(|g| killpg(g, None).is_ok())
    }

    /// Where its output goes.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The last `lines` lines of its output.
    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log_path, lines)
    }

    /// Stops the whole process group: SIGTERM, then SIGKILL after `grace`.
    pub async fn stop(&mut self, grace: Duration) -> Ending {
        self.stopped = true;
        if let Some(pgid) = self.pgid {
            unregister(pgid);
        }
        if let Some(status) = self.exit_status() {
            self.kill_group(Signal::SIGKILL);
            return Ending::ExitedEarly(status.to_string());
        }
        self.kill_group(Signal::SIGTERM);
        match tokio::time::timeout(grace, self.child.wait()).await {
            Ok(Ok(status)) => {
                self.status = Some(status);
                // children of the shell that outlived it
                self.kill_group(Signal::SIGKILL);
                Ending::Terminated(status.to_string())
            }
            _ => {
                self.kill_group(Signal::SIGKILL);
                if let Ok(status) = self.child.wait().await {
                    self.status = Some(status);
                }
                Ending::Killed
            }
        }
    }

    /// Kills the whole process group with SIGKILL at once (a crash) and reaps it.
    pub async fn kill(&mut self) {
        self.stopped = true;
        if let Some(pgid) = self.pgid {
            unregister(pgid);
        }
        self.kill_group(Signal::SIGKILL);
        if let Ok(status) = self.child.wait().await {
            self.status = Some(status);
        }
    }

    fn kill_group(&self, signal: Signal) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(pgid, signal);
        }
    }
}

impl Drop for ImplProcess {
    fn drop(&mut self) {
        if !self.stopped {
            self.kill_group(Signal::SIGKILL);
            if let Some(pgid) = self.pgid {
                unregister(pgid);
            }
        }
    }
}

/// The last `lines` lines of a file (empty when unreadable).
pub fn log_tail(path: &Path, lines: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
