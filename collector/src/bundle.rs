//! The bundle writer: spool files that sources fill, and the one thread that owns the tar
//! stream and turns finished spools into archive entries.
//!
//! Sources never touch the archive. They write each entry into a private anonymous temp
//! file (a [`Spool`]) that hashes and counts lines as bytes go in, then hand the finished
//! spool to the [`BundleWriter`], which copies it into the tar stream. So nothing keeps a
//! whole log or response in memory, and entries from concurrent sources never interleave.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::thread;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sitrep_schemas::header::BundleHeader;
use sitrep_schemas::manifest::{FileRecord, Manifest, SourceRecord, Truncation};
use sitrep_schemas::{FORMAT_VERSION, paths};
use tokio::sync::{mpsc, oneshot};

/// How the tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Compression {
    /// `.tar.zst`, frame checksums on.
    Zstd,
    /// `.tar.gz`, for ticket systems that only preview gzip.
    Gzip,
}

impl Compression {
    pub(crate) fn extension(self) -> &'static str {
        match self {
            Compression::Zstd => "tar.zst",
            Compression::Gzip => "tar.gz",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum BundleError {
    #[error("cannot create the bundle in `{}`", dir.display())]
    Create {
        dir: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("`{}` already exists; a bundle never replaces a file (choose another --output)", path.display())]
    Exists { path: PathBuf },
    #[error("cannot write entry `{path}`")]
    Entry {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot finish the compressed stream")]
    Finish(#[source] io::Error),
    #[error("cannot move the bundle into place at `{}`", path.display())]
    Persist {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the bundle writer stopped early")]
    WriterGone,
}

/// A private temp file that one entry is written into before it joins the archive.
///
/// Writes are plain blocking writes to a local buffered file; they are short and
/// buffered, so they are done inline on the async task rather than on a blocking thread.
#[derive(Debug)]
pub(crate) struct Spool {
    out: BufWriter<File>,
    hasher: Sha256,
    size: u64,
    newlines: u64,
    ends_with_newline: bool,
}

impl Spool {
    pub(crate) fn new() -> io::Result<Self> {
        // An anonymous temp file is unlinked at once and created 0600, so nobody else can
        // read a half-written log and nothing is left behind on a crash.
        let file = tempfile::tempfile()?;
        Ok(Spool {
            out: BufWriter::with_capacity(64 * 1024, file),
            hasher: Sha256::new(),
            size: 0,
            newlines: 0,
            ends_with_newline: true,
        })
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.out.write_all(bytes)?;
        self.hasher.update(bytes);
        self.size += bytes.len() as u64;
        self.newlines += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        self.ends_with_newline = bytes.last() == Some(&b'\n');
        Ok(())
    }

    /// Writes one JSON value and a newline.
    pub(crate) fn write_json_line(&mut self, value: &serde_json::Value) -> io::Result<()> {
        let mut line = serde_json::to_vec(value).map_err(io::Error::other)?;
        line.push(b'\n');
        self.write(&line)
    }

    /// A spool holding one pretty JSON document.
    pub(crate) fn json_document<T: serde::Serialize>(value: &T) -> io::Result<FinishedSpool> {
        let mut spool = Spool::new()?;
        let mut text = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
        text.push(b'\n');
        spool.write(&text)?;
        spool.finish()
    }

    pub(crate) fn finish(self) -> io::Result<FinishedSpool> {
        let lines = if self.ends_with_newline {
            self.newlines
        } else {
            self.newlines + 1
        };
        let mut file = self.out.into_inner().map_err(|e| e.into_error())?;
        file.seek(SeekFrom::Start(0))?;
        Ok(FinishedSpool {
            file,
            size: self.size,
            sha256: hex(&self.hasher.finalize()),
            lines,
        })
    }
}

/// A spool that is complete and rewound, ready to be copied into the archive.
#[derive(Debug)]
pub(crate) struct FinishedSpool {
    file: File,
    pub(crate) size: u64,
    pub(crate) sha256: String,
    /// Lines, counting a last line without a newline.
    pub(crate) lines: u64,
}

impl FinishedSpool {
    /// Lets a source read back what it spooled (to count or check it) without loading
    /// it whole; the spool is rewound afterwards.
    pub(crate) fn read_back<T>(&mut self, f: impl FnOnce(&mut dyn Read) -> T) -> io::Result<T> {
        self.file.seek(SeekFrom::Start(0))?;
        let out = f(&mut io::BufReader::new(&mut self.file));
        self.file.seek(SeekFrom::Start(0))?;
        Ok(out)
    }
}

/// A spool for one container log that keeps only the newest `cap` bytes.
///
/// It writes into two segment files in turn, each at most `cap` bytes: when the current
/// one is full the older one is emptied and becomes current. The tail of the log is then
/// always the end of the previous segment followed by the current one, so disk use stays
/// under twice the cap however long the log is.
#[derive(Debug)]
pub(crate) struct TailSpool {
    cap: u64,
    segments: [File; 2],
    lens: [u64; 2],
    current: usize,
    total: u64,
}

/// What a [`TailSpool`] kept.
#[derive(Debug)]
pub(crate) struct TailKept {
    pub(crate) spool: FinishedSpool,
    /// Set when bytes were dropped.
    pub(crate) truncation: Option<Truncation>,
}

impl TailSpool {
    pub(crate) fn new(cap: u64) -> io::Result<Self> {
        Ok(TailSpool {
            cap: cap.max(1),
            segments: [tempfile::tempfile()?, tempfile::tempfile()?],
            lens: [0, 0],
            current: 0,
            total: 0,
        })
    }

    pub(crate) fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        self.total += bytes.len() as u64;
        while !bytes.is_empty() {
            if self.lens[self.current] == self.cap {
                self.current = 1 - self.current;
                let seg = &mut self.segments[self.current];
                seg.set_len(0)?;
                seg.seek(SeekFrom::Start(0))?;
                self.lens[self.current] = 0;
            }
            let room = (self.cap - self.lens[self.current]) as usize;
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.segments[self.current].write_all(now)?;
            self.lens[self.current] += now.len() as u64;
            bytes = rest;
        }
        Ok(())
    }

    /// Copies the kept tail into a spool. When bytes were dropped the cut moves forward to
    /// the next line start, so the first kept line is whole.
    pub(crate) fn finish(mut self, reason: &str) -> io::Result<TailKept> {
        let older = 1 - self.current;
        let held = self.lens[0] + self.lens[1];
        let keep = held.min(self.cap);
        let skip_in_older =
            self.lens[older] - (keep - self.lens[self.current]).min(self.lens[older]);
        let dropped_before = self.total - keep;

        // Read the kept bytes in order: the older segment's end, then the current one.
        let mut pieces: Vec<(usize, u64)> = Vec::new();
        if self.lens[older] > skip_in_older {
            pieces.push((older, skip_in_older));
        }
        pieces.push((self.current, 0));

        let mut spool = Spool::new()?;
        let mut aligning =
            dropped_before > 0 && !self.byte_before_is_newline(older, skip_in_older)?;
        let mut aligned_drop = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        for (seg, from) in pieces {
            let file = &mut self.segments[seg];
            file.seek(SeekFrom::Start(from))?;
            let mut left = self.lens[seg] - from;
            while left > 0 {
                let want = buf.len().min(left as usize);
                let n = file.read(&mut buf[..want])?;
                if n == 0 {
                    break;
                }
                left -= n as u64;
                let mut chunk = &buf[..n];
                if aligning {
                    match chunk.iter().position(|&b| b == b'\n') {
                        Some(i) => {
                            aligned_drop += i as u64 + 1;
                            chunk = &chunk[i + 1..];
                            aligning = false;
                        }
                        None => {
                            aligned_drop += n as u64;
                            continue;
                        }
                    }
                }
                spool.write(chunk)?;
            }
        }

        let dropped = dropped_before + aligned_drop;
        let truncation = (dropped > 0).then(|| Truncation {
            original_bytes: self.total,
            dropped_bytes: dropped,
            kept: "tail".to_owned(),
            reason: reason.to_owned(),
        });
        Ok(TailKept {
            spool: spool.finish()?,
            truncation,
        })
    }

    /// Whether the byte just before the kept region ends a line. Only called when bytes
    /// were dropped, so that byte exists in the older segment or just before it.
    fn byte_before_is_newline(&mut self, older: usize, skip_in_older: u64) -> io::Result<bool> {
        if skip_in_older == 0 {
            // The kept region starts at the older segment's start; its previous byte was
            // overwritten, so the first partial line cannot be proven whole.
            return Ok(false);
        }
        let file = &mut self.segments[older];
        file.seek(SeekFrom::Start(skip_in_older - 1))?;
        let mut byte = [0u8; 1];
        file.read_exact(&mut byte)?;
        Ok(byte[0] == b'\n')
    }
}

/// One finished entry on its way to the archive.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) path: String,
    pub(crate) spool: FinishedSpool,
    /// Overrides the line count (e.g. series in a Prometheus response).
    pub(crate) records: Option<u64>,
    pub(crate) truncation: Option<Truncation>,
    pub(crate) source: String,
}

/// What the collection adds to the manifest when it ends.
#[derive(Debug)]
pub(crate) struct Closing {
    pub(crate) sources: Vec<SourceRecord>,
    pub(crate) redactions: BTreeMap<String, u64>,
    pub(crate) interrupted: bool,
}

enum Message {
    Entry(Entry),
    Finish(Closing, oneshot::Sender<Result<Manifest, BundleError>>),
}

/// Handle to the writer thread. Cheap to clone; every source holds one.
#[derive(Debug, Clone)]
pub(crate) struct BundleWriter {
    tx: mpsc::Sender<Message>,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Message::Entry(e) => write!(f, "Entry({})", e.path),
            Message::Finish(..) => f.write_str("Finish"),
        }
    }
}

impl BundleWriter {
    /// Creates the temp file next to `output`, writes the header, and starts the thread
    /// that owns the archive.
    pub(crate) fn start(
        output: &Path,
        compression: Compression,
        header: &BundleHeader,
    ) -> Result<Self, BundleError> {
        let dir = match output.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let file_name = output
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sitrep-bundle".to_owned());
        let create = |source| BundleError::Create {
            dir: dir.clone(),
            source,
        };
        // Checked before anything is collected, so a taken path costs no collection;
        // the final rename refuses to replace too, for a file that appears meanwhile.
        if output.symlink_metadata().is_ok() {
            return Err(BundleError::Exists {
                path: output.to_path_buf(),
            });
        }
        let temp = tempfile::Builder::new()
            .prefix(&format!("{file_name}.tmp"))
            .tempfile_in(&dir)
            .map_err(create)?;
        let out = BufWriter::with_capacity(256 * 1024, temp.as_file().try_clone().map_err(create)?);
        let encoder = match compression {
            Compression::Zstd => {
                let mut enc = zstd::Encoder::new(out, 3).map_err(create)?;
                enc.include_checksum(true).map_err(create)?;
                Encoder::Zstd(enc)
            }
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::default(),
            )),
        };
        let mut archive = Archive {
            tar: tar::Builder::new(encoder),
            mtime: header.created_at.timestamp().max(0) as u64,
            created_at: header.created_at,
            files: Vec::new(),
        };
        let head = Spool::json_document(header).map_err(|source| BundleError::Entry {
            path: paths::HEADER.to_owned(),
            source,
        })?;
        archive.append_raw(paths::HEADER, head)?;

