//! Test support: a runner for the real binary and a bundle reader. The mock HTTP
//! servers come from `sitrep_testkit::http`.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;

use sitrep_schemas::manifest::{Manifest, SourceRecord};

/// A port that refuses connections: bound once to learn a free number, then closed.
pub(crate) fn refused_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// What one run of `sitrep-collect` left behind.
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) bundle: PathBuf,
    _dir: tempfile::TempDir,
}

impl Run {
    pub(crate) fn entries(&self) -> Vec<(String, Vec<u8>, u32)> {
        read_bundle(&self.bundle)
    }

    pub(crate) fn entry(&self, path: &str) -> Vec<u8> {
        self.entries()
            .into_iter()
            .find(|(p, _, _)| p == path)
            .unwrap_or_else(|| panic!("no entry `{path}`; stderr:\n{}", self.stderr))
            .1
    }

    pub(crate) fn json(&self, path: &str) -> serde_json::Value {
        serde_json::from_slice(&self.entry(path)).unwrap()
    }

    pub(crate) fn ndjson(&self, path: &str) -> Vec<serde_json::Value> {
        String::from_utf8(self.entry(path))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub(crate) fn manifest(&self) -> Manifest {
        serde_json::from_slice(&self.entry("manifest.json")).unwrap()
    }

    pub(crate) fn source(&self, name: &str) -> SourceRecord {
        self.manifest()
            .sources
            .into_iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no source `{name}`"))
    }

    /// Every byte of every entry, for secret searches.
    pub(crate) fn all_bytes(&self) -> Vec<u8> {
        self.entries().into_iter().flat_map(|(_, b, _)| b).collect()
    }
}

/// Runs the real binary with a clean environment (no kubeconfig, no PG*, no NEO4J_*,
/// HOME in a temp dir) plus `env`, writing the bundle into a temp dir.
pub(crate) fn collect(args: &[&str], env: &[(&str, &str)]) -> Run {
    Started::new(args, env).wait()
}

/// A running `sitrep-collect`, for tests that act while it works.
pub(crate) struct Started {
    pub(crate) child: std::process::Child,
    bundle: PathBuf,
    dir: tempfile::TempDir,
}

impl Started {
    pub(crate) fn new(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle.tar.zst");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_sitrep-collect"));
        cmd.env_clear()
            .env("HOME", dir.path())
            .arg("-o")
            .arg(&bundle)
            .args(args)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("run sitrep-collect");
        Started { child, bundle, dir }
    }

    pub(crate) fn wait(self) -> Run {
        let out = self
            .child
            .wait_with_output()
            .expect("wait for sitrep-collect");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            bundle: self.bundle,
            _dir: self.dir,
        }
    }
}

/// Entries in archive order: path, bytes, mode.
pub(crate) fn read_bundle(path: &Path) -> Vec<(String, Vec<u8>, u32)> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    let mut archive = tar::Archive::new(zstd::Decoder::new(file).unwrap());
    let mut out = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().to_string_lossy().into_owned();
        let mode = entry.header().mode().unwrap();
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).unwrap();
        out.push((name, bytes, mode));
    }
    out
}

pub(crate) fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}
