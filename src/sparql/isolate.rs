//! Runs a SPARQL evaluation in a child process forked for it, so that a
//! query can really be stopped: the evaluator checks for cancellation only
//! where it reads the store, and a cross product or a sort can compute
//! (and allocate) for minutes without reading anything. The child sees the
//! index through copy-on-write pages, is limited to [`MEMORY`] of new
//! address space, writes its answer to a pipe and exits; at the deadline
//! it is killed, and its CPU and memory are back at once.
//!
//! The child runs only the evaluation: it closes every file it inherited
//! but its pipe, never touches the runtime, and leaves with `_exit`.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};

use axum::http::StatusCode;

use crate::ldp::error::LdpError;

/// The address space a child may add to what it inherits.
pub const MEMORY: u64 = 1 << 30;

/// Why no answer came.
pub enum Failure {
    TimedOut,
    OutOfMemory,
    /// The evaluation's own refusal.
    Refused(LdpError),
    Crashed(String),
}

/// Runs `work` in a child process and returns what it wrote, or why not,
/// killing it at `deadline`.
pub async fn run(
    deadline: tokio::time::Instant,
    work: impl FnOnce() -> Result<Vec<u8>, LdpError>,
) -> Result<Vec<u8>, Failure> {
    let (reader, pid) = start(work)?;
    let mut read = tokio::task::spawn_blocking(move || {
        let mut file = std::fs::File::from(reader);
        let mut buf = Vec::new();
        let _ = file.read_to_end(&mut buf);
        buf
    });
    let (message, killed) = tokio::select! {
        buf = &mut read => (buf.unwrap_or_default(), false),
        _ = tokio::time::sleep_until(deadline) => {
            // SAFETY: `pid` is our child, not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            (read.await.unwrap_or_default(), true)
        }
    };
    let status = tokio::task::spawn_blocking(move || {
        let mut status = 0;
        // SAFETY: reaps our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    })
    .await
    .unwrap_or_default();
    if killed {
        return Err(Failure::TimedOut);
    }
    match decode(&message) {
        Some(result) => result.map_err(Failure::Refused),
        // Rust aborts when an allocation fails; the kernel kills with SIGKILL.
        None if libc::WIFSIGNALED(status)
            && matches!(libc::WTERMSIG(status), libc::SIGABRT | libc::SIGKILL) =>
        {
            Err(Failure::OutOfMemory)
        }
        None => Err(Failure::Crashed(format!(
            "the evaluation ended without an answer (wait status {status})"
        ))),
    }
}

/// Forks the child that runs `work`: the pipe it answers on, and its pid.
fn start(
    work: impl FnOnce() -> Result<Vec<u8>, LdpError>,
) -> Result<(OwnedFd, libc::pid_t), Failure> {
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
    // SAFETY: the child runs only `child`, which ends in `_exit`.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Failure::Crashed(format!(
            "cannot fork: {}",
            std::io::Error::last_os_error()
        )));
    }
    if pid == 0 {
        drop(reader);
        child(writer, work);
    }
    Ok((reader, pid))
}

/// The child: limit memory, drop inherited files, work, answer, exit.
fn child(writer: OwnedFd, work: impl FnOnce() -> Result<Vec<u8>, LdpError>) -> ! {
    use std::os::fd::AsRawFd;
    let fd = writer.as_raw_fd();
    close_others(fd);
    limit_memory();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    let message = match result {
        Ok(Ok(bytes)) => encode(Ok(&bytes)),
        Ok(Err(e)) => encode(Err(&e)),
        Err(_) => encode(Err(&LdpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the SPARQL evaluation failed",
        ))),
    };
    let mut file = std::fs::File::from(writer);
    let code = if file.write_all(&message).is_ok() {
        0
    } else {
        1
    };
    // SAFETY: leaves at once, running no destructor and no exit handler
    // of the parent's runtime.
    unsafe { libc::_exit(code) }
}

/// Closes every descriptor but stdin/out/err and `keep`, so that no other
/// evaluation's pipe stays open in this one.
fn close_others(keep: i32) {
    let mut open = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
        for entry in dir.flatten() {
            if let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            {
                open.push(fd);
            }
        }
    }
    for fd in open {
        if fd > 2 && fd != keep {
            // SAFETY: the child owns its copies of these descriptors and
            // uses none of them.
            unsafe { libc::close(fd) };
        }
    }
}

fn limit_memory() {
    let page = 4096u64;
    let size = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .unwrap_or(0)
        * page;
    let limit = libc::rlimit {
        rlim_cur: size + MEMORY,
        rlim_max: size + MEMORY,
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
