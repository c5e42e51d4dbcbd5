//! Replicated block volumes (upstairs/downstairs). Filled by the storage issue.
