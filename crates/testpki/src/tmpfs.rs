//! A small file system that fills up: a tmpfs mounted on a temp dir, for the tests
//! of what happens on a full disk.
//!
//! Owns: [`Tmpfs`]. Promises: it is unmounted when dropped, even when the test
//! failed with a process still using it (lazily, then); mounting needs root, and
//! without it [`Tmpfs::mount`] says why, so that a test can say it was skipped.

use std::io::Write;
use std::path::{Path, PathBuf};

/// A tmpfs of a given size mounted on a temp dir (see the module documentation).
pub struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size` (`mount -o size=`, e.g. `64k`) on a new temp dir.
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs { dir })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills it with one file (`filler`) until a write fails with "no space left";
    /// returns the file's path (remove it to free the space).
    ///
    /// # Panics
    ///
    /// When the file cannot be created, or a write fails otherwise.
    pub fn fill(&self) -> PathBuf {
        let filler = self.path().join("filler");
        let mut f = std::fs::File::create(&filler).expect("the filler file");
        let block = vec![b'x'; 4096];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::StorageFull => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status()
            .is_ok_and(|s| s.success());
        if !unmounted {
            // Still busy (a test failed with a process using it): detach it.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(self.dir.path())
                .status();
        }
    }
}
