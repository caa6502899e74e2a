//! A child process that dies with its handle.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{kill_process, Pid, Signal};

/// A running child whose stdout and stderr go to `log`.
pub struct Process {
    name: String,
    child: Option<Child>,
    /// Set once the child has been reaped: its pid is free for reuse from then on,
    /// so it must never be signalled again.
    exited: Option<ExitStatus>,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with output appended to `log`. The child is killed with
    /// SIGKILL if the thread that started it dies, so start processes from the test
    /// thread (or a thread that outlives them), never from a short-lived one.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> Process {
        let out = File::options().create(true).append(true).open(log).expect("open log file");
        let err = out.try_clone().expect("clone log file handle");
        command.stdin(Stdio::null()).stdout(out).stderr(err);
        set_parent_death_signal(&mut command);
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({command:?}): {e}; is it installed? run scripts/install-deps.sh"));
        Process { name: name.to_string(), child: Some(child), exited: None, log: log.to_path_buf() }
    }

    /// A handle of nothing yet, to be replaced by [`Process::spawn`]'s.
    pub fn not_started() -> Process {
        Process { name: String::new(), child: None, exited: None, log: PathBuf::new() }
    }

    /// The pid while it is still this child's: `None` once the child is reaped.
    pub fn pid(&self) -> Option<u32> {
        self.unreaped().map(Child::id)
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.poll_exit().is_none() && self.child.is_some()
    }

    /// kill -9, and reap.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // std does not signal a child it has already reaped.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited within `grace`. Returns the exit
    /// status when the process stopped by itself (also before this call).
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        if let Some(status) = self.poll_exit() {
            self.child = None;
            return Some(status);
        }
        self.send(Signal::TERM);
        let mut child = self.child.take()?;
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Sends signal number `sig` (e.g. SIGSTOP/SIGCONT to freeze a process); returns
    /// false, sending nothing, once the child has been killed or reaped.
    pub fn signal(&self, sig: i32) -> bool {
        let sig = Signal::from_named_raw(sig).unwrap_or_else(|| panic!("{sig} is not a signal number"));
        self.send(sig)
    }

    pub(crate) fn send(&self, sig: Signal) -> bool {
        let Some(child) = self.unreaped() else { return false };
        // The child is not reaped (a zombie at worst), so its pid cannot have been
        // reused: the signal reaches this child or nothing.
        kill_process(Pid::from_child(child), sig).is_ok()
    }

    /// The child, unless it has been killed or reaped.
    fn unreaped(&self) -> Option<&Child> {
        self.child.as_ref().filter(|_| self.exited.is_none())
    }

    /// Reaps the child if it has exited, remembering its status.
    fn poll_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none()
            && let Some(child) = self.child.as_mut()
        {
            self.exited = child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// The last `bytes` of the log.
    pub fn log_tail(&self, bytes: u64) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(bytes)));
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() {
            eprintln!("----- last lines of {} ({}) -----", self.name, self.log.display());
            eprintln!("{}", self.log_tail(3000));
        }
        self.kill();
    }
}

#[allow(unsafe_code)]
fn set_parent_death_signal(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec; it only makes the
    // prctl(2) system call, which allocates nothing and takes no lock.
    unsafe {
        command.pre_exec(|| Ok(rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spawn(dir: &tempfile::TempDir, program: &str, args: &[&str]) -> Process {
        let mut command = Command::new(program);
        command.args(args);
        Process::spawn(program, command, &dir.path().join(format!("{program}.log")))
    }

    #[test]
    fn a_reaped_child_is_never_signalled() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut done = spawn(&dir, "true", &[]);
        crate::wait_until("`true` to exit", Duration::from_secs(10), || !done.is_running());
        assert_eq!(done.pid(), None, "the pid of a reaped child may belong to another process");
        assert!(!done.signal(Signal::STOP.as_raw()), "signalled a reaped child");
        let status = done.terminate(Duration::from_secs(1));
        assert!(status.is_some_and(|s| s.success()), "the status reaped earlier: {status:?}");
    }

    #[test]
    fn a_live_child_is_signalled_and_killed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut sleeper = spawn(&dir, "sleep", &["60"]);
        assert!(sleeper.pid().is_some());
        assert!(sleeper.signal(Signal::STOP.as_raw()));
        assert!(sleeper.is_running(), "a stopped process has not exited");
        assert!(sleeper.signal(Signal::CONT.as_raw()));
        sleeper.kill();
        assert!(!sleeper.is_running());
        assert!(!sleeper.signal(Signal::CONT.as_raw()), "signalled a killed child");
    }
}
