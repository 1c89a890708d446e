use tracing_subscriber::EnvFilter;

use crate::cli::LogArgs;

/// Logs go to stderr, as text or JSON lines. No code path logs a secret
/// value or a token: requests are never formatted whole, and every type
/// holding secret material redacts itself. Colour only on a terminal: a
/// container's stderr is a pipe to the runtime's log file, read by
/// `kubectl logs`, Fluent Bit or Loki, where escape codes are noise.
pub fn init(args: &LogArgs, default_level: &str) {
    use std::io::IsTerminal;
    let filter = args.log_level.as_deref().map(EnvFilter::new).unwrap_or_else(|| {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level))
    });
    let colour = !args.log_format_json && std::io::stderr().is_terminal();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(colour);
    if args.log_format_json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
