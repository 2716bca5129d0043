//! Any text as `proxy.toml`: `Config::from_toml_str` returns a configuration or a list of
//! problems, never panics; a valid configuration has a sink and gives an event context, and
//! every problem prints.
//!
//! Validation reads the files a configuration names (TLS material, key and token files). So
//! that a run never blocks or fills memory, inputs that could name a device, `/proc`, `/sys`
//! or `/run` file are skipped, together with the TOML escapes that could spell such a path,
//! and the environment is reduced to a few known variables for `${VAR}` expansion.
#![no_main]

use std::path::Path;
use std::sync::Once;

use libfuzzer_sys::fuzz_target;
use scimtap::config::{Config, ConfigError};
use scimtap::event::EventContext;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if !safe(text) {
        return;
    }
    static ENV: Once = Once::new();
    ENV.call_once(|| {
        for (name, _) in std::env::vars_os() {
            std::env::remove_var(name);
        }
        std::env::set_var("SCIMTAP_FUZZ_TOKEN", "s3cr3t-token");
        std::env::set_var("SCIMTAP_FUZZ_PORT", "8443");
        std::env::set_var("SCIMTAP_FUZZ_EMPTY", "");
        std::env::set_var("SCIMTAP_FUZZ_QUOTE", "a\"b\\c\nd");
    });
    match Config::from_toml_str(text, Path::new("fuzz.toml")) {
        Ok(config) => {
            assert!(
                !config.sinks.is_empty(),
                "a valid configuration without sinks"
            );
            let _ = EventContext::from_config(&config);
            let _ = format!("{config:?}");
        }
        Err(e) => {
            if let ConfigError::Invalid { problems, .. } = &e {
                assert!(!problems.is_empty(), "invalid, with no problem named");
            }
            let _ = e.to_string();
        }
    }
});

/// Whether `text` can name no file that blocks or never ends when read.
fn safe(text: &str) -> bool {
    const PATHS: [&str; 4] = ["/dev/", "/proc/", "/sys/", "/run/"];
    if PATHS.iter().any(|p| text.contains(p)) {
        return false;
    }
    // \uXXXX, \UXXXXXXXX and \xHH could spell a path; a backslash at the end of a line
    // (line continuation in multi-line strings) could join one from two lines.
    let bytes = text.as_bytes();
    !bytes
        .windows(2)
        .any(|w| w[0] == b'\\' && matches!(w[1], b'u' | b'U' | b'x' | b' ' | b'\t' | b'\r' | b'\n'))
}
