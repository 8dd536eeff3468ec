//! psync
