//! The libFuzzer binary of every target: `GADUS_FUZZ_TARGET=<name>` picks the function of
//! `gadus_fuzz::TARGETS` that the inputs go to (`fuzz/run` sets it). One binary instead of
//! one per target: each links the whole node, and linking seventeen of them took longer
//! than fuzzing.
#![no_main]

use std::sync::OnceLock;

fn target() -> fn(&[u8]) {
    static TARGET: OnceLock<fn(&[u8])> = OnceLock::new();
    *TARGET.get_or_init(|| {
        let name = std::env::var("GADUS_FUZZ_TARGET").unwrap_or_default();
        match gadus_fuzz::TARGETS.iter().find(|(n, _)| *n == name) {
            Some((_, f)) => *f,
            None => {
                let names: Vec<&str> = gadus_fuzz::TARGETS.iter().map(|(n, _)| *n).collect();
                eprintln!("set GADUS_FUZZ_TARGET to one of: {}", names.join(" "));
                std::process::exit(2);
            }
        }
    })
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| target()(data));
