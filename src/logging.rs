//! Logging setup: `tracing` to stderr, text or JSON, filtered by `KVSYNC_LOG`
//! (RUST_LOG syntax, default `info`). Nothing in kvsync logs a secret value
//! or token; dependency crates are capped at `info` unless `KVSYNC_LOG`
//! names them, so an HTTP library's trace output cannot echo headers.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::env::Env;

/// Default filter when `KVSYNC_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info";

/// The filter from `KVSYNC_LOG` (default [`DEFAULT_FILTER`]).
pub fn filter(env: &Env) -> EnvFilter {
    let directives = env.var("KVSYNC_LOG").unwrap_or(DEFAULT_FILTER);
    // A bare level ("trace") applies to kvsync only; other crates stay at
    // info so that e.g. hyper/reqwest trace output (which can include
    // request headers) never reaches the log.
    if is_bare_level(directives) {
        EnvFilter::new(format!("info,kvsync={directives}"))
    } else {
        EnvFilter::new(directives)
    }
}

/// Install the global subscriber on stderr. Safe to call once per process;
/// a no-op when logging is already set up (the Windows service installs
/// its own file/Event Log subscriber first).
pub fn init(format: LogFormat, env: &Env) {
    if tracing::dispatcher::has_been_set() {
        return;
    }
    let filter = filter(env);
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only on a terminal: journald and log files get plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    if let Err(e) = result {
        eprintln!("kvsync: logging already initialised: {e}");
    }
}

fn is_bare_level(s: &str) -> bool {
    matches!(
        s.trim().to_ascii_lowercase().as_str(),
        "trace" | "debug" | "info" | "warn" | "error" | "off"
    )
}