        let (tx, rx) = mpsc::channel(16);
        let target = output.to_path_buf();
        thread::Builder::new()
            .name("bundle-writer".to_owned())
            .spawn(move || writer_thread(archive, rx, temp, target))
            .map_err(create)?;
        Ok(BundleWriter { tx })
    }

    pub(crate) async fn append(&self, entry: Entry) -> Result<(), BundleError> {
        self.tx
            .send(Message::Entry(entry))
            .await
            .map_err(|_| BundleError::WriterGone)
    }

    /// Writes the manifest, finishes compression and renames the bundle into place.
    pub(crate) async fn finish(self, closing: Closing) -> Result<Manifest, BundleError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Message::Finish(closing, reply))
            .await
            .map_err(|_| BundleError::WriterGone)?;
        answer.await.map_err(|_| BundleError::WriterGone)?
    }
}

fn writer_thread(
    mut archive: Archive,
    mut rx: mpsc::Receiver<Message>,
    temp: tempfile::NamedTempFile,
    target: PathBuf,
) {
    // The first failed write poisons the archive; later entries are dropped and the error
    // is reported when the collection finishes, since a bundle with a gap is not valid.
    let mut failure: Option<BundleError> = None;
    while let Some(message) = rx.blocking_recv() {
        match message {
            Message::Entry(entry) => {
                if failure.is_none()
                    && let Err(e) = archive.append(entry)
                {
                    tracing::error!(stage = "bundle", error_type = "write", error = %e, "cannot write bundle entry");
                    failure = Some(e);
                }
            }
            Message::Finish(closing, reply) => {
                let result = match failure.take() {
                    Some(e) => Err(e),
                    None => archive.finish(closing, temp, &target),
                };
                let _ = reply.send(result);
                return;
            }
        }
    }
}

