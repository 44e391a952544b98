//! What a proxy process needs around [`proxy::start`](crate::proxy::start):
//! its command-line arguments, its logs, its runtime and its shutdown on
//! Ctrl-C or SIGTERM. Both `meshc proxy` and the sidecar binary
//! `meshc-proxy` run [`run_proxy`]; `meshc serve` and `meshc echo` share the
//! logs and the shutdown.

use std::process::ExitCode;

use clap::{Args, Parser, ValueEnum};

use crate::proxy;

/// How logs are written on standard error.
#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per event.
    Json,
}

/// The proxy's command line: its settings and its log format.
#[derive(Args)]
pub struct ProxyArgs {
    /// The proxy's settings.
    #[command(flatten)]
    pub settings: proxy::Settings,
    /// Log format.
    #[arg(long, value_enum, env = "MESHC_LOG_FORMAT", default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

/// The command line, or the exit code to leave with: 0 after `--help` or
/// `--version` (printed), 2 after a usage error (printed).
pub fn parse_args<C: Parser>() -> Result<C, ExitCode> {
    C::try_parse().map_err(|e| {
        let _ = e.print();
        ExitCode::from(if e.use_stderr() { 2 } else { 0 })
    })
}

/// A command's exit code; an error is printed and exits 2.
pub fn exit_code(result: anyhow::Result<u8>) -> ExitCode {
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Structured logs on standard error, filtered by `MESHC_LOG` (default
/// `default`, such as `info`).
pub fn init_logs(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MESHC_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Runs a proxy until Ctrl-C or SIGTERM, then stops it (in-flight requests
/// finish); the process's exit code.
pub fn run_proxy(args: ProxyArgs) -> anyhow::Result<u8> {
    init_logs(args.log_format, "info");
    // The first worker; `proxy::start` starts the others (`--threads`),
    // each with an event loop of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let proxy = proxy::start(args.settings).await?;
        for up in &proxy.tcp_upstreams {
            eprintln!("meshc proxy: tcp {} to {}:{}", up.listen, up.host, up.port);
        }
        for g in &proxy.gateway_listeners {
            eprintln!("meshc proxy: gateway port {} on {}", g.port, g.listen);
        }
        eprintln!(
            "meshc proxy: outbound {}, inbound {}, admin http://{}",
            proxy.outbound_addr, proxy.inbound_addr, proxy.admin_addr
        );
        shutdown_signal().await;
        proxy.stop().await;
        anyhow::Ok(0)
    })
}

/// Resolves on Ctrl-C, or on SIGTERM (how Kubernetes stops a container).
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
