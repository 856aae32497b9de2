//! A real PostgreSQL server on 127.0.0.1, private to one test or demo run.
//!
//! The cluster lives in a temporary directory and is stopped and removed on drop. Host
//! connections use scram-sha-256 with an invented password, so password authentication
//! is exercised for real. As root (CI runs so), the server tools run as the `postgres`
//! system user, because PostgreSQL refuses to run as root.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use tempfile::TempDir;

use crate::process::{self, CommandError};

/// The superuser `initdb` creates.
pub const USER: &str = "sitrep";
/// Invented for these tests; never used anywhere real.
pub const PASSWORD: &str = "pg-invented-Vb7q2Lx9-only-for-tests";

const START_ATTEMPTS: usize = 3;

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error(
        "no PostgreSQL server binaries found (looked at `pg_config --bindir` and \
         /usr/lib/postgresql/<version>/bin); install the `postgresql` package"
    )]
    NoBinaries,
    #[error("running as root, but there is no `postgres` system user to run the server as")]
    NoPostgresUser,
    #[error("could not prepare the cluster directory")]
    Prepare(#[source] std::io::Error),
    #[error("initdb failed")]
    Initdb(#[source] CommandError),
    #[error("the server did not start on 127.0.0.1:{port}; its log ends with: {log_tail}")]
    Start {
        port: u16,
        log_tail: String,
        #[source]
        source: CommandError,
    },
    #[error("could not create database `{name}`")]
    CreateDatabase {
        name: String,
        #[source]
        source: CommandError,
    },
}

/// A running server. Dropping it stops the server (`pg_ctl -m immediate stop`) and
/// deletes the cluster.
#[derive(Debug)]
pub struct Postgres {
    bindir: PathBuf,
    data: PathBuf,
    port: u16,
    run_as_postgres: bool,
    dir: TempDir,
}

impl Postgres {
    /// Creates a cluster and starts it on a free port of 127.0.0.1. Takes about two
    /// seconds; fails (never skips) when the server cannot start.
    pub fn start() -> Result<Self, PostgresError> {
        let started = Instant::now();
        let bindir = find_bindir().ok_or(PostgresError::NoBinaries)?;
        let run_as_postgres = process::running_as_root();

        let dir = tempfile::Builder::new()
            .prefix("sitrep-pg-")
            .tempdir()
            .map_err(PostgresError::Prepare)?;
        let pwfile = dir.path().join("pwfile");
        std::fs::write(&pwfile, format!("{PASSWORD}\n")).map_err(PostgresError::Prepare)?;
        if run_as_postgres {
            let (uid, gid) =
                process::system_user("postgres").ok_or(PostgresError::NoPostgresUser)?;
            for path in [dir.path(), pwfile.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .map_err(PostgresError::Prepare)?;
            }
        }

        let data = dir.path().join("data");
        let mut initdb = tool(&bindir, "initdb", run_as_postgres);
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                USER,
                "-A",
                "scram-sha-256",
                "-E",
                "UTF8",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .args(["--no-sync", "--no-instructions"]);
        process::run(&mut initdb).map_err(PostgresError::Initdb)?;
        // The password is in the cluster now; the file is not needed any more.
        let _ = std::fs::remove_file(&pwfile);

        let mut server = Postgres {
            bindir,
            data,
            port: 0,
            run_as_postgres,
            dir,
        };
        let mut attempt = 0;
        loop {
            attempt += 1;
            server.port = process::free_port().map_err(PostgresError::Prepare)?;
            match server.pg_ctl_start() {
                Ok(()) => break,
                // Another process may have taken the port between probe and bind.
                Err(error) if attempt < START_ATTEMPTS && server.log_says_port_taken() => {
                    tracing::warn!(source = "postgres", stage = "start", error_type = "bind",
                        port = server.port, error = %error, "port taken, retrying");
                }
                Err(error) => return Err(error),
            }
        }
        tracing::info!(
            source = "postgres",
            stage = "start",
            port = server.port,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "PostgreSQL ready"
        );
        Ok(server)
    }

    fn pg_ctl_start(&self) -> Result<(), PostgresError> {
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -k {sockets} -c fsync=off \
             -c full_page_writes=off -c synchronous_commit=off",
            port = self.port,
            sockets = self.dir.path().display(),
        );
        let mut pg_ctl = tool(&self.bindir, "pg_ctl", self.run_as_postgres);
        pg_ctl
            .args(["-w", "-t", "60", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(self.log_path())
            .arg("-o")
            .arg(options)
            .arg("start");
        process::run(&mut pg_ctl)
            .map(drop)
            .map_err(|source| PostgresError::Start {
                port: self.port,
                log_tail: self.log_tail(),
                source,
            })
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join(" | ")
    }

    fn log_says_port_taken(&self) -> bool {
        std::fs::read_to_string(self.log_path())
            .map(|log| log.contains("could not bind") || log.contains("Address already in use"))
            .unwrap_or(false)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq key/value connection string for `dbname`, password included.
    pub fn conninfo(&self, dbname: &str) -> String {
        format!(
            "host=127.0.0.1 port={} user={USER} password={PASSWORD} dbname={dbname}",
            self.port
        )
    }

    /// The same as [`Postgres::conninfo`] in URL form.
    pub fn url(&self, dbname: &str) -> String {
        format!(
            "postgresql://{USER}:{PASSWORD}@127.0.0.1:{}/{dbname}",
            self.port
        )
    }

    /// Creates a database owned by [`USER`].
    pub fn create_database(&self, name: &str) -> Result<(), PostgresError> {
        let mut createdb = Command::new(self.bindir.join("createdb"));
        createdb
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                name,
            ])
            .env("PGPASSWORD", PASSWORD)
            .env_remove("PGSERVICEFILE");
        process::run(&mut createdb)
            .map(drop)
            .map_err(|source| PostgresError::CreateDatabase {
                name: name.to_owned(),
                source,
            })
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let mut pg_ctl = tool(&self.bindir, "pg_ctl", self.run_as_postgres);
        pg_ctl
            .args(["-m", "immediate", "-D"])
            .arg(&self.data)
            .arg("stop");
        if let Err(error) = process::run(&mut pg_ctl) {
            tracing::warn!(source = "postgres", stage = "stop", error_type = "command",
                error = %error, "PostgreSQL did not stop cleanly");
        }
    }
}

/// A server tool, wrapped in `runuser -u postgres --` when running as root.
fn tool(bindir: &Path, name: &str, run_as_postgres: bool) -> Command {
    let path = bindir.join(name);
    let mut command = if run_as_postgres {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--"]).arg(path);
        command
    } else {
        Command::new(path)
    };
    // The server must not pick up a caller's connection settings or locale surprises.
    command.env("LC_ALL", "C").env_remove("PGDATA");
    command
}

/// The newest installed server's bin directory: Debian keeps one per major version, and
/// `pg_config` may belong to the client package only.
fn find_bindir() -> Option<PathBuf> {
    let mut candidates: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .collect();
    candidates.sort();
    let newest = candidates.into_iter().rev().map(|(_, bin)| bin);

    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| PathBuf::from(String::from_utf8_lossy(&output.stdout).trim()));

    newest
        .chain(from_pg_config)
        .find(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
}
