//! weir-pipe (placeholder until its issue lands).
