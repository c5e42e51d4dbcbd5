//! The built-in web console. Filled by the web console issue.
