//! Runs a SPARQL evaluation in a child process forked for it, so that a
//! request can really be stopped: the evaluator checks for cancellation
//! only where it reads the store, and a cross product or a sort can
//! compute (and allocate) for hours without reading anything. The child
//! sees the index through copy-on-write pages, may add [`MEMORY`] of
//! address space, writes its answer to a pipe and exits; at the deadline,
//! or as soon as nobody waits for it, it is killed, and its CPU and memory
//! are back at once.
//!
//! The child parses the request's text too (on a deep stack), so that no
//! text, however nested, can crash the server itself. It closes every file
//! it inherited but its pipe, never touches the runtime or the log, and
//! leaves with `_exit`. A fork copies the state of every lock: the parent
//! reads and writes the index stores only through [`store_access`], which
//! no fork overlaps, so a child never finds a store's lock held forever.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::RwLock;

use axum::http::StatusCode;

use crate::ldp::error::LdpError;

/// The address space a child may add to what it inherits.
pub const MEMORY: u64 = 1 << 30;

/// Held (shared) while the parent touches an index store, and exclusively
/// while it forks.
static FORK_GATE: RwLock<()> = RwLock::new(());

/// Runs `f`, which reads or writes index stores, where no fork can
/// happen at the same time.
pub fn store_access<T>(f: impl FnOnce() -> T) -> T {
    let _shared = FORK_GATE.read().unwrap_or_else(|e| e.into_inner());
    f()
}

/// Why no answer came.
pub enum Failure {
    TimedOut,
    OutOfMemory,
    /// The evaluation's own refusal.
    Refused(LdpError),
    Crashed(String),
}

/// A running child. Dropped before its answer was read (the request went
/// away), it is killed and reaped.
pub struct Child {
    pid: libc::pid_t,
    read: Option<tokio::task::JoinHandle<Vec<u8>>>,
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.read.is_some() {
            kill(self.pid);
            let pid = self.pid;
            std::thread::spawn(move || reap(pid));
        }
    }
}

fn kill(pid: libc::pid_t) {
    // SAFETY: `pid` is our child, not yet reaped.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn reap(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    status
}

/// Forks a child that runs `work` and writes what it returns. `cpu` is
/// the CPU time it may use before the kernel stops it (a backstop for the
/// deadline).
pub fn start(
    cpu: std::time::Duration,
    work: impl FnOnce() -> Result<Vec<u8>, LdpError> + Send,
) -> Result<Child, Failure> {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Failure::Crashed(format!(
            "cannot make a pipe: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both descriptors were just made and are owned here only.
    let (reader, writer) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let pid = {
        let _exclusive = FORK_GATE.write().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the child runs only `child`, which ends in `_exit`.
        unsafe { libc::fork() }
    };
    if pid < 0 {
        return Err(Failure::Crashed(format!(
            "cannot fork: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        drop(reader);
        child(writer, cpu, work);
    }
    drop(writer);
    let read = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::from(reader);
        let mut buf = Vec::new();
        let _ = file.read_to_end(&mut buf);
        buf
    });
    Ok(Child {
        pid,
        read: Some(read),
    })
}

/// Waits for the child's answer, killing it at `deadline`.
pub async fn wait(mut child: Child, deadline: tokio::time::Instant) -> Result<Vec<u8>, Failure> {
    // `child.read` stays set until the answer is in, so that dropping this
    // future (the client went away) drops `child` with it and kills it.
    let read = child.read.as_mut().expect("a child is waited for once");
    let (message, killed) = tokio::select! {
        buf = &mut *read => (buf.unwrap_or_default(), false),
        _ = tokio::time::sleep_until(deadline) => {
            kill(child.pid);
            (read.await.unwrap_or_default(), true)
        }
    };
    child.read = None;
    let pid = child.pid;
    let status = tokio::task::spawn_blocking(move || reap(pid))
        .await
        .unwrap_or_default();
    if killed {
        return Err(Failure::TimedOut);
    }
    match decode(&message) {
        Some(result) => result.map_err(Failure::Refused),
        // Rust aborts when an allocation fails; the kernel's OOM killer
        // and the CPU limit kill.
        None if libc::WIFSIGNALED(status)
            && matches!(libc::WTERMSIG(status), libc::SIGABRT | libc::SIGKILL) =>
        {
            Err(Failure::OutOfMemory)
        }
        None if libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGXCPU => {
            Err(Failure::TimedOut)
        }
        None => Err(Failure::Crashed(format!(
            "the evaluation ended without an answer (wait status {status})"
        ))),
    }
}

/// The child: drop inherited files, set limits, work, answer, exit.
fn child(
    writer: OwnedFd,
    cpu: std::time::Duration,
    work: impl FnOnce() -> Result<Vec<u8>, LdpError> + Send,
) -> ! {
    // A panic is answered below; printing it could wait on a lock.
    std::panic::set_hook(Box::new(|_| {}));
    let fd = keep_only(writer);
    // SAFETY: plain system calls on this (child) process.
    unsafe {
        // Dies with the thread that forked it, if the server goes away.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        let seconds = cpu.as_secs() + 1;
        let cpu = libc::rlimit {
            rlim_cur: seconds,
            rlim_max: seconds + 1,
        };
        libc::setrlimit(libc::RLIMIT_CPU, &cpu);
    }
    limit_memory();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        crate::rdf::on_parser_stack(work)
    }));
    let message = match result {
        Ok(Ok(bytes)) => encode(Ok(&bytes)),
        Ok(Err(e)) => encode(Err(&e)),
        Err(_) => encode(Err(&LdpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the SPARQL evaluation panicked",
        ))),
    };
    // SAFETY: `fd` is the pipe's write end, owned by this process.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    let code = if file.write_all(&message).is_ok() {
        0
    } else {
        1
    };
    // SAFETY: leaves at once, running no destructor and no exit handler
    // of the parent's runtime.
    unsafe { libc::_exit(code) }
}

