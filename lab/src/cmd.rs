//! Runs `ip`, `bridge`, `sysctl` and helper processes, optionally inside a
//! network namespace, and owns spawned children so they die with their guard.
//! It does not decide what to run: the topology and the lab do.

use std::fmt;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

/// Set by the lab's signal watcher; long waits give up when it is set.
static CANCELLED: AtomicBool = AtomicBool::new(false);

/// Makes every pending and future wait return `LabError::Interrupted`.
pub fn cancel() {
    CANCELLED.store(true, Ordering::SeqCst);
}

/// Has `cancel` been called?
pub fn cancelled() -> bool {
    CANCELLED.load(Ordering::SeqCst)
}

/// `Err(Interrupted)` once `cancel` has been called.
pub fn check_cancelled() -> Result<(), LabError> {
    if cancelled() {
        Err(LabError::Interrupted)
    } else {
        Ok(())
    }
}

/// Errors of the lab and of the test harness built on it.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command could not be started at all (missing binary, not root…).
    #[error("cannot run `{cmd}`: {source}")]
    Spawn {
        cmd: String,
        #[source]
        source: std::io::Error,
    },
    /// A command ran and failed.
    #[error("`{cmd}` failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    /// A file or socket operation failed.
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// Something did not happen in time.
    #[error("timed out: {0}")]
    Timeout(String),
    /// A result did not match what the lab expects (checksums, loss…).
    #[error("check failed: {0}")]
    Check(String),
    /// The operator pressed Ctrl-C (or sent SIGTERM).
    #[error("interrupted")]
    Interrupted,
    /// The lab needs root (network namespaces).
    #[error("the lab needs root to create network namespaces (run it with sudo)")]
    NotRoot,
}

impl LabError {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        LabError::Io {
            what: what.into(),
            source,
        }
    }
}

/// A command line, printable for error messages and for `--keep` hints.
#[derive(Clone)]
pub struct Cmd {
    netns: Option<String>,
    program: String,
    args: Vec<String>,
    envs: Vec<(String, String)>,
}

impl Cmd {
    /// `program args…` in the current namespace.
    pub fn new(program: impl Into<String>) -> Self {
        Cmd {
            netns: None,
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
        }
    }

    /// `ip netns exec <netns> program args…`.
    pub fn in_netns(netns: &str, program: impl Into<String>) -> Self {
        let mut cmd = Cmd::new(program);
        cmd.netns = Some(netns.to_owned());
        cmd
    }

    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.envs.push((key.to_owned(), value.to_owned()));
        self
    }

    fn command(&self) -> Command {
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns.as_str(), self.program.as_str()]);
                c
            }
            None => Command::new(&self.program),
        };
        c.args(&self.args);
        for (k, v) in &self.envs {
            c.env(k, v);
        }
        c
    }

    /// Runs to completion; a non-zero exit is an error carrying stderr.
    pub fn run(&self) -> Result<String, LabError> {
        let out = self.output()?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(LabError::Failed {
                cmd: self.to_string(),
                status: out.status.to_string(),
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
            })
        }
    }

    /// Runs to completion and returns the raw output whatever the exit status.
    pub fn output(&self) -> Result<Output, LabError> {
        self.command()
            .stdin(Stdio::null())
            .output()
            .map_err(|source| LabError::Spawn {
                cmd: self.to_string(),
                source,
            })
    }

    /// Starts the command in its own process group (so a terminal Ctrl-C
    /// reaches only the lab, which then tears down in order), stdout piped
    /// into a line channel, stdin piped, stderr to `stderr_to` or inherited.
    pub fn spawn(&self, stderr_to: Option<&Path>) -> Result<Proc, LabError> {
        let mut c = self.command();
        c.process_group(0)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        match stderr_to {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .map_err(|e| LabError::io(format!("create {}", path.display()), e))?;
                c.stderr(Stdio::from(file));
            }
            None => {
                c.stderr(Stdio::inherit());
            }
        }
        let mut child = c.spawn().map_err(|source| LabError::Spawn {
            cmd: self.to_string(),
            source,
        })?;
        let stdin = child.stdin.take();
        let lines = child.stdout.take().map(line_channel);
        Ok(Proc {
            name: self.to_string(),
            child: Some(child),
            stdin,
            lines,
        })
    }
}

