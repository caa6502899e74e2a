//! dnsd: filled in by its own issue.
