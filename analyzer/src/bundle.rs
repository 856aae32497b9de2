//! `BundleReader`: streams a bundle's tar, checks every entry, and verifies checksums.
//!
//! Nothing is extracted to disk. Each entry's path and type are checked before its bytes
//! are trusted, its decompressed size is capped, and its sha256 is computed while the
//! loader parses it. The manifest arrives last, so entries that fail verification are
//! dropped from the loader after the fact.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::Path;

use sha2::{Digest, Sha256};
use sitrep_schemas::header::BundleHeader;
use sitrep_schemas::manifest::Manifest;
use sitrep_schemas::paths;
use sitrep_schemas::report::Problem;

/// Default cap on the decompressed bytes of one entry.
pub(crate) const DEFAULT_MAX_ENTRY_BYTES: u64 = 512 * 1024 * 1024;

/// Most bytes read past the archive's end to reach the end of the compressed stream,
/// where zstd and gzip keep their checksums. tar pads an archive to 10 KiB records, so
/// more than this is not padding, and is not read.
const TRAILING_BYTES: u64 = 1024 * 1024;

const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Why a bundle could not be read at all.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BundleError {
    // The caller's headline names the bundle, so these do not repeat its path.
    #[error("cannot open the file")]
    Open(#[source] io::Error),
    #[error("the file is neither zstd nor gzip compressed")]
    UnknownCompression,
    #[error("cannot start decompressing")]
    Decoder(#[source] io::Error),
    #[error("cannot read the archive")]
    Archive {
        #[source]
        source: io::Error,
    },
    #[error("the archive has no entries")]
    Empty,
    #[error("first entry is `{found}`, expected `{}`", paths::HEADER)]
    HeaderNotFirst { found: String },
    #[error("`{}` is larger than the cap of {cap} bytes", paths::HEADER)]
    HeaderTooLarge { cap: u64 },
    #[error("cannot parse `{}`", paths::HEADER)]
    Header {
        #[source]
        source: serde_json::Error,
    },
    #[error("bundle format version {found} is not supported (this analyzer reads version {known})")]
    UnknownFormatVersion { found: String, known: u32 },
}

/// Receives the verified-as-they-come entries of a bundle.
pub(crate) trait EntrySink {
    /// Parses one entry from `reader`; line-level faults come back as problems.
    fn entry(&mut self, path: &str, reader: &mut dyn BufRead) -> Vec<Problem>;
    /// Forgets everything parsed from `path`: it failed verification.
    fn discard(&mut self, path: &str);
}

/// What the reader learned about the archive itself.
#[derive(Debug)]
pub(crate) struct BundleContents {
    pub(crate) header: BundleHeader,
    pub(crate) manifest: Option<Manifest>,
    pub(crate) problems: Vec<Problem>,
}

#[derive(Debug, Clone)]
pub(crate) struct BundleReader {
    max_entry_bytes: u64,
}

impl BundleReader {
    pub(crate) fn new(max_entry_bytes: u64) -> Self {
        BundleReader { max_entry_bytes }
    }

    pub(crate) fn read(
        &self,
        path: &Path,
        sink: &mut dyn EntrySink,
    ) -> Result<BundleContents, BundleError> {
        let file = File::open(path).map_err(BundleError::Open)?;
        let mut input = BufReader::new(file);
        let magic = input.fill_buf().map_err(BundleError::Open)?;
        let decoder: Box<dyn Read> = if magic.starts_with(&ZSTD_MAGIC) {
            Box::new(zstd::Decoder::with_buffer(input).map_err(BundleError::Decoder)?)
        } else if magic.starts_with(&GZIP_MAGIC) {
            Box::new(flate2::bufread::GzDecoder::new(input))
        } else {
            return Err(BundleError::UnknownCompression);
        };
        self.read_archive(tar::Archive::new(decoder), sink)
    }

    fn read_archive<R: Read>(
        &self,
        mut archive: tar::Archive<R>,
        sink: &mut dyn EntrySink,
    ) -> Result<BundleContents, BundleError> {
        let mut entries = archive
            .entries()
            .map_err(|source| BundleError::Archive { source })?;
        let first = entries
            .next()
            .ok_or(BundleError::Empty)?
            .map_err(|source| BundleError::Archive { source })?;
        let header = self.read_header(first)?;

        let mut problems = Vec::new();
        let mut manifest = None;
        let mut hashed: BTreeMap<String, (String, u64)> = BTreeMap::new();
        let mut seen = BTreeSet::new();
        let mut torn = false;
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(error) => {
                    // A torn stream still leaves whatever came before it usable.
                    problems.push(problem(
                        "bundle",
                        format!("archive is corrupt after this point: {error}"),
                    ));
                    torn = true;
                    break;
                }
            };
            let Some(name) = self.admit(&entry, &mut problems) else {
                continue;
            };
            // The collector writes each name once. A later copy would replace what was
            // parsed from the first, which is the one the manifest's checksum describes.
            if !seen.insert(name.clone()) {
                problems.push(problem(
                    &name,
                    "a second entry with this name was ignored; the first is kept".into(),
                ));
                continue;
            }
            if name == paths::MANIFEST {
                match self.read_manifest(entry) {
                    Ok(parsed) => manifest = Some(parsed),
                    Err(message) => problems.push(problem(&name, message)),
                }
                continue;
            }
            if name == paths::HEADER {
                problems.push(problem(&name, "a second header entry was ignored".into()));
                continue;
            }
            let mut capped = CappedHasher::new(entry, self.max_entry_bytes);
            let mut buffered = BufReader::new(&mut capped);
            let parse_problems = sink.entry(&name, &mut buffered);
            // The hash must cover the whole entry even when the parser stopped early.
            let drained = io::copy(&mut buffered, &mut io::sink());
            drop(buffered);
            // An entry dropped whole is one problem; what its parser said about it (the
            // same read error, lines that are discarded anyway) would only repeat it.
            if capped.over_cap {
                sink.discard(&name);
                problems.push(problem(
                    &name,
                    format!(
                        "entry is larger than the cap of {} bytes; skipped",
                        self.max_entry_bytes
                    ),
                ));
                continue;
            }
            if let Err(error) = drained {
                sink.discard(&name);
                problems.push(problem(&name, format!("cannot read entry: {error}")));
                continue;
            }
            problems.extend(parse_problems);
            hashed.insert(name, (capped.hex_digest(), capped.read));
        }

        // tar stops at its end marker, before the compressed stream's own end: a cut
        // checksum or bytes appended after the frame would otherwise go unnoticed, and
        // the frame checksum is all that vouches for the manifest.
        if !torn {
            let mut rest = archive.into_inner().take(TRAILING_BYTES + 1);
            match io::copy(&mut rest, &mut io::sink()) {
                Ok(read) if read > TRAILING_BYTES => problems.push(problem(
                    "bundle",
                    format!("more than {TRAILING_BYTES} bytes follow the archive's end; not read"),
                )),
                Ok(_) => {}
                Err(error) => problems.push(problem(
                    "bundle",
                    format!("the compressed stream is damaged after the archive's end: {error}"),
                )),
            }
        }

        match &manifest {
            Some(manifest) => verify(manifest, &hashed, &seen, sink, &mut problems),
            None => problems.push(problem(
                paths::MANIFEST,
                "no readable manifest; no entry could be verified".into(),
            )),
        }
        Ok(BundleContents {
            header,
            manifest,
            problems,
        })
    }

    /// Checks an entry's path and type; `None` means it was refused (and why is recorded).
    fn admit<R: Read>(
        &self,
        entry: &tar::Entry<'_, R>,
        problems: &mut Vec<Problem>,
    ) -> Option<String> {
        let raw = entry.path_bytes();
        let Ok(name) = std::str::from_utf8(&raw).map(str::to_owned) else {
            problems.push(problem(
                &String::from_utf8_lossy(&raw),
                "entry path is not UTF-8; skipped".into(),
            ));
            return None;
        };
        let kind = entry.header().entry_type();
        if kind.is_dir() {
            // `tar -cf` of an extracted bundle writes one per folder; it holds no data and
            // nothing is ever extracted, so there is nothing to refuse.
            tracing::debug!(stage = "read", path = %name, "directory entry ignored");
            return None;
        }
        if let Err(why) = paths::check_entry_path(&name) {
            problems.push(problem(&name, format!("{why}; entry skipped")));
            return None;
        }
        if !kind.is_file() {
            problems.push(problem(
                &name,
                format!("entry is not a regular file ({kind:?}); skipped"),
            ));
            return None;
        }
        Some(name)
    }

    fn read_header<R: Read>(&self, entry: tar::Entry<'_, R>) -> Result<BundleHeader, BundleError> {
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if name != paths::HEADER {
            return Err(BundleError::HeaderNotFirst { found: name });
        }
        let mut bytes = Vec::new();
        // One byte past the cap tells a header over it from one that fits exactly.
        entry
            .take(self.max_entry_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|source| BundleError::Archive { source })?;
        if bytes.len() as u64 > self.max_entry_bytes {
            return Err(BundleError::HeaderTooLarge {
                cap: self.max_entry_bytes,
            });
        }
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|source| BundleError::Header { source })?;
        let version = value.get("format_version");
        if version.and_then(serde_json::Value::as_u64)
            != Some(u64::from(sitrep_schemas::FORMAT_VERSION))
        {
            return Err(BundleError::UnknownFormatVersion {
                found: version.map_or_else(|| "(missing)".to_owned(), ToString::to_string),
                known: sitrep_schemas::FORMAT_VERSION,
            });
        }
        serde_json::from_value(value).map_err(|source| BundleError::Header { source })
    }

    fn read_manifest<R: Read>(&self, entry: tar::Entry<'_, R>) -> Result<Manifest, String> {
        let mut bytes = Vec::new();
        entry
            .take(self.max_entry_bytes.saturating_add(1))
            .read_to_end(&mut bytes)
            .map_err(|error| format!("cannot read manifest: {error}"))?;
        if bytes.len() as u64 > self.max_entry_bytes {
            return Err(format!(
                "manifest is larger than the cap of {} bytes",
                self.max_entry_bytes
            ));
        }
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|error| format!("cannot parse manifest: {error}"))?;
        // Another version may mean other things by the same fields; its checksums are
        // not taken on trust, as the header's version is not.
        if manifest.format_version != sitrep_schemas::FORMAT_VERSION {
            return Err(format!(
                "manifest format version {} is not supported (this analyzer reads version {})",
                manifest.format_version,
                sitrep_schemas::FORMAT_VERSION
            ));
        }
        Ok(manifest)
    }
}

