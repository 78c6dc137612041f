//! End-to-end tests live in `tests/tests/`: they start real `gadus` processes (the binary
//! built by `cargo test --workspace`) on loopback and drive them through the CLI and the API.
