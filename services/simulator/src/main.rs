//! The provider simulator binary (being built).
fn main() {}
