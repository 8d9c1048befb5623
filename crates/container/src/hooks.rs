//! Lifecycle hooks (config.md "POSIX-platform Hooks"): each hook is executed
//! with the container state on stdin, its own args and env, and an optional
//! timeout; a hook that fails or times out fails the operation (except
//! poststart/poststop, whose failures the caller only logs, as the spec says).
//!
//! A hook's `env`, when given, is its whole environment (`[]`: none). Without
//! one (the spec is silent) a hook gets what runc gives it: a startContainer
//! hook, run in the container right before the program, the container
//! process's environment (engines rely on it); every other hook the
//! runtime's own environment (createContainer runs in the init, a clone of
//! the runtime, before the program's environment is put together).

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

use oci::Hook;
use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::process::{pidfd_open, Pid, PidfdFlags};

use crate::error::{msg, Result};

/// Run the runtime's hooks `hooks` (named `kind` in messages) one after the other.
pub fn run(kind: &str, hooks: &[Hook], state_json: &str) -> Result<()> {
    run_all(kind, hooks, state_json, None)
}

/// Run hooks in the container: one without `env` gets `container_env`.
pub fn run_in_container(
    kind: &str,
    hooks: &[Hook],
    state_json: &str,
    container_env: &[String],
) -> Result<()> {
    run_all(kind, hooks, state_json, Some(container_env))
}

fn run_all(kind: &str, hooks: &[Hook], state_json: &str, env: Option<&[String]>) -> Result<()> {
    for (i, h) in hooks.iter().enumerate() {
        run_one(h, state_json, env)
            .map_err(|e| msg(format!("hooks.{kind}[{i}] {}: {e}", h.path)))?;
    }
    Ok(())
}

fn run_one(
    h: &Hook,
    state_json: &str,
    default_env: Option<&[String]>,
) -> std::result::Result<(), String> {
    let mut cmd = Command::new(&h.path);
    if let Some((argv0, rest)) = h.args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    // `"env": []` is an empty environment; only an absent `env` defaults.
    let env = h.env.as_deref().or(default_env);
    if let Some(env) = env {
        cmd.env_clear();
        for kv in env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().map_err(|e| e.to_string())?;
    // The hook may not read its stdin: a broken pipe is not its failure.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(state_json.as_bytes());
    }
    if let Some(secs) = h.timeout {
        let pidfd = pidfd_open(
            Pid::from_raw(child.id() as i32).expect("child pid"),
            PidfdFlags::empty(),
        )
        .map_err(|e| format!("pidfd_open: {e}"))?;
        let ts = Timespec {
            tv_sec: secs,
            tv_nsec: 0,
        };
        let mut fds = [PollFd::new(&pidfd, PollFlags::IN)];
        let ready = loop {
            match poll(&mut fds, Some(&ts)) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(format!("poll: {e}")),
            }
        };
        if ready == 0 {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("timed out after {secs}s"));
        }
    }
    let mut out = String::new();
    let mut err = String::new();
    if let Some(mut o) = child.stdout.take() {
        let _ = o.read_to_string(&mut out);
    }
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    if status.success() {
        return Ok(());
    }
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "failed".into(),
    };
    let detail = err.trim();
    let detail = if detail.is_empty() {
        out.trim()
    } else {
        detail
    };
    let tail: String = detail
        .chars()
        .rev()
        .take(400)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    if tail.is_empty() {
        Err(how)
    } else {
        Err(format!("{how}: {}", tail.replace('\n', " ")))
    }
}

/// Check the runtime-namespace hook programs exist and are executable before
/// anything is created (startContainer hooks resolve in the container and
/// are checked there).
pub fn check_exist(hooks: &oci::Hooks) -> Result<()> {
    for (kind, list) in hooks.by_name() {
        if kind == "startContainer" {
            continue;
        }
        for (i, h) in list.iter().enumerate() {
            let c = std::ffi::CString::new(h.path.as_str())
                .map_err(|_| msg(format!("hooks.{kind}[{i}].path contains a NUL byte")))?;
            // SAFETY: NUL-terminated path.
            if unsafe { libc::access(c.as_ptr(), libc::X_OK) } != 0 {
                let e = std::io::Error::last_os_error();
                return Err(msg(format!("hooks.{kind}[{i}].path {}: {e}", h.path)));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str, timeout: Option<i64>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: Some(vec!["HOOKVAR=42".into()]),
            timeout,
        }
    }

    #[test]
    fn state_on_stdin_env_and_args() {
        let dir = std::env::temp_dir().join(format!("bh-hook-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("out");
        let h = hook(
            &format!("cat > {0}; echo \" $HOOKVAR $0\" >> {0}", out.display()),
            None,
        );
        run("prestart", &[h], "{\"id\":\"x\"}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "{\"id\":\"x\"} 42 sh\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn failure_and_timeout_are_errors() {
        let e = run(
            "createRuntime",
            &[hook("echo boom >&2; exit 3", None)],
            "{}",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("hooks.createRuntime[0]") && e.contains("status 3") && e.contains("boom"),
            "{e}"
        );
        let e = run("poststart", &[hook("sleep 5", Some(1))], "{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("timed out after 1s"), "{e}");
        let missing = Hook {
            path: "/nonexistent/hook".into(),
            ..Default::default()
        };
        let e = run("prestart", std::slice::from_ref(&missing), "{}")
            .unwrap_err()
            .to_string();
        assert!(e.contains("No such file"), "{e}");
        let hooks = oci::Hooks {
            prestart: vec![missing],
            ..Default::default()
        };
        assert!(check_exist(&hooks).is_err());
    }
}