enum Encoder {
    Zstd(zstd::Encoder<'static, BufWriter<File>>),
    Gzip(flate2::write::GzEncoder<BufWriter<File>>),
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Zstd(e) => e.write(buf),
            Encoder::Gzip(e) => e.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Zstd(e) => e.flush(),
            Encoder::Gzip(e) => e.flush(),
        }
    }
}

impl Encoder {
    fn finish(self) -> io::Result<File> {
        let out = match self {
            Encoder::Zstd(e) => e.finish()?,
            Encoder::Gzip(e) => e.finish()?,
        };
        out.into_inner().map_err(|e| e.into_error())
    }
}

struct Archive {
    tar: tar::Builder<Encoder>,
    mtime: u64,
    created_at: DateTime<Utc>,
    files: Vec<FileRecord>,
}

impl Archive {
    fn append_raw(&mut self, path: &str, mut spool: FinishedSpool) -> Result<(), BundleError> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(spool.size);
        header.set_mode(0o600);
        header.set_mtime(self.mtime);
        header.set_uid(0);
        header.set_gid(0);
        self.tar
            .append_data(&mut header, path, &mut spool.file)
            .map_err(|source| BundleError::Entry {
                path: path.to_owned(),
                source,
            })
    }

    fn append(&mut self, entry: Entry) -> Result<(), BundleError> {
        let record = FileRecord {
            path: entry.path.clone(),
            size: entry.spool.size,
            sha256: entry.spool.sha256.clone(),
            records: Some(entry.records.unwrap_or(entry.spool.lines)),
            truncated: entry.truncation.is_some(),
            truncation: entry.truncation,
            source: entry.source,
        };
        self.append_raw(&entry.path, entry.spool)?;
        self.files.push(record);
        Ok(())
    }

    fn finish(
        mut self,
        closing: Closing,
        temp: tempfile::NamedTempFile,
        target: &Path,
    ) -> Result<Manifest, BundleError> {
        let manifest = Manifest {
            format_version: FORMAT_VERSION,
            created_at: self.created_at,
            completed_at: Utc::now(),
            interrupted: closing.interrupted,
            files: std::mem::take(&mut self.files),
            sources: closing.sources,
            redactions: closing.redactions,
        };
        let spool = Spool::json_document(&manifest).map_err(|source| BundleError::Entry {
            path: paths::MANIFEST.to_owned(),
            source,
        })?;
        self.append_raw(paths::MANIFEST, spool)?;

        let encoder = self.tar.into_inner().map_err(BundleError::Finish)?;
        let file = encoder.finish().map_err(BundleError::Finish)?;
        file.sync_all().map_err(BundleError::Finish)?;
        temp.persist_noclobber(target)
            .map_err(|e| BundleError::Persist {
                path: target.to_path_buf(),
                source: e.error,
            })?;
        Ok(manifest)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn read_all(mut spool: FinishedSpool) -> Vec<u8> {
        let mut out = Vec::new();
        spool.file.read_to_end(&mut out).unwrap();
        out
    }

    fn sha(bytes: &[u8]) -> String {
        hex(&Sha256::digest(bytes))
    }

    #[test]
    fn spool_counts_lines_and_hashes_what_it_holds() {
        let mut spool = Spool::new().unwrap();
        spool.write(b"one\ntw").unwrap();
        spool.write(b"o\nthree").unwrap();
        let done = spool.finish().unwrap();
        assert_eq!(done.size, 13);
        assert_eq!(done.lines, 3);
        assert_eq!(done.sha256, sha(b"one\ntwo\nthree"));
        assert_eq!(read_all(done), b"one\ntwo\nthree");
    }

    #[test]
    fn log_under_the_cap_is_kept_whole() {
        let mut tail = TailSpool::new(100).unwrap();
        tail.write(b"a\nbb\n").unwrap();
        let kept = tail.finish("max-log-bytes=100B").unwrap();
        assert!(kept.truncation.is_none());
        assert_eq!(read_all(kept.spool), b"a\nbb\n");
    }

    #[test]
    fn log_over_the_cap_keeps_its_tail_from_a_line_start() {
        // 10 lines of 10 bytes ("line-0000\n" …); a cap of 25 bytes holds the last 25
        // bytes, which start mid-line in line 7 at "0007\n"; that partial line goes too,
        // so lines 8 and 9 are kept: 20 bytes kept, 80 dropped.
        let mut tail = TailSpool::new(25).unwrap();
        for i in 0..10 {
            tail.write(format!("line-{i:04}\n").as_bytes()).unwrap();
        }
        let kept = tail.finish("max-log-bytes=25B").unwrap();
        let cut = kept.truncation.clone().unwrap();
        assert_eq!(read_all(kept.spool), b"line-0008\nline-0009\n");
        assert_eq!(cut.original_bytes, 100);
        assert_eq!(cut.dropped_bytes, 80);
        assert_eq!(cut.kept, "tail");
        assert_eq!(cut.reason, "max-log-bytes=25B");
    }

    #[test]
    fn log_cut_exactly_at_a_line_start_drops_no_extra_line() {
        // Cap 20 = the last two 10-byte lines exactly; the byte before them is '\n'.
        let mut tail = TailSpool::new(20).unwrap();
        for i in 0..5 {
            tail.write(format!("line-{i:04}\n").as_bytes()).unwrap();
        }
        let kept = tail.finish("cap").unwrap();
        assert_eq!(kept.truncation.as_ref().unwrap().dropped_bytes, 30);
        assert_eq!(read_all(kept.spool), b"line-0003\nline-0004\n");
    }

    #[test]
    fn log_written_in_one_large_chunk_is_cut_the_same_way() {
        let mut tail = TailSpool::new(25).unwrap();
        let text: String = (0..10).map(|i| format!("line-{i:04}\n")).collect();
        tail.write(text.as_bytes()).unwrap();
        let kept = tail.finish("cap").unwrap();
        assert_eq!(read_all(kept.spool), b"line-0008\nline-0009\n");
        assert_eq!(kept.truncation.unwrap().dropped_bytes, 80);
    }

    fn header(created_at: DateTime<Utc>) -> BundleHeader {
        BundleHeader {
            format_version: FORMAT_VERSION,
            tool: sitrep_schemas::ToolInfo {
                name: "sitrep-collect".into(),
                version: "0".into(),
            },
            created_at,
            window: sitrep_schemas::Window {
                start: created_at,
                end: created_at,
            },
            context: None,
            cluster: None,
            namespaces: vec![],
            all_namespaces: false,
        }
    }

    fn entry(path: &str, body: &[u8]) -> Entry {
        let mut spool = Spool::new().unwrap();
        spool.write(body).unwrap();
        Entry {
            path: path.into(),
            spool: spool.finish().unwrap(),
            records: None,
            truncation: None,
            source: "test".into(),
        }
    }

    fn round_trip(compression: Compression) {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join(format!("b.{}", compression.extension()));
        let created_at: DateTime<Utc> = "2026-01-02T03:04:05Z".parse().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let manifest = rt.block_on(async {
            let writer = BundleWriter::start(&out, compression, &header(created_at)).unwrap();
            writer
                .append(entry("k8s/pods.ndjson", b"{\"a\":1}\n{\"a\":2}\n"))
                .await
                .unwrap();
            writer
                .append(entry("logs/ns/p/c.log", b"hello"))
                .await
                .unwrap();
            writer
                .finish(Closing {
                    sources: vec![],
                    redactions: BTreeMap::new(),
                    interrupted: false,
                })
                .await
                .unwrap()
        });

        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "only the renamed bundle stays");

        let file = File::open(&out).unwrap();
        let reader: Box<dyn Read> = match compression {
            Compression::Zstd => Box::new(zstd::Decoder::new(file).unwrap()),
            Compression::Gzip => Box::new(flate2::read::GzDecoder::new(file)),
        };
        let mut archive = tar::Archive::new(reader);
        let mut seen = Vec::new();
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let h = e.header();
            assert_eq!(h.mode().unwrap(), 0o600, "{path}");
            assert_eq!(h.mtime().unwrap(), created_at.timestamp() as u64, "{path}");
            assert_eq!(h.uid().unwrap(), 0);
            assert_eq!(h.gid().unwrap(), 0);
            let mut body = Vec::new();
            e.read_to_end(&mut body).unwrap();
            seen.push((path, body));
        }
        let names: Vec<&str> = seen.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(
            names,
            [
                "sitrep.json",
                "k8s/pods.ndjson",
                "logs/ns/p/c.log",
                "manifest.json"
            ]
        );

        let stored: Manifest = serde_json::from_slice(&seen[3].1).unwrap();
        assert_eq!(stored, manifest);
        assert_eq!(stored.files.len(), 2);
        for (record, (path, body)) in stored.files.iter().zip(&seen[1..3]) {
            assert_eq!(&record.path, path);
            assert_eq!(record.size, body.len() as u64);
            assert_eq!(record.sha256, sha(body));
        }
        assert_eq!(stored.files[0].records, Some(2));
        assert_eq!(stored.files[1].records, Some(1));
        // SHA-256 of "hello", from the published test vectors.
        assert_eq!(
            stored.files[1].sha256,
            "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
        );
        let head: BundleHeader = serde_json::from_slice(&seen[0].1).unwrap();
        assert_eq!(head.created_at, created_at);
    }

    #[test]
    fn zstd_bundle_round_trips_header_first_manifest_last() {
        round_trip(Compression::Zstd);
    }

    #[test]
    fn gzip_bundle_round_trips_header_first_manifest_last() {
        round_trip(Compression::Gzip);
    }
}
