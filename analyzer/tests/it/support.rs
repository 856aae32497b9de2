//! Builds small bundles (tar + zstd or gzip) with a correct manifest, and runs the binary.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use chrono::{DateTime, Duration, Utc};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use sitrep_schemas::report::Report;

/// The scenario's anchor `T`: the end of the collection window.
pub(crate) fn anchor() -> DateTime<Utc> {
    "2026-12-04T14:00:00Z".parse().unwrap()
}

/// `T` minus `minutes`, as RFC 3339.
pub(crate) fn before_t(minutes: i64) -> String {
    (anchor() - Duration::minutes(minutes)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Compression {
    Zstd,
    Gzip,
}

/// One archive entry and how the manifest should describe it.
#[derive(Debug, Clone)]
struct Entry {
    path: String,
    data: Vec<u8>,
    /// Listed in the manifest (with this sha256 when overridden).
    listed: bool,
    sha256: Option<String>,
    kind: tar::EntryType,
}

#[derive(Debug, Clone)]
pub(crate) struct BundleBuilder {
    header: Value,
    entries: Vec<Entry>,
    manifest: bool,
    manifest_version: u32,
}

impl BundleBuilder {
    pub(crate) fn new() -> Self {
        BundleBuilder {
            header: json!({
                "format_version": 1,
                "tool": {"name": "sitrep-collect", "version": "0.1.0"},
                "created_at": anchor(),
                "window": {"start": anchor() - Duration::hours(3), "end": anchor()},
                "context": "sitrep-demo",
                "cluster": "demo-cluster",
                "namespaces": ["shop"],
                "all_namespaces": false
            }),
            entries: Vec::new(),
            manifest: true,
            manifest_version: 1,
        }
    }

    pub(crate) fn format_version(mut self, version: u32) -> Self {
        self.header["format_version"] = json!(version);
        self
    }

    pub(crate) fn file(mut self, path: &str, data: impl Into<Vec<u8>>) -> Self {
        self.entries.push(Entry {
            path: path.to_owned(),
            data: data.into(),
            listed: true,
            sha256: None,
            kind: tar::EntryType::Regular,
        });
        self
    }

    pub(crate) fn without(mut self, path: &str) -> Self {
        self.entries.retain(|e| e.path != path);
        self
    }

    pub(crate) fn ndjson(self, path: &str, rows: &[Value]) -> Self {
        let mut text = String::new();
        for row in rows {
            text.push_str(&row.to_string());
            text.push('\n');
        }
        self.file(path, text)
    }

    pub(crate) fn json(self, path: &str, value: &Value) -> Self {
        self.file(path, serde_json::to_vec_pretty(value).unwrap())
    }

    /// An entry the manifest does not list (an unsafe path, say).
    pub(crate) fn unlisted(mut self, path: &str, data: &[u8]) -> Self {
        self.entries.push(Entry {
            path: path.to_owned(),
            data: data.to_vec(),
            listed: false,
            sha256: None,
            kind: tar::EntryType::Regular,
        });
        self
    }

    pub(crate) fn symlink(mut self, path: &str) -> Self {
        self.entries.push(Entry {
            path: path.to_owned(),
            data: Vec::new(),
            listed: false,
            sha256: None,
            kind: tar::EntryType::Symlink,
        });
        self
    }

    /// A directory entry, as `tar -cf` writes for each folder it packs.
    pub(crate) fn directory(mut self, path: &str) -> Self {
        self.entries.push(Entry {
            path: path.to_owned(),
            data: Vec::new(),
            listed: false,
            sha256: None,
            kind: tar::EntryType::Directory,
        });
        self
    }

    /// Makes the manifest claim a different checksum for `path`.
    pub(crate) fn wrong_checksum(mut self, path: &str) -> Self {
        let entry = self.entries.iter_mut().find(|e| e.path == path).unwrap();
        entry.sha256 = Some("0".repeat(64));
        self
    }

    /// Replaces one line (1-based) of an existing entry.
    pub(crate) fn replace_line(mut self, path: &str, line: usize, text: &str) -> Self {
        let entry = self.entries.iter_mut().find(|e| e.path == path).unwrap();
        let mut lines: Vec<String> = String::from_utf8(entry.data.clone())
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect();
        lines[line - 1] = text.to_owned();
        entry.data = (lines.join("\n") + "\n").into_bytes();
        self
    }

    /// Rewrites the bytes of an existing entry (for bytes no `&str` can hold).
    pub(crate) fn edit_bytes(mut self, path: &str, edit: impl FnOnce(&mut Vec<u8>)) -> Self {
        let entry = self.entries.iter_mut().find(|e| e.path == path).unwrap();
        edit(&mut entry.data);
        self
    }

    pub(crate) fn manifest_version(mut self, version: u32) -> Self {
        self.manifest_version = version;
        self
    }

    pub(crate) fn without_manifest(mut self) -> Self {
        self.manifest = false;
        self
    }

    fn manifest(&self) -> Value {
        let files: Vec<Value> = self
            .entries
            .iter()
            .filter(|e| e.listed)
            .map(|e| {
                let digest = e.sha256.clone().unwrap_or_else(|| {
                    Sha256::digest(&e.data)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect()
                });
                json!({
                    "path": e.path, "size": e.data.len(), "sha256": digest,
                    "records": null, "truncated": false, "truncation": null,
                    "source": e.path.split('/').next().unwrap()
                })
            })
            .collect();
        let source = |name: &str, kind: &str, status: &str, error: Value| {
            json!({
                "name": name, "kind": kind, "status": status,
                "started_at": anchor(), "duration_ms": 1200, "items": 10,
                "error": error, "parts": []
            })
        };
        json!({
            "format_version": self.manifest_version,
            "created_at": anchor(),
            "completed_at": anchor() + Duration::seconds(20),
            "interrupted": false,
            "files": files,
            "sources": [
                source("kubernetes", "kubernetes", "ok", Value::Null),
                source("prometheus", "prometheus", "ok", Value::Null),
                source("postgres/orders", "postgres", "ok", Value::Null),
                source("neo4j/127.0.0.1-7474", "neo4j", "timeout", json!("no answer within 10s")),
            ],
            "redactions": {"env_value": 4}
        })
    }

    fn tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        let header = serde_json::to_vec(&self.header).unwrap();
        append(
            &mut builder,
            "sitrep.json",
            &header,
            tar::EntryType::Regular,
        );
        for entry in &self.entries {
            append(&mut builder, &entry.path, &entry.data, entry.kind);
        }
        if self.manifest {
            let manifest = serde_json::to_vec(&self.manifest()).unwrap();
            append(
                &mut builder,
                "manifest.json",
                &manifest,
                tar::EntryType::Regular,
            );
        }
        builder.into_inner().unwrap()
    }

    pub(crate) fn write(&self, dir: &Path, compression: Compression) -> PathBuf {
        self.write_tar(dir, compression, self.tar())
    }

    /// Writes only the first half of the tar stream, properly compressed: a torn archive.
    pub(crate) fn write_torn(&self, dir: &Path, compression: Compression) -> PathBuf {
        let mut tar = self.tar();
        tar.truncate(tar.len() / 2);
        self.write_tar(dir, compression, tar)
    }

    fn write_tar(&self, dir: &Path, compression: Compression, tar: Vec<u8>) -> PathBuf {
        let (name, bytes) = match compression {
            Compression::Zstd => (
                "bundle.tar.zst",
                zstd::encode_all(tar.as_slice(), 3).unwrap(),
            ),
            Compression::Gzip => {
                let mut encoder =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                encoder.write_all(&tar).unwrap();
                ("bundle.tar.gz", encoder.finish().unwrap())
            }
        };
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

/// Writes the name into the old header field directly: `set_path` refuses `..`, which is
/// exactly what some tests need to write.
fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8], kind: tar::EntryType) {
    let mut header = tar::Header::new_gnu();
    assert!(path.len() < 100, "test paths fit the old header: {path}");
    header.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    header.set_size(data.len() as u64);
    header.set_mode(0o600);
    header.set_mtime(anchor().timestamp() as u64);
    header.set_entry_type(kind);
    if kind == tar::EntryType::Symlink {
        header.set_link_name("../../etc/passwd").unwrap();
    }
    header.set_cksum();
    builder.append(&header, data).unwrap();
}

#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn report(&self) -> Report {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not a report ({e}):\n{}\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

pub(crate) fn analyze(bundle: &Path, args: &[&str]) -> Run {
    let output: Output = Command::new(env!("CARGO_BIN_EXE_sitrep-analyze"))
        .arg(bundle)
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("NO_COLOR")
        .output()
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    }
}

pub(crate) fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// Problems as `(file, line)` for compact assertions.
pub(crate) fn problem_places(report: &Report) -> BTreeMap<String, Option<u64>> {
    report
        .problems
        .iter()
        .map(|p| (p.file.clone(), p.line))
        .collect()
}
