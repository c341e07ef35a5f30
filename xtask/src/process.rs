//! Child processes that never outlive the xtask that started them (unless it detaches on purpose).
//!
//! ```text
//!   Supervisor ──spawn──► child in its own process group (pgid = pid), stdout+stderr → <run>/<name>.log
//!       │                     ▲
//!       ├─► state.json ───────┤ `cargo xtask down` / stale-run cleanup: stop by recorded pid
//!       └─► LIVE registry ────┘ Ctrl-C / SIGTERM / SIGHUP handler: stop every registered group, exit 130
//! ```
//!
//! Stopping is SIGTERM to the whole group, then SIGKILL once the grace period is over.
//! A process group of its own keeps a terminal's Ctrl-C away from the children, so the xtask alone decides
//! the order of shutdown, and stopping a child also stops anything it forked.

use std::fs::{self, File};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use parking_lot::Mutex;
use serde_json::json;

use crate::progress::say;

/// How long a process group gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(10);

/// Process groups started by this xtask and not yet stopped; the signal handler drains it.
static LIVE: Mutex<Vec<i32>> = parking_lot::const_mutex(Vec::new());

/// Files describing running processes (state files, env files); the signal handler removes them after stopping.
static STATE_FILES: Mutex<Vec<PathBuf>> = parking_lot::const_mutex(Vec::new());

/// Cleanups that cannot be expressed as a process group (deleting a kind cluster), run by the signal handler.
type Hook = Box<dyn FnOnce() + Send>;
static HOOKS: Mutex<Vec<Hook>> = parking_lot::const_mutex(Vec::new());

/// Runs `hook` if a signal ends the xtask.
pub fn on_signal(hook: impl FnOnce() + Send + 'static) {
    HOOKS.lock().push(Box::new(hook));
}

/// Set once a signal arrived: the handler then owns the shutdown, and the main thread stays out of its way.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// True once Ctrl-C, SIGTERM or SIGHUP arrived (the process is about to exit).
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// After a signal the handler stops everything and exits the process. The main thread must neither race it
/// nor return from `main` (which would end the process with the handler halfway through), so it waits here.
fn wait_for_signal_handler() -> ! {
    loop {
        sleep(Duration::from_secs(1));
    }
}

/// Installs the Ctrl-C / SIGTERM / SIGHUP handler that stops every registered process group and exits.
pub fn install_signal_handler() -> anyhow::Result<()> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.set(()).is_err() {
        return Ok(());
    }
    ctrlc::set_handler(|| {
        INTERRUPTED.store(true, Ordering::SeqCst);
        say("interrupted: stopping every process this xtask started");
        let groups = std::mem::take(&mut *LIVE.lock());
        for pgid in groups.into_iter().rev() {
            stop_group(pgid);
        }
        for file in std::mem::take(&mut *STATE_FILES.lock()) {
            let _ = fs::remove_file(file);
        }
        for hook in std::mem::take(&mut *HOOKS.lock()) {
            hook();
        }
        std::process::exit(130);
    })
    .context("installing the signal handler")
}

/// Removes `file` if a signal ends the xtask (files that describe a running stack, such as its env file).
pub fn remove_on_signal(file: &Path) {
    STATE_FILES.lock().push(file.to_owned());
}

/// Owns the long-running children of one run and stops them when dropped (unless detached).
pub struct Supervisor {
    state_file: PathBuf,
    procs: Vec<Proc>,
    detached: bool,
}

struct Proc {
    name: String,
    program: PathBuf,
    log: PathBuf,
    child: Child,
}

// === impl Supervisor ===

impl Supervisor {
    /// A supervisor that records its children in `state_file` (JSON).
    pub fn new(state_file: PathBuf) -> Self {
        STATE_FILES.lock().push(state_file.clone());
        Self {
            state_file,
            procs: Vec::new(),
            detached: false,
        }
    }

