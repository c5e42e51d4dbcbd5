//! Process limits set at start. A node keeps files open for the extents in use of every
//! region it serves (a bounded set, see `storage::extent::open`), a socket per client and
//! per peer: the kernel's default of 1,024 open files is far too few, so the soft limit is raised to the hard one, and the hard one (as
//! root) to what the kernel allows.

use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};

/// Open files a node wants at least.
pub const WANTED_OPEN_FILES: u64 = 65_536;
/// What it asks for when it may raise the hard limit.
const ASKED_OPEN_FILES: u64 = 1 << 20;

/// Raises the open-file limit; returns the limit now in force, and a warning naming
/// the cause when it stays below [`WANTED_OPEN_FILES`].
pub fn raise_open_files() -> (u64, Option<String>) {
    let cur = getrlimit(Resource::Nofile);
    let hard = cur.maximum.unwrap_or(u64::MAX);
    let nr_open = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(ASKED_OPEN_FILES);
    // First try to raise the hard limit too (needs CAP_SYS_RESOURCE), then the soft one
    // alone.
    let want = ASKED_OPEN_FILES.min(nr_open).max(hard.min(nr_open));
    let tries = [
        Rlimit {
            current: Some(want),
            maximum: Some(want.max(hard.min(nr_open))),
        },
        Rlimit {
            current: Some(hard),
            maximum: cur.maximum,
        },
    ];
    for t in tries {
        if setrlimit(Resource::Nofile, t).is_ok() {
            break;
        }
    }
    let now = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    let warning = (now < WANTED_OPEN_FILES).then(|| {
        format!(
            "the open-file limit is {now} (hard limit {}), below the {WANTED_OPEN_FILES} a node needs: \
             raise it (ulimit -n, LimitNOFILE= in a service unit, or run strata with CAP_SYS_RESOURCE)",
            cur.maximum.map(|m| m.to_string()).unwrap_or_else(|| "unlimited".into())
        )
    });
    (now, warning)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_reaches_the_hard_one_at_least() {
        let before = getrlimit(Resource::Nofile);
        let (now, warning) = raise_open_files();
        assert!(
            Some(now) >= before.current,
            "the limit went down: {before:?} -> {now}"
        );
        if let Some(hard) = before.maximum {
            assert!(
                now >= hard.min(ASKED_OPEN_FILES),
                "soft {now} below hard {hard}"
            );
        }
        assert_eq!(warning.is_some(), now < WANTED_OPEN_FILES, "{warning:?}");
    }
}