/// Moves the pipe to descriptor 3 and closes every other inherited one
/// but stdin/out/err, so that no other evaluation's pipe stays open here.
/// The open descriptors are read from `/proc/self/fd` (plain system calls
/// that every seccomp filter of a service allows); `close_range` is only
/// the fallback, since an old systemd's filter does not know it and would
/// kill the child.
fn keep_only(writer: OwnedFd) -> i32 {
    const KEEP: i32 = 3;
    let fd = writer.as_raw_fd();
    // SAFETY: the child owns its copies of the descriptors and uses none
    // of them but the pipe.
    unsafe {
        if fd != KEEP {
            libc::dup2(fd, KEEP);
        }
    }
    std::mem::forget(writer);
    let open: Option<Vec<i32>> = std::fs::read_dir("/proc/self/fd").ok().map(|dir| {
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect()
    });
    // SAFETY: as above.
    unsafe {
        match open {
            Some(open) => {
                for other in open.into_iter().filter(|fd| *fd > KEEP) {
                    libc::close(other);
                }
            }
            None => {
                if libc::syscall(libc::SYS_close_range, KEEP + 1, u32::MAX, 0) != 0 {
                    let max = libc::sysconf(libc::_SC_OPEN_MAX).clamp(64, 1 << 20) as i32;
                    for other in KEEP + 1..max {
                        libc::close(other);
                    }
                }
            }
        }
    }
    KEEP
}

/// Limits the child's address space to what it inherited plus [`MEMORY`].
fn limit_memory() {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    let Some(pages) = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
    else {
        // Without /proc the CPU limit and the deadline still hold.
        return;
    };
    let limit = libc::rlimit {
        rlim_cur: pages * page + MEMORY,
        rlim_max: pages * page + MEMORY,
    };
    // SAFETY: sets this (child) process's own limit.
    unsafe { libc::setrlimit(libc::RLIMIT_AS, &limit) };
}

fn encode(result: Result<&[u8], &LdpError>) -> Vec<u8> {
    match result {
        Ok(bytes) => {
            let mut m = Vec::with_capacity(bytes.len() + 1);
            m.push(0);
            m.extend_from_slice(bytes);
            m
        }
        Err(e) => {
            let mut m = vec![1];
            m.extend_from_slice(&e.status.as_u16().to_be_bytes());
            m.extend_from_slice(e.message.as_bytes());
            m
        }
    }
}

fn decode(message: &[u8]) -> Option<Result<Vec<u8>, LdpError>> {
    match message.split_first()? {
        (0, rest) => Some(Ok(rest.to_vec())),
        (1, rest) if rest.len() >= 2 => {
            let status = StatusCode::from_u16(u16::from_be_bytes([rest[0], rest[1]]))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            Some(Err(LdpError::new(
                status,
                String::from_utf8_lossy(&rest[2..]).into_owned(),
            )))
        }
        _ => None,
    }
}
