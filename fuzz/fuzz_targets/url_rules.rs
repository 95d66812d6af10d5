#![no_main]
// The checks live in src/checks.rs, which tests/fuzz_regressions.rs also runs on every
// input kept in fuzz/regressions/url_rules/.
libfuzzer_sys::fuzz_target!(|data: &[u8]| affine_authentik_fuzz::checks::url_rules(data));
