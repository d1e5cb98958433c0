//! weir-tls (placeholder until its issue lands).
