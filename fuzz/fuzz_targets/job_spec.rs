#![no_main]
// Logic and properties: gadus_fuzz::job_spec (src/), replayed by tests/replay.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| gadus_fuzz::job_spec(data));
