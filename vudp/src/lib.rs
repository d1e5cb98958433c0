//! weir-vudp (placeholder until its issue lands).
