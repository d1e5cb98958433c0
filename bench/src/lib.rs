//! Benchmarks for weir (not published).
