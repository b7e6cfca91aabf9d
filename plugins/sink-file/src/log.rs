//! The log on disk: the current file, its rotated predecessors, and reading them
//! back from the end.
//!
//! Owns: the file names (`<name>` is current, `<name>.1` the newest rotated file,
//! `<name>.<keep>` the oldest), appending with size-based rotation, repairing a torn
//! last line, what a slot of the log may hold ([`check_slot`]), the seam where bytes
//! reach a file ([`FileWriter`]), and [`RevLines`] (a file's lines, last first,
//! without reading it all).
//!
//! Promises:
//! - Only complete lines are ever left in a file by this module: a failed write is
//!   cut back to the last complete line, and [`AppendError::written`] says how many
//!   bytes of the batch did reach the log (always whole lines), so a retry writes
//!   the rest and nothing twice; a crash can leave a torn last line in the current
//!   file only, and [`repair_tail`] removes it.
//! - A file grows past `max_bytes` only when a single line is longer than that:
//!   lines are never split across files, and a batch that does not fit is split at
//!   a line boundary, the rest going to a fresh file.
//! - Rotation renames (`<name>` → `<name>.1` → ... → `<name>.<keep>`, the oldest
//!   dropped); with `keep = 0` the full file is dropped. It only ever renames or
//!   removes regular files with exactly these names: a slot holding anything else
//!   (a symlink, a directory, a FIFO) stops the rotation with an error naming it,
//!   before anything is touched, and other files in the directory are never
//!   looked at. A current file that is not a regular file (a FIFO) is written to
//!   and never rotated. When syncing is on, the file is synced before it is
//!   renamed, and the directory after.
//! - Nothing here reads a file that is not a regular file (a FIFO target is written
//!   to, never read back).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// How much of a file [`RevLines`] reads at a time.
const CHUNK: usize = 64 * 1024;
/// A "line" longer than this is not a line of this log: reading back stops there.
pub const MAX_LINE: usize = 16 * 1024 * 1024;

/// The path of the current file (`index` 0) or of rotated file `index`.
pub fn file_path(dir: &Path, name: &str, index: u32) -> PathBuf {
    match index {
        0 => dir.join(name),
        i => dir.join(format!("{name}.{i}")),
    }
}

/// Whether `path` is a regular file (not missing, not a FIFO or device).
pub fn is_regular(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.is_file())
}

/// What a file type is, in words (for errors).
pub fn kind_of(file_type: fs::FileType) -> &'static str {
    if file_type.is_file() {
        "a regular file"
    } else if file_type.is_dir() {
        "a directory"
    } else if file_type.is_symlink() {
        "a symbolic link"
    } else if file_type.is_fifo() {
        "a FIFO"
    } else if file_type.is_char_device() {
        "a character device"
    } else if file_type.is_block_device() {
        "a block device"
    } else if file_type.is_socket() {
        "a socket"
    } else {
        "not a regular file"
    }
}

/// Checks a slot of the log (without following a symlink): `Ok` when it is free
/// or a regular file, or (with `fifo_ok`, for the current file) a FIFO; else an
/// error naming it and what it is: the log never writes through, renames or
/// removes what it did not create.
pub fn check_slot(path: &Path, fifo_ok: bool) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(meta) if fifo_ok && meta.file_type().is_fifo() => Ok(()),
        Ok(meta) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is {}, not a file of this log: it is left alone (move it away)",
                path.display(),
                kind_of(meta.file_type())
            ),
        )),
    }
}

/// Removes a torn last line (bytes after the last `\n`) from the regular file at
/// `path`; returns how many bytes were removed (0 if none, or if it is not a
/// regular file).
pub fn repair_tail(path: &Path) -> io::Result<u64> {
    if !fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
        return Ok(0);
    }
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    let mut lines = RevLines::new(file.try_clone()?)?;
    let keep = lines.complete_len()?;
    if keep == len {
        return Ok(0);
    }
    file.set_len(keep)?;
    file.sync_all()?;
    Ok(len - keep)
}

/// Where bytes reach the current file: the seam a test puts a failing disk in.
pub trait FileWriter: Send {
    /// Writes all of `bytes` to `file` (appending), or fails; on failure, any part
    /// that was written is cut back by the caller.
    fn write_all(&mut self, file: &mut File, bytes: &[u8]) -> io::Result<()>;
}

/// The real thing: [`Write::write_all`].
#[derive(Debug, Default, Clone, Copy)]
pub struct DirectWriter;

impl FileWriter for DirectWriter {
    fn write_all(&mut self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
        file.write_all(bytes)
    }
}

/// A batch that did not all reach the log.
#[derive(Debug, thiserror::Error)]
#[error("{source}")]
pub struct AppendError {
    /// How many bytes of the batch are in the log (whole lines; the rest is not).
    pub written: usize,
    /// Why the rest is not.
    pub source: io::Error,
}

