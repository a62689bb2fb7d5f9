//! The configuration file's loader on arbitrary text: it returns a config or an error with a
//! line and column inside the text, never panics.
#![no_main]

use holden_orchestrator::config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match config::parse(std::path::Path::new("fuzz.toml"), text) {
        Ok(cfg) => {
            let order = config::start_order(&cfg.services);
            assert_eq!(order.len(), cfg.services.len());
        }
        Err(e) => {
            assert!(e.line >= 1 && e.line <= text.lines().count().max(1) + 1, "{e}");
        }
    }
});
