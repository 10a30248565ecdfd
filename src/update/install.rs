//! Putting a verified artifact in place: through dpkg or rpm when one of
//! them owns the binary (never fighting the package manager), else by an
//! atomic rename over the binary of a tarball install. Then the service is
//! restarted, when systemd runs it from this binary.

use std::ffi::OsString;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::UpdateError;
use super::manifest::Kind;

/// The systemd unit that runs `xpod serve` (systemd/xpod.service).
pub const SERVICE: &str = "xpod.service";

/// How this binary was installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Method {
    /// dpkg owns it (the package's name).
    Deb(String),
    /// rpm owns it.
    Rpm(String),
    /// A binary unpacked by hand: replaced in place.
    Tarball,
}

impl Method {
    pub fn kind(&self) -> Kind {
        match self {
            Method::Deb(_) => Kind::Deb,
            Method::Rpm(_) => Kind::Rpm,
            Method::Tarball => Kind::Tarball,
        }
    }

    pub fn describe(&self, exe: &Path) -> String {
        match self {
            Method::Deb(p) => format!("through dpkg (package {p} owns {})", exe.display()),
            Method::Rpm(p) => format!("through rpm (package {p} owns {})", exe.display()),
            Method::Tarball => format!("by replacing {} (a tarball install)", exe.display()),
        }
    }
}

/// Asks dpkg, then rpm, whether they own `exe`.
pub fn detect(exe: &Path) -> Method {
    if let Some(out) = run_quiet(Command::new("dpkg-query").arg("-S").arg(exe))
        && let Some(package) = dpkg_owner(&out, exe)
    {
        return Method::Deb(package);
    }
    if let Some(out) = run_quiet(
        Command::new("rpm")
            .args(["-qf", "--queryformat", "%{NAME}\\n"])
            .arg(exe),
    ) && let Some(package) = out.lines().next().map(str::trim).filter(|l| !l.is_empty())
    {
        return Method::Rpm(package.to_string());
    }
    Method::Tarball
}

/// The stdout of a command that succeeded; `None` when it failed or is not installed.
fn run_quiet(cmd: &mut Command) -> Option<String> {
    let out = cmd.stdin(std::process::Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The package in `dpkg-query -S` output (`pkg[, pkg…]: /path`) that owns exactly `exe`.
fn dpkg_owner(output: &str, exe: &Path) -> Option<String> {
    output.lines().find_map(|line| {
        if line.starts_with("diversion by") {
            return None;
        }
        let (packages, path) = line.split_once(": ")?;
        (Path::new(path.trim()) == exe).then(|| {
            let first = packages.split(',').next().unwrap_or(packages).trim();
            // `xpod:amd64` names the package with its architecture.
            first.split(':').next().unwrap_or(first).to_string()
        })
    })
}

/// The package manager's command that installs `file`.
pub fn package_command(method: &Method, file: &Path, downgrade: bool) -> Option<Vec<OsString>> {
    let mut cmd: Vec<OsString> = match method {
        // Nobody answers dpkg's question about an edited configuration
        // file: keep the administrator's edits, as the upgrade test expects.
        Method::Deb(_) => vec![
            "dpkg".into(),
            "--force-confdef".into(),
            "--force-confold".into(),
            "-i".into(),
        ],
        Method::Rpm(_) if downgrade => vec!["rpm".into(), "-U".into(), "--oldpackage".into()],
        Method::Rpm(_) => vec!["rpm".into(), "-U".into()],
        Method::Tarball => return None,
    };
    cmd.push(file.into());
    Some(cmd)
}

/// The owner and mode of `path` when someone other than root owns it or
/// may write it (group or others); `None` when only root may change it.
pub fn not_root_alone(path: &Path) -> std::io::Result<Option<(u32, u32)>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    Ok((meta.uid() != 0 || meta.mode() & 0o022 != 0).then(|| (meta.uid(), meta.mode() & 0o7777)))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Checks, before anything is downloaded, that the install can happen.
pub fn preflight(method: &Method, exe: &Path) -> Result<(), UpdateError> {
    match method {
        Method::Deb(_) | Method::Rpm(_) if !is_root() => Err(UpdateError(format!(
            "{} belongs to a package, which only root may upgrade: run `sudo xpod self-update`",
            exe.display()
        ))),
        Method::Deb(_) | Method::Rpm(_) => Ok(()),
        Method::Tarball => {
            let dir = exe.parent().unwrap_or(Path::new("/"));
            // Where a package manager keeps programs, a binary it does not
            // own (or that it could not be asked about) is not ours to swap.
            if ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .iter()
                .any(|d| dir == Path::new(d))
            {
                return Err(UpdateError(format!(
                    "{} is in a directory the package manager keeps, but neither dpkg nor rpm says it owns it: install xpod from its package, or put a tarball install elsewhere (such as /usr/local/bin)",
                    exe.display()
                )));
            }
            // Root would run and install a file that the directory's other
            // writers could swap in between.
            if is_root()
                && let Some((uid, mode)) = not_root_alone(dir)
                    .map_err(|e| UpdateError(format!("cannot read {} ({e})", dir.display())))?
            {
                return Err(UpdateError(format!(
                    "{} may be written by users other than root (owner uid {uid}, mode {mode:o}), so root will not install a program there: chown root: and chmod go-w it, or update as the user who owns it",
                    dir.display()
                )));
            }
            let c_dir = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
                .map_err(|_| UpdateError(format!("{} is not a usable path", dir.display())))?;
            // SAFETY: c_dir is a valid NUL-terminated string.
            if unsafe { libc::access(c_dir.as_ptr(), libc::W_OK) } != 0 {
                return Err(UpdateError(format!(
                    "cannot write to {}, where {} lives: run `sudo xpod self-update`",
                    dir.display(),
                    exe.file_name()
                        .map(|n| n.to_string_lossy())
                        .unwrap_or_default()
                )));
            }
            Ok(())
        }
    }
}

/// Installs a verified package file through its package manager.
pub fn install_package(method: &Method, file: &Path, downgrade: bool) -> Result<(), UpdateError> {
    let argv = package_command(method, file, downgrade).expect("a package method");
    let shown = argv
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ");
    let out = Command::new(&argv[0])
        .args(&argv[1..])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            UpdateError(format!(
                "cannot run `{shown}` ({e}); is the package manager installed?"
            ))
        })?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let last = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        let repair = match method {
            Method::Deb(_) => {
                "; if the package is left half-configured, `dpkg --configure -a` finishes it, and running the command yourself shows dpkg's whole output"
            }
            _ => "; running the command yourself shows rpm's whole output",
        };
        return Err(UpdateError(format!(
            "`{shown}` failed ({}: {last}){repair}",
            out.status
        )));
    }
    Ok(())
}

