//! Any string as a label selector (the API's `labels=` and the CLI's `--constraints`).
#![no_main]

use gadus_core::model::parse_selector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(reqs) = parse_selector(s) {
            let text = reqs.iter().map(|r| r.to_string()).collect::<Vec<_>>().join(",");
            assert_eq!(parse_selector(&text).expect("printed selectors parse"), reqs);
        }
    }
});
