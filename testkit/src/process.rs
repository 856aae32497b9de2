//! Running the real servers' command-line tools and finding free loopback ports.

use std::io;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};

/// A tool that ran but did not succeed, with what it said.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("could not run `{program}`")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("`{program}` exited with {status}: {output}")]
    Failed {
        program: String,
        status: std::process::ExitStatus,
        output: String,
    },
}

/// Runs `command` to completion and returns its output, or an error that carries the
/// tool's own stderr and stdout so the reason for a failure is never lost.
pub(crate) fn run(command: &mut Command) -> Result<Output, CommandError> {
    let program = describe(command);
    let output = command.output().map_err(|source| CommandError::Spawn {
        program: program.clone(),
        source,
    })?;
    if output.status.success() {
        return Ok(output);
    }
    let mut said = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !stdout.trim().is_empty() {
        said.push_str(" | ");
        said.push_str(stdout.trim());
    }
    Err(CommandError::Failed {
        program,
        status: output.status,
        output: said,
    })
}

fn describe(command: &Command) -> String {
    let program = Path::new(command.get_program())
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Behind `runuser` the interesting name is the tool it runs.
    if program == "runuser"
        && let Some(tool) = command.get_args().skip_while(|arg| *arg != "--").nth(1)
    {
        let tool = Path::new(tool).file_name().unwrap_or(tool);
        return tool.to_string_lossy().into_owned();
    }
    program
}

/// A port on 127.0.0.1 that nothing listened on a moment ago. Another process can take
/// it before the caller binds it; callers that start servers retry on a bind failure.
pub fn free_port() -> io::Result<u16> {
    let listener = TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// Whether this process runs as root, read from the owner of its own `/proc` entry so
/// no unsafe call to `geteuid` is needed.
pub(crate) fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self")
        .map(|meta| meta.uid() == 0)
        .unwrap_or(false)
}

/// The uid and gid of a system user, from `/etc/passwd`.
pub(crate) fn system_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        if fields.next()? != name {
            return None;
        }
        let _password = fields.next()?;
        let uid = fields.next()?.parse().ok()?;
        let gid = fields.next()?.parse().ok()?;
        Some((uid, gid))
    })
}
