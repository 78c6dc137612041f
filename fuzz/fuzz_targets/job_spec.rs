//! Any bytes as a job file: decode (JSON or YAML), normalize, validate, re-encode.
//! Must never panic, hang or allocate beyond a small multiple of the input.
#![no_main]

use gadus_core::model::{Job, codec};
use gadus_core::rng::DetRng;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(mut job) = Job::from_file_bytes(data) {
        job.normalize(&mut DetRng::new(0));
        let _ = job.validate();
        let text = codec::to_json(&job);
        let again = Job::from_json(text.as_bytes()).expect("our own encoding decodes");
        assert_eq!(again, job);
    }
});
