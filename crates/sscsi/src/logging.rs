use tracing_subscriber::EnvFilter;

use crate::cli::LogArgs;

/// Logs go to stderr, as text or JSON lines. No code path logs a secret
/// value or a token: requests are never formatted whole, and every type
/// holding secret material redacts itself.
pub fn init(args: &LogArgs, default_level: &str) {
    let filter = args.log_level.as_deref().map(EnvFilter::new).unwrap_or_else(|| {
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level))
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    if args.log_format_json {
        builder.json().flatten_event(true).init();
    } else {
        builder.init();
    }
}
