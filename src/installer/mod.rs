//! `strata install`. Filled by the installer issue.