/// Replaces `exe` with `xpod-<version>/xpod` from the verified tarball: the
/// new binary is written beside it, made durable and executable, checked to
/// run on this machine, then renamed over it (atomic: a crash leaves the old
/// binary or the new one, never half of either).
pub fn replace_from_tarball(tarball: &Path, version: &str, exe: &Path) -> Result<(), UpdateError> {
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let want = PathBuf::from(format!("xpod-{version}/xpod"));
    let bad =
        |why: String| UpdateError(format!("{}: {why}; nothing was changed", tarball.display()));
    let file = std::fs::File::open(tarball).map_err(|e| bad(e.to_string()))?;
    let mut archive =
        tar::Archive::new(flate2::read::GzDecoder::new(std::io::BufReader::new(file)));
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a gzip tar archive ({e})")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a gzip tar archive ({e})")))?;
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let path = path.strip_prefix("./").unwrap_or(&path);
        if path != want || !entry.header().entry_type().is_file() {
            continue;
        }
        let mut temp = tempfile::Builder::new()
            .prefix(".xpod.update-")
            .tempfile_in(dir)
            .map_err(|e| {
                UpdateError(format!(
                    "cannot write to {} ({e}): run `sudo xpod self-update`",
                    dir.display()
                ))
            })?;
        let written = std::io::copy(&mut entry, temp.as_file_mut())
            .and_then(|_| temp.as_file_mut().flush())
            .and_then(|_| temp.as_file().sync_all())
            .and_then(|_| {
                temp.as_file()
                    .set_permissions(std::fs::Permissions::from_mode(0o755))
            });
        written.map_err(|e| {
            UpdateError(format!(
                "cannot write the new binary into {} ({e}); check the free space; nothing was changed",
                dir.display()
            ))
        })?;
        // Closed before it runs: Linux refuses to execute a file open for writing.
        let temp = temp.into_temp_path();
        check_runs(&temp)?;
        temp.persist(exe).map_err(|e| {
            UpdateError(format!(
                "cannot rename the new binary over {} ({}); nothing was changed",
                exe.display(),
                e.error
            ))
        })?;
        // The rename itself is durable once the directory is.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| {
                UpdateError(format!(
                    "{} was replaced, but syncing {} failed ({e})",
                    exe.display(),
                    dir.display()
                ))
            })?;
        return Ok(());
    }
    Err(bad(format!(
        "the archive has no {}; release tarballs hold the binary there (scripts/release makes them so)",
        want.display()
    )))
}

/// The new binary must at least start on this machine (right architecture,
/// not truncated) before it replaces the running one.
fn check_runs(binary: &Path) -> Result<(), UpdateError> {
    let out = Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output();
    match out {
        Ok(out) if out.status.success() && out.stdout.starts_with(b"xpod ") => Ok(()),
        Ok(out) => Err(UpdateError(format!(
            "the new binary does not run here (`xpod --version` gave {}); it may be built for another system; nothing was changed",
            out.status
        ))),
        Err(e) => Err(UpdateError(format!(
            "the new binary does not run here ({e}); it may be built for another architecture; nothing was changed"
        ))),
    }
}