    /// Starts `cmd` in its own process group with its output appended to `log`, and records it.
    pub fn spawn(&mut self, name: &str, mut cmd: Command, log: &Path) -> anyhow::Result<()> {
        let program = PathBuf::from(cmd.get_program());
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone()?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).process_group(0);
        // Webhooks and the API server talk over loopback; a proxy from the environment must not get in between.
        for var in [
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "http_proxy",
            "https_proxy",
            "ALL_PROXY",
            "all_proxy",
        ] {
            cmd.env_remove(var);
        }
        // Register under the lock, so a signal arriving right after the spawn still finds the new group.
        let mut live = LIVE.lock();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name} ({})", program.display()))?;
        live.push(pid_of(&child));
        drop(live);
        say(format!(
            "started {name} (pid {}), log {}",
            child.id(),
            log.display()
        ));
        self.procs.push(Proc {
            name: name.to_owned(),
            program,
            log: log.to_owned(),
            child,
        });
        self.write_state()
    }

    /// Polls `ready` until it returns true; fails with the component's last log lines if the process exits
    /// or `timeout` passes first.
    pub fn wait_ready(
        &mut self,
        name: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> anyhow::Result<()> {
        let start = Instant::now();
        loop {
            if ready() {
                say(format!(
                    "{name} is ready after {:.1}s",
                    start.elapsed().as_secs_f64()
                ));
                return Ok(());
            }
            if let Some(status) = self.exited(name)? {
                bail!(
                    "{name} exited with {status} before it was ready\n{}",
                    self.log_tail(name, 40)
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "{name} was not ready after {}s\n{}",
                    timeout.as_secs(),
                    self.log_tail(name, 40)
                );
            }
            sleep(Duration::from_millis(200));
        }
    }

    /// Fails if any child has exited, naming it and showing its log.
    pub fn check_running(&mut self) -> anyhow::Result<()> {
        if interrupted() {
            // The signal handler is stopping them on purpose.
            return Ok(());
        }
        let names: Vec<String> = self.procs.iter().map(|p| p.name.clone()).collect();
        for name in names {
            if let Some(status) = self.exited(&name)? {
                bail!(
                    "{name} exited unexpectedly with {status}\n{}",
                    self.log_tail(&name, 40)
                );
            }
        }
        Ok(())
    }

    fn exited(&mut self, name: &str) -> anyhow::Result<Option<ExitStatus>> {
        match self.procs.iter_mut().find(|p| p.name == name) {
            Some(p) => Ok(p.child.try_wait()?),
            None => bail!("no process named {name}"),
        }
    }

    /// The last `n` lines of a component's log, framed for an error message.
    pub fn log_tail(&self, name: &str, n: usize) -> String {
        let Some(p) = self.procs.iter().find(|p| p.name == name) else {
            return String::new();
        };
        let text = fs::read_to_string(&p.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n");
        format!(
            "---- last {n} lines of {} ----\n{tail}\n---- end of {name} log ----",
            p.log.display()
        )
    }

    /// Leaves the children running after this xtask exits; `cargo xtask down` stops them via the state file.
    pub fn detach(mut self) {
        self.detached = true;
        let pids: Vec<i32> = self.procs.iter().map(|p| pid_of(&p.child)).collect();
        LIVE.lock().retain(|pid| !pids.contains(pid));
        STATE_FILES.lock().retain(|f| f != &self.state_file);
    }

    /// Stops every child, last started first, and removes the state file.
    pub fn stop_all(&mut self) {
        while let Some(mut p) = self.procs.pop() {
            let pid = pid_of(&p.child);
            stop_group(pid);
            let _ = p.child.wait();
            LIVE.lock().retain(|&g| g != pid);
            say(format!("stopped {} (pid {pid})", p.name));
        }
        let _ = fs::remove_file(&self.state_file);
        STATE_FILES.lock().retain(|f| f != &self.state_file);
    }

    fn write_state(&self) -> anyhow::Result<()> {
        let procs: Vec<_> = self
            .procs
            .iter()
            .map(|p| json!({"name": p.name, "pid": pid_of(&p.child), "program": p.program}))
            .collect();
        let state = json!({"owner": std::process::id(), "processes": procs});
        let tmp = self.state_file.with_extension("json.tmp");
        fs::write(&tmp, serde_json::to_vec_pretty(&state)?)?;
        fs::rename(&tmp, &self.state_file)?;
        Ok(())
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        if interrupted() {
            wait_for_signal_handler();
        }
        if !self.detached {
            self.stop_all();
        }
    }
}

fn pid_of(child: &Child) -> i32 {
    i32::try_from(child.id()).expect("pids fit in i32")
}

/// Stops the processes recorded in a state file that are still ours, then removes the file.
/// Returns how many were still running.
pub fn stop_recorded(state_file: &Path) -> anyhow::Result<usize> {
    let Some(state) = read_state(state_file)? else {
        return Ok(0);
    };
    let mut stopped = 0;
    let mut orphans = Vec::new();
    let procs = state["processes"].as_array().cloned().unwrap_or_default();
    for p in procs.iter().rev() {
        let (Some(pid), Some(program), name) = (
            p["pid"].as_i64(),
            p["program"].as_str(),
            p["name"].as_str().unwrap_or("?"),
        ) else {
            continue;
        };
        let pid = i32::try_from(pid)?;
        if is_recorded_process(pid, program) {
            stop_group(pid);
            say(format!("stopped {name} (pid {pid})"));
            stopped += 1;
            orphans.push(pid);
        }
    }
    // These processes were orphans, so init (not us) reaps them; wait for that, so nothing lingers in `ps`.
    let deadline = Instant::now() + Duration::from_secs(10);
    while orphans
        .iter()
        .any(|pid| Path::new(&format!("/proc/{pid}")).exists())
        && Instant::now() < deadline
    {
        sleep(Duration::from_millis(50));
    }
    fs::remove_file(state_file).with_context(|| format!("removing {}", state_file.display()))?;
    Ok(stopped)
}

/// The pids recorded in a state file that still run the recorded program.
pub fn recorded_running(state_file: &Path) -> anyhow::Result<Vec<i32>> {
    let Some(state) = read_state(state_file)? else {
        return Ok(Vec::new());
    };
    let procs = state["processes"].as_array().cloned().unwrap_or_default();
    Ok(procs
        .iter()
        .filter_map(|p| {
            Some((
                i32::try_from(p["pid"].as_i64()?).ok()?,
                p["program"].as_str()?.to_owned(),
            ))
        })
        .filter(|(pid, program)| is_recorded_process(*pid, program))
        .map(|(pid, _)| pid)
        .collect())
}

/// Whether the xtask that wrote a state file is still running (its run is then not stale).
pub fn owner_running(state_file: &Path) -> anyhow::Result<bool> {
    let Some(state) = read_state(state_file)? else {
        return Ok(false);
    };
    let Some(owner) = state["owner"].as_i64().and_then(|p| i32::try_from(p).ok()) else {
        return Ok(false);
    };
    let cmdline = fs::read(format!("/proc/{owner}/cmdline")).unwrap_or_default();
    Ok(stat_of(owner).is_some_and(|s| s.running) && String::from_utf8_lossy(&cmdline).contains("xtask"))
}

fn read_state(state_file: &Path) -> anyhow::Result<Option<serde_json::Value>> {
    match fs::read(state_file) {
        Ok(bytes) => Ok(Some(
            serde_json::from_slice(&bytes).with_context(|| format!("parsing {}", state_file.display()))?,
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e).with_context(|| format!("reading {}", state_file.display())),
    }
}

/// True if `pid` is alive, leads its own process group and runs `program`, so a recycled pid is never hit.
fn is_recorded_process(pid: i32, program: &str) -> bool {
    let Some(stat) = stat_of(pid) else { return false };
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or_default();
    stat.running && stat.pgrp == pid && argv0 == program.as_bytes()
}

struct Stat {
    pgrp: i32,
    running: bool,
}

/// Reads `/proc/<pid>/stat`; a zombie or dead process counts as not running.
fn stat_of(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself contain spaces or parentheses.
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    let _ppid = fields.next()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Stat {
        pgrp,
        running: !matches!(state, "Z" | "X" | "x"),
    })
}

/// True while any non-zombie process is in process group `pgid`.
fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = fs::read_dir("/proc") else {
        return false;
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(stat_of)
        .any(|s| s.running && s.pgrp == pgid)
}

/// SIGTERM to the group, SIGKILL after the grace period, then waits until the group is gone.
fn stop_group(pgid: i32) {
    let group = Pid::from_raw(pgid);
    if killpg(group, Signal::SIGTERM).is_err() {
        return;
    }
    let deadline = Instant::now() + GRACE;
    while Instant::now() < deadline {
        if !group_alive(pgid) {
            return;
        }
        sleep(Duration::from_millis(100));
    }
    say(format!(
        "process group {pgid} ignored SIGTERM for {}s: sending SIGKILL",
        GRACE.as_secs()
    ));
    let _ = killpg(group, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(5);
    while group_alive(pgid) && Instant::now() < deadline {
        sleep(Duration::from_millis(50));
    }
}

/// Runs a short command to completion, failing with its output if it fails.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed with {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Runs a command with inherited output in its own process group, registered like a supervised child, and
/// stops the whole group if it runs longer than `timeout` (a hung test must not eat CI's time budget).
pub fn run_with_deadline(cmd: &mut Command, timeout: Duration) -> anyhow::Result<()> {
    let mut live = LIVE.lock();
    let mut child = cmd
        .process_group(0)
        .spawn()
        .with_context(|| format!("running {cmd:?}"))?;
    let pid = pid_of(&child);
    live.push(pid);
    drop(live);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break Some(status);
        }
        if start.elapsed() > timeout {
            say(format!(
                "{cmd:?} still running after {}s: stopping it",
                timeout.as_secs()
            ));
            stop_group(pid);
            let _ = child.wait();
            break None;
        }
        sleep(Duration::from_millis(200));
    };
    if interrupted() {
        wait_for_signal_handler();
    }
    LIVE.lock().retain(|&g| g != pid);
    match status {
        Some(status) if status.success() => Ok(()),
        Some(status) => bail!("{cmd:?} failed with {status}"),
        None => bail!("{cmd:?} timed out after {}s", timeout.as_secs()),
    }
}

/// Runs a command with inherited output (for cargo and go), failing if it fails.
pub fn run_inherit(cmd: &mut Command) -> anyhow::Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