impl Cmd {
    /// Starts a long-running daemon in its own process group with stdout
    /// and stderr appended to `log` (so it survives the lab with `--keep`).
    pub fn spawn_logged(&self, log: &Path) -> Result<Proc, LabError> {
        let open = || {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_err(|e| LabError::io(format!("open {}", log.display()), e))
        };
        let child = self
            .command()
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::from(open()?))
            .stderr(Stdio::from(open()?))
            .spawn()
            .map_err(|source| LabError::Spawn {
                cmd: self.to_string(),
                source,
            })?;
        Ok(Proc {
            name: self.to_string(),
            child: Some(child),
            stdin: None,
            lines: None,
        })
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ns) = &self.netns {
            write!(f, "ip netns exec {ns} ")?;
        }
        write!(f, "{}", self.program)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

fn line_channel(stdout: ChildStdout) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A spawned process that is killed (SIGKILL) and reaped when dropped.
pub struct Proc {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    lines: Option<Receiver<String>>,
}

impl Proc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Next stdout line, or `None` on timeout or end of output.
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        self.lines.as_ref()?.recv_timeout(timeout).ok()
    }

    /// Waits (up to `timeout` per line) for a stdout line starting with `prefix`.
    pub fn wait_for_line(&mut self, prefix: &str, timeout: Duration) -> Result<String, LabError> {
        let slice = Duration::from_millis(200);
        let mut waited = Duration::ZERO;
        while waited < timeout {
            check_cancelled()?;
            match self.next_line(slice) {
                Some(line) if line.starts_with(prefix) => return Ok(line),
                Some(_) => waited = Duration::ZERO,
                None if !self.is_running() => {
                    // Exited: whatever it printed is already buffered.
                    while let Some(line) = self.next_line(Duration::from_millis(100)) {
                        if line.starts_with(prefix) {
                            return Ok(line);
                        }
                    }
                    break;
                }
                None => waited += slice,
            }
        }
        Err(LabError::Timeout(format!(
            "`{}` printed no line starting with {prefix:?}",
            self.name
        )))
    }

    /// Closes the child's stdin (helpers treat that as "stop").
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Sends a signal by name (`TERM`, `HUP`, `KILL`, `INT`) with kill(1).
    pub fn signal(&self, sig: &str) -> Result<(), LabError> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        Cmd::new("kill")
            .arg(format!("-{sig}"))
            .arg(pid.to_string())
            .run()
            .map(|_| ())
    }

    /// Is the process still running?
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Waits up to `timeout` for the process to exit; returns its exit code
    /// (`None` if killed by a signal). Kills it on timeout.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<i32>, LabError> {
        let steps = timeout.as_millis().div_ceil(20).max(1);
        for _ in 0..steps {
            if let Some(c) = self.child.as_mut() {
                match c.try_wait() {
                    Ok(Some(status)) => {
                        self.child = None;
                        return Ok(status.code());
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(20)),
                    Err(e) => return Err(LabError::io(format!("wait for {}", self.name), e)),
                }
            } else {
                return Ok(None);
            }
        }
        self.kill();
        Err(LabError::Timeout(format!("`{}` did not exit", self.name)))
    }

    /// Forgets the process without killing it (it keeps running).
    pub fn detach(&mut self) {
        self.stdin = None;
        self.child = None;
    }

    /// SIGKILL and reap (idempotent).
    pub fn kill(&mut self) {
        self.stdin = None;
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_shows_netns_prefix() {
        let c = Cmd::in_netns("n1", "ping").args(["-c", "1"]);
        assert_eq!(c.to_string(), "ip netns exec n1 ping -c 1");
    }

    #[test]
    fn failed_command_reports_stderr() {
        let err = Cmd::new("sh").args(["-c", "echo boom >&2; exit 3"]).run();
        match err {
            Err(LabError::Failed { stderr, .. }) => assert_eq!(stderr, "boom"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn proc_lines_and_kill_on_drop() {
        let mut p = match Cmd::new("sh")
            .args(["-c", "echo hello; exec sleep 30"])
            .spawn(None)
        {
            Ok(p) => p,
            Err(e) => panic!("spawn: {e}"),
        };
        assert_eq!(
            p.next_line(Duration::from_secs(5)).as_deref(),
            Some("hello")
        );
        assert!(p.is_running());
        p.kill();
        assert!(!p.is_running());
    }
}
