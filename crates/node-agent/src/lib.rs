//! node-agent: filled in by its own issue.
