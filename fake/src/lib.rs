//! kvsync-fake: a local Azure emulator for kvsync's development, tests, demo
//! and benchmarks. Real loopback servers, following ../shared/PROTOCOL.md:
//!
//! * Arc HIMDS over HTTP (the real 401 challenge flow, with `.key` files in a
//!   token directory, single-use),
//! * Key Vault over real HTTPS with a generated test CA (secrets with
//!   versions, the 401 Bearer challenge, list with paging, injectable
//!   403/404/429/5xx/slow responses),
//! * request counters and injected latency.
//!
//! Used in-process by the tests ([`Emulator::start`]) and standalone by the
//! `kvsync-fake` binary (demo, benchmarks), which adds an admin HTTP API.
//!
//! (Skeleton: signatures agreed between modules; bodies to be filled in.)
