//! `meshc-proxy`: the sidecar proxy alone, as a workload's pod runs it.
//!
//! The same proxy as `meshc proxy`, with the same flags and environment,
//! in a binary that links the data plane and nothing else: no compiler,
//! control plane, web UI, Git or store. A process maps the pages of its
//! executable that it touches, and the kernel maps their neighbours with
//! them, so a proxy started from the whole `meshc` binary holds megabytes of
//! other commands' code; this one does not (`benches/proxy_load.rs`
//! measures both).

use std::process::ExitCode;

use clap::Parser;
use meshc_dataplane::process::{ProxyArgs, exit_code, parse_args, run_proxy};

#[path = "../heap.rs"]
mod heap;

/// meshc's sidecar proxy: enforces the IR the control plane distributes.
#[derive(Parser)]
#[command(name = "meshc-proxy", version)]
struct Cli {
    #[command(flatten)]
    args: ProxyArgs,
}

fn main() -> ExitCode {
    let cli: Cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    heap::long_running();
    meshc_dataplane::client::after_apply(heap::trim_soon);
    exit_code(run_proxy(cli.args))
}
