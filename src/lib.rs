//! weir: network I/O built from small elements chained with credit-based backpressure.
pub use weir_io as io;
pub use weir_reactor as reactor;
