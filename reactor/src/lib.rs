//! weir-reactor (placeholder until its issue lands).
