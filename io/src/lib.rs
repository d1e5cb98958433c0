//! weir-io (placeholder until its issue lands).
