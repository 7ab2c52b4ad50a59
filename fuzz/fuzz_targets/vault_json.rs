#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = kvsync::fuzzing::vault_json(data);
});