/// Checks the hashed entries against the manifest; `seen` are all the entries read,
/// including those already skipped with a problem of their own.
fn verify(
    manifest: &Manifest,
    hashed: &BTreeMap<String, (String, u64)>,
    seen: &BTreeSet<String>,
    sink: &mut dyn EntrySink,
    problems: &mut Vec<Problem>,
) {
    let listed: BTreeMap<&str, _> = manifest
        .files
        .iter()
        .map(|record| (record.path.as_str(), record))
        .collect();
    for (name, (digest, size)) in hashed {
        match listed.get(name.as_str()) {
            None => {
                sink.discard(name);
                problems.push(problem(
                    name,
                    "entry is not listed in the manifest; skipped".into(),
                ));
            }
            Some(record) if !record.sha256.eq_ignore_ascii_case(digest) => {
                sink.discard(name);
                problems.push(problem(
                    name,
                    format!(
                        "checksum mismatch: manifest says sha256 {}, entry hashes to {digest}; skipped",
                        record.sha256
                    ),
                ));
            }
            Some(record) if record.size != *size => {
                sink.discard(name);
                problems.push(problem(
                    name,
                    format!(
                        "size mismatch: manifest says {} bytes, entry has {size}; skipped",
                        record.size
                    ),
                ));
            }
            Some(_) => {}
        }
    }
    for record in &manifest.files {
        if !seen.contains(&record.path) {
            problems.push(problem(
                &record.path,
                "listed in the manifest but missing from the archive".into(),
            ));
        }
    }
}