/// An open log: appends lines, rotates by size.
pub struct LogFile {
    dir: PathBuf,
    name: String,
    max_bytes: u64,
    keep: u32,
    sync: bool,
    file: Option<File>,
    /// Whether the current file is a regular file (else it is written, never rotated).
    regular: bool,
    /// Bytes in the current file that are complete lines.
    size: u64,
    writer: Box<dyn FileWriter>,
}

impl LogFile {
    /// Opens (creating the file if needed) the log `dir/name` in the existing
    /// directory `dir`. Call [`repair_tail`] first: a torn last line is not
    /// removed here.
    pub fn open(dir: &Path, name: &str, max_bytes: u64, keep: u32, sync: bool) -> io::Result<Self> {
        let mut log = LogFile {
            dir: dir.to_owned(),
            name: name.to_owned(),
            max_bytes,
            keep,
            sync,
            file: None,
            regular: true,
            size: 0,
            writer: Box::new(DirectWriter),
        };
        log.reopen()?;
        Ok(log)
    }

    /// Replaces where the bytes are written (a test's failing disk).
    pub fn set_writer(&mut self, writer: Box<dyn FileWriter>) {
        self.writer = writer;
    }

    /// The current file's path.
    pub fn path(&self) -> PathBuf {
        file_path(&self.dir, &self.name, 0)
    }

    fn reopen(&mut self) -> io::Result<()> {
        let path = self.path();
        check_slot(&path, true)?;
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let meta = file.metadata()?;
        self.regular = meta.is_file();
        self.size = if self.regular { meta.len() } else { 0 };
        self.file = Some(file);
        Ok(())
    }

