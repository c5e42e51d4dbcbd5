//! Keeps a VMM worker's resident set to what it uses.
//!
//! The worker is the whole `strata` binary re-executed, and the kernel maps file pages in
//! 64 KiB clusters around each fault ("fault-around"), so start-up leaves megabytes of
//! code and read-only data resident that the running VM never touches again. Once the VM
//! is running, [`trim_file_pages`] drops the page-table entries of every read-only,
//! file-backed mapping that holds no private (anonymous) pages and marks it
//! `MADV_RANDOM`, so that later faults map single pages. Nothing is lost: those pages are
//! unmodified copies of the file, still in the page cache, and fault back in on use.

/// A mapping that can be trimmed: start address and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trimmable {
    pub start: usize,
    pub len: usize,
    pub rss_kb: u64,
}

/// The read-only, file-backed mappings without anonymous pages in a `/proc/PID/smaps` text.
pub fn trimmable(smaps: &str) -> Vec<Trimmable> {
    let mut out = Vec::new();
    // (candidate, rss, anonymous) of the mapping being read.
    let mut cur: Option<(Trimmable, bool)> = None;
    let mut anon_kb = 0u64;
    let mut finish = |cur: &mut Option<(Trimmable, bool)>, anon_kb: u64| {
        if let Some((t, ok)) = cur.take() {
            if ok && anon_kb == 0 && t.rss_kb > 0 {
                out.push(t);
            }
        }
    };
    for line in smaps.lines() {
        let mut f = line.split_whitespace();
        let Some(first) = f.next() else { continue };
        if let Some((a, b)) = first.split_once('-') {
            let (Ok(start), Ok(end)) = (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            else {
                continue;
            };
            finish(&mut cur, anon_kb);
            anon_kb = 0;
            let perms = f.next().unwrap_or("");
            let path = f.nth(3).unwrap_or("");
            let ok = perms.len() == 4
                && !perms.contains('w')
                && perms.ends_with('p')
                && path.starts_with('/')
                && end > start;
            cur = Some((
                Trimmable {
                    start,
                    len: end - start,
                    rss_kb: 0,
                },
                ok,
            ));
            continue;
        }
        let value = f.next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        match first {
            "Rss:" => {
                if let Some((t, _)) = cur.as_mut() {
                    t.rss_kb = value;
                }
            }
            "Anonymous:" => anon_kb = value,
            _ => {}
        }
    }
    finish(&mut cur, anon_kb);
    out
}

/// Drops the resident pages of this process's unmodified file mappings (see the module
/// documentation). Returns the KiB released.
pub fn trim_file_pages() -> u64 {
    let Ok(smaps) = std::fs::read_to_string("/proc/self/smaps") else {
        return 0;
    };
    let mut released = 0;
    for t in trimmable(&smaps) {
        let addr = t.start as *mut libc::c_void;
        // SAFETY: the range is a whole read-only, private, file-backed mapping of this
        // process with no anonymous (copy-on-write) pages, as /proc/self/smaps listed it;
        // MADV_RANDOM only changes read-ahead, and MADV_DONTNEED on such a mapping only
        // unmaps clean page-cache pages, which the next access faults back in unchanged.
        let ok = unsafe {
            libc::madvise(addr, t.len, libc::MADV_RANDOM) == 0
                && libc::madvise(addr, t.len, libc::MADV_DONTNEED) == 0
        };
        if ok {
            released += t.rss_kb;
        }
    }
    released
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c0400000 r--p 00000000 08:01 123 /usr/bin/strata
Size:               4096 kB
Rss:                 800 kB
Anonymous:             0 kB
55d0c0400000-55d0c1000000 r-xp 00400000 08:01 123 /usr/bin/strata
Size:              12288 kB
Rss:                6000 kB
Anonymous:             0 kB
55d0c1000000-55d0c1100000 r--p 01000000 08:01 123 /usr/bin/strata
Size:               1024 kB
Rss:                1024 kB
Anonymous:           900 kB
55d0c1100000-55d0c1200000 rw-p 01100000 08:01 123 /usr/bin/strata
Size:               1024 kB
Rss:                  40 kB
Anonymous:            40 kB
7f0000000000-7f0010000000 rw-p 00000000 00:00 0
Size:             262144 kB
Rss:              100000 kB
Anonymous:        100000 kB
7f0020000000-7f0020001000 rw-s 00000000 00:0e 77 anon_inode:kvm-vcpu:0
Size:                  4 kB
Rss:                   4 kB
Anonymous:             0 kB
7f0030000000-7f0030010000 r--s 00000000 08:01 9 /some/shared/file
Size:                 64 kB
Rss:                  64 kB
Anonymous:             0 kB
7f0040000000-7f0040200000 r-xp 00000000 08:01 55 /usr/lib/x86_64-linux-gnu/libc.so.6
Size:               2048 kB
Rss:                   0 kB
Anonymous:             0 kB
7ffd00000000-7ffd00001000 r-xp 00000000 00:00 0 [vdso]
Size:                  4 kB
Rss:                   4 kB
Anonymous:             0 kB
";

    #[test]
    fn only_clean_read_only_private_file_mappings_are_trimmed() {
        let t = trimmable(SMAPS);
        assert_eq!(
            t,
            vec![
                Trimmable {
                    start: 0x55d0_c000_0000,
                    len: 0x40_0000,
                    rss_kb: 800
                },
                Trimmable {
                    start: 0x55d0_c040_0000,
                    len: 0xc0_0000,
                    rss_kb: 6000
                },
            ]
        );
    }

    #[test]
    fn garbage_lines_are_ignored() {
        assert!(trimmable("nonsense\n\nzz-yy r--p 0 0 0 /x\nRss: 5 kB\n").is_empty());
    }

    fn rss_file_kb() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap()
    }

    #[test]
    fn trimming_this_process_releases_file_pages_and_keeps_it_working() {
        let before = rss_file_kb();
        let released = trim_file_pages();
        let after = rss_file_kb();
        assert!(released > 0, "nothing trimmed");
        assert!(after < before, "RssFile {before} kB -> {after} kB");
        // The trimmed code faults back in.
        let v: Vec<u64> = (0..1000).map(|x| x * 2).collect();
        assert_eq!(v.iter().sum::<u64>(), 999_000);
    }
}