/// Restarts the service when systemd runs it from `exe`; otherwise says
/// what the operator must do. Returns the line to print.
pub fn restart_service(exe: &Path, version: &str) -> Result<String, UpdateError> {
    let manual = format!("restart the running xpod server, if any, to use {version}");
    if !Path::new("/run/systemd/system").exists() {
        return Ok(manual);
    }
    let active = Command::new("systemctl")
        .args(["is-active", "--quiet", SERVICE])
        .status()
        .is_ok_and(|s| s.success());
    if !active {
        return Ok(format!("{SERVICE} is not running; {manual}"));
    }
    let exec = run_quiet(Command::new("systemctl").args([
        "show",
        "--property=ExecStart",
        "--value",
        SERVICE,
    ]))
    .and_then(|text| exec_start_path(&text));
    let same = exec
        .as_deref()
        .and_then(|p| std::fs::canonicalize(p).ok())
        .is_some_and(|p| p == exe);
    if !same {
        return Ok(format!(
            "{SERVICE} runs {}, not {}; it was left alone",
            exec.map(|p| p.display().to_string())
                .unwrap_or_else(|| "another binary".into()),
            exe.display()
        ));
    }
    let out = Command::new("systemctl")
        .args(["restart", SERVICE])
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| UpdateError(format!("installed {version}, but cannot run systemctl ({e}); run `systemctl restart {SERVICE}`")))?;
    if !out.status.success() {
        return Err(UpdateError(format!(
            "installed {version}, but `systemctl restart {SERVICE}` failed ({}); see `journalctl -u {SERVICE}`",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(format!("restarted {SERVICE}"))
}

/// The binary of `systemctl show --property=ExecStart --value`:
/// `{ path=/usr/bin/xpod ; argv[]=/usr/bin/xpod serve ; … }`.
fn exec_start_path(text: &str) -> Option<PathBuf> {
    let start = text.find("path=")? + "path=".len();
    let rest = &text[start..];
    let end = rest.find(" ;").unwrap_or(rest.len());
    Some(PathBuf::from(rest[..end].trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binary_no_package_owns_in_the_package_managers_directories_is_left_alone() {
        for exe in ["/usr/bin/xpod", "/usr/sbin/xpod", "/bin/xpod"] {
            let err = preflight(&Method::Tarball, Path::new(exe)).unwrap_err();
            assert!(err.0.contains("install xpod from its package"), "{}", err.0);
        }
    }

    #[test]
    fn dpkg_ownership_is_read_for_exactly_this_path() {
        let exe = Path::new("/usr/bin/xpod");
        assert_eq!(
            dpkg_owner("xpod: /usr/bin/xpod\n", exe),
            Some("xpod".into())
        );
        assert_eq!(
            dpkg_owner("xpod:amd64: /usr/bin/xpod\n", exe),
            Some("xpod".into())
        );
        assert_eq!(
            dpkg_owner(
                "diversion by foo from: /usr/bin/xpod\nxpod, xpod-extra: /usr/bin/xpod\n",
                exe
            ),
            Some("xpod".into())
        );
        // A pattern match on another path is not ownership.
        assert_eq!(dpkg_owner("xpod-doc: /usr/bin/xpod-helper\n", exe), None);
    }

    #[test]
    fn package_commands_go_through_the_package_manager() {
        let f = Path::new("/tmp/x/xpod_2.0.0_amd64.deb");
        let shown = |m: &Method, down| {
            package_command(m, f, down).map(|v| {
                v.iter()
                    .map(|a| a.to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        };
        assert_eq!(
            shown(&Method::Deb("xpod".into()), false).unwrap(),
            "dpkg --force-confdef --force-confold -i /tmp/x/xpod_2.0.0_amd64.deb"
        );
        assert_eq!(
            shown(&Method::Rpm("xpod".into()), false).unwrap(),
            "rpm -U /tmp/x/xpod_2.0.0_amd64.deb"
        );
        assert_eq!(
            shown(&Method::Rpm("xpod".into()), true).unwrap(),
            "rpm -U --oldpackage /tmp/x/xpod_2.0.0_amd64.deb"
        );
        assert_eq!(shown(&Method::Tarball, false), None);
        assert_eq!(Method::Deb("xpod".into()).kind(), Kind::Deb);
    }

    #[test]
    fn a_binary_no_package_owns_is_a_tarball_install() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("xpod");
        std::fs::write(&exe, b"#!/bin/sh\n").unwrap();
        assert_eq!(detect(&exe), Method::Tarball);
        if Path::new("/var/lib/dpkg/info/dpkg.list").exists() {
            assert_eq!(
                detect(Path::new("/usr/bin/dpkg")),
                Method::Deb("dpkg".into())
            );
        }
    }

    #[test]
    fn the_service_binary_is_read_from_exec_start() {
        let text = "{ path=/usr/bin/xpod ; argv[]=/usr/bin/xpod serve ; ignore_errors=no ; start_time=[n/a] }";
        assert_eq!(exec_start_path(text), Some(PathBuf::from("/usr/bin/xpod")));
        assert_eq!(exec_start_path(""), None);
    }
}