pub(crate) fn problem(file: &str, message: String) -> Problem {
    Problem {
        file: file.to_owned(),
        line: None,
        field: None,
        message,
    }
}

/// Hashes what passes through and refuses to read past a byte cap.
struct CappedHasher<R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    cap: u64,
    over_cap: bool,
}

impl<R: Read> CappedHasher<R> {
    fn new(inner: R, cap: u64) -> Self {
        CappedHasher {
            inner,
            hasher: Sha256::new(),
            read: 0,
            cap,
            over_cap: false,
        }
    }

    fn hex_digest(&self) -> String {
        self.hasher
            .clone()
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

impl<R: Read> Read for CappedHasher<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.read >= self.cap {
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.over_cap = true;
            return Err(io::Error::other("entry exceeds the size cap"));
        }
        let room = usize::try_from(self.cap - self.read).unwrap_or(usize::MAX);
        let limit = buf.len().min(room);
        let n = self.inner.read(&mut buf[..limit])?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Default)]
    struct Recorder {
        kept: BTreeMap<String, Vec<u8>>,
    }

    impl EntrySink for Recorder {
        fn entry(&mut self, path: &str, reader: &mut dyn BufRead) -> Vec<Problem> {
            let mut bytes = Vec::new();
            let _ = reader.read_to_end(&mut bytes);
            self.kept.insert(path.to_owned(), bytes);
            Vec::new()
        }

        fn discard(&mut self, path: &str) {
            self.kept.remove(path);
        }
    }

    fn header_json(version: u32) -> Vec<u8> {
        serde_json::json!({
            "format_version": version,
            "tool": {"name": "sitrep-collect", "version": "0.1.0"},
            "created_at": "2026-12-04T14:00:00Z",
            "window": {"start": "2026-12-04T11:00:00Z", "end": "2026-12-04T14:00:00Z"},
            "context": null, "cluster": null, "namespaces": [], "all_namespaces": true
        })
        .to_string()
        .into_bytes()
    }

    fn append(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        // `set_path` refuses `..`, which is exactly what these tests need to write.
        let name = header.as_old_mut();
        name.name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }

    fn read(builder: tar::Builder<Vec<u8>>, cap: u64) -> (BundleContents, Recorder) {
        let bytes = builder.into_inner().unwrap();
        let mut sink = Recorder::default();
        let contents = BundleReader::new(cap)
            .read_archive(tar::Archive::new(bytes.as_slice()), &mut sink)
            .unwrap();
        (contents, sink)
    }

    #[test]
    fn refuses_paths_that_climb_out_or_are_unknown() {
        let mut builder = tar::Builder::new(Vec::new());
        append(&mut builder, "sitrep.json", &header_json(1));
        append(&mut builder, "logs/../../etc/passwd", b"x");
        append(&mut builder, "/etc/passwd", b"x");
        append(&mut builder, "secrets/token", b"x");
        append(&mut builder, "k8s/pods.ndjson", b"{}\n");
        let (contents, sink) = read(builder, 1024);

        let refused: Vec<&str> = contents
            .problems
            .iter()
            .filter(|p| p.message.contains("skipped"))
            .map(|p| p.file.as_str())
            .collect();
        assert_eq!(
            refused,
            ["logs/../../etc/passwd", "/etc/passwd", "secrets/token"]
        );
        // No manifest, so nothing is dropped for verification; only the safe entry was read.
        assert_eq!(sink.kept.keys().collect::<Vec<_>>(), ["k8s/pods.ndjson"]);
    }

    #[test]
    fn caps_the_bytes_read_per_entry() {
        let mut builder = tar::Builder::new(Vec::new());
        append(&mut builder, "sitrep.json", &header_json(1));
        append(&mut builder, "k8s/pods.ndjson", &[b'a'; 2048]);
        let (contents, sink) = read(builder, 1024);
        assert!(sink.kept.is_empty());
        assert!(
            contents.problems[0]
                .message
                .contains("larger than the cap of 1024 bytes")
        );
    }

    #[test]
    fn an_unknown_format_version_is_fatal() {
        let mut builder = tar::Builder::new(Vec::new());
        append(&mut builder, "sitrep.json", &header_json(99));
        let bytes = builder.into_inner().unwrap();
        let error = BundleReader::new(1024)
            .read_archive(
                tar::Archive::new(bytes.as_slice()),
                &mut Recorder::default(),
            )
            .unwrap_err();
        assert!(matches!(
            error,
            BundleError::UnknownFormatVersion { ref found, known: 1 } if found == "99"
        ));
    }

    #[test]
    fn the_hasher_matches_a_known_digest() {
        // sha256("abc"), from FIPS 180-2's examples.
        let mut hasher = CappedHasher::new(&b"abc"[..], 10);
        io::copy(&mut hasher, &mut io::sink()).unwrap();
        assert_eq!(
            hasher.hex_digest(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
