//! The `mcrecover` command line.
fn main() {}
