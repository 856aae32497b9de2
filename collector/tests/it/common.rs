//! Test support: a tiny HTTP/1.1 server on 127.0.0.1, a runner for the real binary, and
//! a bundle reader.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::thread;

use sitrep_schemas::manifest::{Manifest, SourceRecord};

/// One request as the mock saw it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    pub(crate) method: String,
    /// Path without the query string.
    pub(crate) path: String,
    /// Decoded query parameters.
    pub(crate) query: BTreeMap<String, String>,
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Vec<u8>,
}

impl Request {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

pub(crate) struct Response {
    pub(crate) status: u16,
    pub(crate) body: Vec<u8>,
    pub(crate) content_type: &'static str,
}

impl Response {
    pub(crate) fn json(status: u16, body: serde_json::Value) -> Self {
        Response {
            status,
            body: body.to_string().into_bytes(),
            content_type: "application/json",
        }
    }

    pub(crate) fn text(status: u16, body: &str) -> Self {
        Response {
            status,
            body: body.as_bytes().to_vec(),
            content_type: "text/plain",
        }
    }
}

type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// An HTTP server on 127.0.0.1 with an OS-chosen port. Each connection is answered once
/// and closed. It lives as long as the test process.
pub(crate) struct MockServer {
    pub(crate) port: u16,
    requests: Arc<Mutex<Vec<Request>>>,
}

impl MockServer {
    pub(crate) fn start(handler: impl Fn(&Request) -> Response + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let port = listener.local_addr().unwrap().port();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Arc<Handler> = Arc::new(handler);
        let seen = requests.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let handler = handler.clone();
                let seen = seen.clone();
                thread::spawn(move || serve(stream, &*handler, &seen));
            }
        });
        MockServer { port, requests }
    }

    pub(crate) fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub(crate) fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, handler: &Handler, seen: &Mutex<Vec<Request>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let target = parts.next().unwrap_or_default().to_owned();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let length: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    let _ = reader.read_exact(&mut body);
    let (path, raw_query) = target.split_once('?').unwrap_or((&target, ""));
    let query = raw_query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect();
    let request = Request {
        method,
        path: path.to_owned(),
        query,
        headers,
        body,
    };
    let response = handler(&request);
    seen.lock().unwrap().push(request);

    let reason = match response.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        _ => "Other",
    };
    let mut out = stream;
    let head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        response.status,
        response.content_type,
        response.body.len()
    );
    let _ = out.write_all(head.as_bytes());
    let _ = out.write_all(&response.body);
    let _ = out.flush();
}

/// Percent-decoding, with `+` as space (form encoding, which reqwest and kube use).
fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                out.push(u8::from_str_radix(hex, 16).unwrap());
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

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