    /// Appends complete lines (`bytes` ends with `\n`), rotating as needed. On an
    /// error, the current file is cut back to its last complete line and the error
    /// says how much of `bytes` is in the log.
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), AppendError> {
        let mut done = 0;
        while done < bytes.len() {
            let rest = &bytes[done..];
            let room = if self.regular {
                self.max_bytes.saturating_sub(self.size) as usize
            } else {
                usize::MAX
            };
            let take = if rest.len() <= room {
                rest.len()
            } else {
                match rest[..room].iter().rposition(|b| *b == b'\n') {
                    Some(k) => k + 1,
                    None if self.size == 0 => {
                        // One line longer than a whole file: it gets a file of its own.
                        rest.iter()
                            .position(|b| *b == b'\n')
                            .map_or(rest.len(), |k| k + 1)
                    }
                    None => 0,
                }
            };
            let result = if take == 0 {
                self.rotate()
            } else {
                self.write(&rest[..take])
            };
            match result {
                Ok(()) => done += take,
                Err(source) => {
                    return Err(AppendError {
                        written: done,
                        source,
                    })
                }
            }
        }
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            self.reopen()?;
        }
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("the log file is not open"));
        };
        match self.writer.write_all(file, bytes) {
            Ok(()) => {
                self.size += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Leave no partial line behind. If even that fails, reopen before
                // the next write, so that the size is read again.
                if self.regular && file.set_len(self.size).is_err() {
                    self.file = None;
                }
                Err(e)
            }
        }
    }

    /// Opens the current file again and reads its size (after it was cut back
    /// behind this handle's back: [`crate::cut`]).
    pub fn reopen_current(&mut self) -> io::Result<()> {
        self.file = None;
        self.reopen()
    }

    /// Forces what was written to disk.
    pub fn sync(&mut self) -> io::Result<()> {
        match &self.file {
            Some(file) if self.regular => file.sync_data(),
            _ => Ok(()),
        }
    }

    /// Closes the current file, shifts the rotated ones and starts a fresh one.
    /// Every slot is checked first: nothing is renamed or removed unless all of
    /// them hold regular files (or nothing).
    pub fn rotate(&mut self) -> io::Result<()> {
        if !self.regular {
            return Ok(());
        }
        let current = self.path();
        for i in 0..=self.keep {
            check_slot(&file_path(&self.dir, &self.name, i), false)?;
        }
        if let Some(file) = self.file.take() {
            if self.sync {
                file.sync_data()?;
            }
        }
        if self.keep == 0 {
            remove_if_exists(&current)?;
        } else {
            remove_if_exists(&file_path(&self.dir, &self.name, self.keep))?;
            for i in (1..self.keep).rev() {
                rename_if_exists(
                    &file_path(&self.dir, &self.name, i),
                    &file_path(&self.dir, &self.name, i + 1),
                )?;
            }
            rename_if_exists(&current, &file_path(&self.dir, &self.name, 1))?;
        }
        self.reopen()?;
        if self.sync {
            // Make the renames durable too (not possible everywhere: best effort).
            if let Ok(dir) = File::open(&self.dir) {
                let _ = dir.sync_all();
            }
        }
        Ok(())
    }
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn rename_if_exists(from: &Path, to: &Path) -> io::Result<()> {
    match fs::rename(from, to) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The lines of a file, last first, read from the end in chunks (so reading the
/// tail of a large file costs only the tail). Lines are returned without their
/// `\n`; a last line without `\n` (torn) is returned too; empty lines are skipped.
pub struct RevLines {
    file: File,
    /// File offset of `buf[0]`.
    pos: u64,
    /// Unreturned bytes `file[pos..pos + buf.len()]`.
    buf: Vec<u8>,
}

impl RevLines {
    /// Reads `file` from its end.
    pub fn new(mut file: File) -> io::Result<Self> {
        let len = file.seek(SeekFrom::End(0))?;
        Ok(RevLines {
            file,
            pos: len,
            buf: Vec::new(),
        })
    }

    /// Opens `path` (a regular file) and reads it from its end.
    pub fn open(path: &Path) -> io::Result<Self> {
        RevLines::new(File::open(path)?)
    }

    /// Reads more of the file before `buf`; false at the start of the file.
    fn fill(&mut self) -> io::Result<bool> {
        if self.pos == 0 {
            return Ok(false);
        }
        if self.buf.len() > MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a line longer than {MAX_LINE} bytes: not a log of events"),
            ));
        }
        let n = CHUNK.min(self.pos as usize);
        self.pos -= n as u64;
        let mut chunk = vec![0; n];
        self.file.seek(SeekFrom::Start(self.pos))?;
        self.file.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&self.buf);
        self.buf = chunk;
        Ok(true)
    }

    /// The length of the file up to and including its last `\n` (what is left
    /// once a torn last line is removed). Call before reading any line.
    pub fn complete_len(&mut self) -> io::Result<u64> {
        loop {
            if let Some(k) = self.buf.iter().rposition(|b| *b == b'\n') {
                return Ok(self.pos + k as u64 + 1);
            }
            if !self.fill()? {
                return Ok(0);
            }
        }
    }

    /// The previous line and the offset in the file where it starts, `None` at
    /// the start of the file.
    pub fn next_line_at(&mut self) -> io::Result<Option<(u64, Vec<u8>)>> {
        let line = self.next_line()?;
        // What is left in `buf` is the file before the line.
        Ok(line.map(|line| (self.pos + self.buf.len() as u64, line)))
    }

    /// The previous line, `None` at the start of the file.
    pub fn next_line(&mut self) -> io::Result<Option<Vec<u8>>> {
        loop {
            // Drop the `\n` that ends the line to return (or empty lines).
            while self.buf.last() == Some(&b'\n') {
                self.buf.pop();
            }
            if let Some(k) = self.buf.iter().rposition(|b| *b == b'\n') {
                let line = self.buf.split_off(k + 1);
                return Ok(Some(line));
            }
            if !self.fill()? {
                if self.buf.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(std::mem::take(&mut self.buf)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_last_first(content: &[u8]) -> Vec<String> {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        fs::write(&path, content).expect("write");
        let mut rev = RevLines::open(&path).expect("open");
        let mut out = Vec::new();
        while let Some(line) = rev.next_line().expect("read") {
            out.push(String::from_utf8_lossy(&line).into_owned());
        }
        out
    }

    #[test]
    fn lines_come_back_last_first_across_chunks() {
        let mut content = Vec::new();
        for i in 0..20_000 {
            content.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let got = lines_last_first(&content);
        assert_eq!(got.len(), 20_000);
        assert_eq!(got[0], "line 19999");
        assert_eq!(got[19_999], "line 0");
    }

    #[test]
    fn each_line_comes_back_with_the_offset_where_it_starts() {
        let mut content = Vec::new();
        for i in 0..20_000 {
            content.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("f");
        fs::write(&path, &content).expect("write");
        let mut lines = RevLines::open(&path).expect("open");
        let mut n = 0;
        while let Some((at, line)) = lines.next_line_at().expect("read") {
            let at = at as usize;
            assert_eq!(&content[at..at + line.len()], &line[..]);
            assert!(at == 0 || content[at - 1] == b'\n', "starts a line: {at}");
            n += 1;
        }
        assert_eq!(n, 20_000);
    }

    #[test]
    fn a_torn_last_line_is_returned_and_empty_lines_are_skipped() {
        assert_eq!(lines_last_first(b"a\n\nb\nto"), ["to", "b", "a"]);
        assert!(lines_last_first(b"").is_empty());
    }

    #[test]
    fn repair_removes_only_the_bytes_after_the_last_newline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("f");
        fs::write(&path, b"{\"a\":1}\n{\"b\":").expect("write");
        assert_eq!(repair_tail(&path).expect("repair"), 5);
        assert_eq!(fs::read(&path).expect("read"), b"{\"a\":1}\n");
        assert_eq!(repair_tail(&path).expect("repair"), 0);
        fs::write(&path, b"no newline at all").expect("write");
        assert_eq!(repair_tail(&path).expect("repair"), 17);
        assert_eq!(fs::read(&path).expect("read"), b"");
    }

    #[test]
    fn rotation_keeps_k_files_and_never_splits_a_line() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogFile::open(dir.path(), "x.log", 10, 2, false).expect("open");
        // 4-byte lines: two fit in a 10-byte file, a third does not.
        for i in 0..7 {
            log.append(format!("ab{i}\n").as_bytes()).expect("append");
        }
        let read = |i| fs::read_to_string(file_path(dir.path(), "x.log", i)).unwrap_or_default();
        assert_eq!(read(0), "ab6\n");
        assert_eq!(read(1), "ab4\nab5\n");
        assert_eq!(read(2), "ab2\nab3\n");
        assert!(!file_path(dir.path(), "x.log", 3).exists(), "only 2 kept");
        // A batch that does not fit is split at a line boundary.
        log.append(b"c1\nc2\nc3\nc4\n").expect("append");
        assert_eq!(read(0), "c3\nc4\n");
        assert_eq!(read(1), "ab6\nc1\nc2\n");
    }

    #[test]
    fn rotation_leaves_foreign_files_alone_and_never_replaces_a_symlink_out_of_the_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let target = outside.path().join("important");
        fs::write(&target, b"keep me").expect("write");
        fs::write(dir.path().join("notes.txt"), b"mine").expect("write");
        fs::write(dir.path().join("x.log.old"), b"mine too").expect("write");
        fs::write(dir.path().join("x.log.9"), b"beyond keep").expect("write");
        let mut log = LogFile::open(dir.path(), "x.log", 10, 2, false).expect("open");
        for i in 0..7 {
            log.append(format!("ab{i}\n").as_bytes()).expect("append");
        }
        // Someone put a symlink where the oldest rotated file goes.
        let slot = file_path(dir.path(), "x.log", 2);
        fs::remove_file(&slot).expect("rm");
        std::os::unix::fs::symlink(&target, &slot).expect("symlink");
        let err = log.append(b"ab7\nab8\n").expect_err("rotation refused");
        assert!(
            err.to_string().contains(&slot.display().to_string()),
            "names it: {err}"
        );
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(err.written, 4, "ab7 fitted before the rotation");
        assert!(fs::symlink_metadata(&slot)
            .expect("still there")
            .is_symlink());
        assert_eq!(fs::read(&target).expect("read"), b"keep me");
        // Nothing moved: the current and newest rotated files are as they were.
        let read = |i| fs::read_to_string(file_path(dir.path(), "x.log", i)).unwrap_or_default();
        assert_eq!(
            (read(0), read(1)),
            ("ab6\nab7\n".to_owned(), "ab4\nab5\n".to_owned())
        );
        for (name, content) in [
            ("notes.txt", "mine"),
            ("x.log.old", "mine too"),
            ("x.log.9", "beyond keep"),
        ] {
            assert_eq!(
                fs::read_to_string(dir.path().join(name)).expect(name),
                content
            );
        }
    }

    #[test]
    fn a_failed_write_is_cut_back_and_says_how_much_of_the_batch_is_in_the_log() {
        struct FailSecond(u32);
        impl FileWriter for FailSecond {
            fn write_all(&mut self, file: &mut File, bytes: &[u8]) -> io::Result<()> {
                self.0 += 1;
                if self.0 == 2 {
                    file.write_all(&bytes[..1])?;
                    return Err(io::Error::other("disk on fire"));
                }
                file.write_all(bytes)
            }
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut log = LogFile::open(dir.path(), "x.log", 10, 2, false).expect("open");
        log.set_writer(Box::new(FailSecond(0)));
        // Two lines fit in the first file; the third goes to a fresh one and fails.
        let err = log.append(b"ab1\nab2\nab3\n").expect_err("fails");
        assert_eq!(err.written, 8);
        assert_eq!(
            fs::read(file_path(dir.path(), "x.log", 1)).expect("read"),
            b"ab1\nab2\n"
        );
        assert_eq!(
            fs::read(file_path(dir.path(), "x.log", 0)).expect("read"),
            b""
        );
        log.append(b"ab3\n").expect("works again");
        assert_eq!(
            fs::read(file_path(dir.path(), "x.log", 0)).expect("read"),
            b"ab3\n"
        );
    }
}
