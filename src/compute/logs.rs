//! A VM's log files (its serial console, the VMM worker's own log) are kept bounded:
//! a guest printing without end, or provoking warnings, cannot fill the node's data
//! disk (which would stop Raft on that node). Their writers append (`O_APPEND`), so a
//! file can be emptied under them: the agent checks each running VM's logs and, past
//! [`MAX_LOG_BYTES`], moves the content to `<name>.1` (replacing the older copy) and
//! empties the file. Readers that find a file shorter than their offset start over.

use std::path::{Path, PathBuf};

/// Largest size of one log file; with its `.1` copy a VM holds at most twice this.
pub const MAX_LOG_BYTES: u64 = 8 << 20;

/// Keeps `path` under `max` bytes; true when it was rotated.
pub fn bound_log(path: &Path, max: u64) -> std::io::Result<bool> {
    let len = match std::fs::metadata(path) {
        Ok(m) => m.len(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    if len <= max {
        return Ok(false);
    }
    let old = rotated(path);
    std::fs::copy(path, &old)?;
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .set_len(0)?;
    Ok(true)
}

/// Where the previous content of a log goes.
pub fn rotated(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".1");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_log_past_its_bound_is_moved_aside_and_its_appending_writer_goes_on() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("console.log");
        let mut w = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&p)
            .unwrap();
        w.write_all(&[b'a'; 1000]).unwrap();
        assert!(!bound_log(&p, 1000).unwrap(), "rotated at the bound");
        w.write_all(b"b").unwrap();
        assert!(bound_log(&p, 1000).unwrap());
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0);
        assert_eq!(std::fs::metadata(rotated(&p)).unwrap().len(), 1001);
        // The writer appends at the new end: no hole where the old content was.
        w.write_all(b"next").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"next");
        assert!(!bound_log(&d.path().join("missing"), 1).unwrap());
    }
}
