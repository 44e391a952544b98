//! `meshc`: the command line. Wiring only: argument parsing, reading files,
//! calling the compiler and the validator, exit codes.
//!
//! Exit codes: 0 clean, 1 findings (errors, or warnings with
//! `--deny-warnings`), 2 usage or I/O errors. A closed pipe is not an error.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use meshc_compiler::{ConfigFile, Input, InputError, Limits, Options, config, rules};
use meshc_dataplane::process::{
    LogFormat, ProxyArgs, exit_code, init_logs, parse_args, shutdown_signal,
};
use meshc_validator::{Format, RenderOptions};
use rayon::prelude::*;

mod heap;
mod memory;
mod up;

#[derive(Parser)]
#[command(
    name = "meshc",
    version,
    about = "GitOps policy compiler and config validator for service meshes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check policy files and report diagnostics.
    Lint(LintArgs),
    /// List every rule.
    Rules {
        /// Output format.
        #[arg(long, value_enum, default_value_t = ListFormat::Text)]
        format: ListFormat,
    },
    /// Print a rule's documentation.
    Explain {
        /// A rule code (`MC0101`) or name (`dangling-subset`).
        code: String,
    },
    /// Compile policy to IR and print it with its content hash.
    Compile(CompileArgs),
    /// Semantic diff between two revisions of a policy repository (or two directories).
    Diff(DiffArgs),
    /// Run policy unit tests (routing, authorization, mTLS) against the compiled IR.
    Test(TestArgs),
    /// Run the control plane: follow a policy repository, compile every
    /// commit, serve accepted versions to proxies, expose the API.
    Serve(Box<ServeArgs>),
    /// Run the sidecar proxy for one workload: certificate and config from
    /// the control plane, outbound routing, inbound mTLS and authorization.
    Proxy(Box<ProxyArgs>),
    /// Run the demo echo application (what `meshc up` puts behind proxies).
    Echo(meshc_dataplane::echo::EchoSettings),
    /// The whole mesh on loopback: a policy repository seeded with bookinfo,
    /// the control plane, echo workloads behind proxies, and some traffic.
    Up(up::UpArgs),
    /// Write a synthetic policy repository (for benchmarks).
    #[command(hide = true)]
    Synth {
        /// Number of services.
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// Output directory (created).
        out: PathBuf,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ListFormat {
    Text,
    Json,
}

#[derive(Clone, Copy, ValueEnum)]
enum Color {
    Auto,
    Always,
    Never,
}

#[derive(Args)]
struct LintArgs {
    /// Files and directories (recursive, honouring .gitignore); `-` reads standard input.
    #[arg(default_value = ".")]
    paths: Vec<PathBuf>,
    /// Output format.
    #[arg(long, default_value = "human", value_parser = format_parser())]
    format: Format,
    /// Exit 1 on warnings too.
    #[arg(long)]
    deny_warnings: bool,
    /// Run only these codes or prefixes (comma-separated or repeated).
    #[arg(long, value_delimiter = ',')]
    select: Vec<String>,
    /// Skip these codes or prefixes.
    #[arg(long, value_delimiter = ',')]
    ignore: Vec<String>,
    /// Configuration file (default: `meshc.toml` in the first directory given, or the current one).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Colour in human output.
    #[arg(long, value_enum, default_value_t = Color::Auto)]
    color: Color,
    /// Also list documents of kinds meshc does not model.
    #[arg(long, short)]
    verbose: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum IrFormat {
    Json,
    Yaml,
}

#[derive(Args)]
struct CompileArgs {
    /// Files and directories (recursive, honouring .gitignore).
    #[arg(default_value = ".")]
    paths: Vec<PathBuf>,
    /// Print only what this workload's proxy receives (`namespace/name`).
    #[arg(long)]
    workload: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = IrFormat::Json)]
    format: IrFormat,
    /// Print only the hash.
    #[arg(long)]
    hash: bool,
    /// Configuration file (default: `meshc.toml` in the first directory given, or the current one).
    #[arg(long)]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum DiffFormat {
    Human,
    Json,
}

#[derive(Args)]
struct DiffArgs {
    /// The old side: a Git revision (commit, branch, tag, `HEAD~1`) or a directory.
    from: String,
    /// The new side: a Git revision or a directory.
    to: String,
    /// Repository holding the revisions.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Sub-directory of the repository holding the policy.
    #[arg(long, default_value = "")]
    path: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DiffFormat::Human)]
    format: DiffFormat,
}

/// Every setting also comes from the environment (`MESHC_*`) and from a
/// TOML file (`--config`, kebab-case keys); flags win over the environment,
/// which wins over the file.
#[derive(Args)]
struct ServeArgs {
    /// Settings file (TOML).
    #[arg(long, env = "MESHC_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    settings: meshc_reconciler::serve::Settings,
    /// Log format.
    #[arg(long, value_enum, env = "MESHC_LOG_FORMAT", default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Args)]
struct TestArgs {
    /// Test files (YAML); directories are searched for `*.yaml` under `tests/`.
    #[arg(required = true)]
    tests: Vec<PathBuf>,
    /// The policy to test (default: the parent of the first test file's `tests/` directory).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DiffFormat::Human)]
    format: DiffFormat,
}

#[global_allocator]
static GLOBAL: memory::Allocator = memory::Allocator;

fn main() -> ExitCode {
    let cli: Cli = match parse_args() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    if matches!(
        cli.command,
        Command::Serve(_) | Command::Proxy(_) | Command::Up(_)
    ) {
        heap::long_running();
        meshc_dataplane::client::after_apply(heap::trim_soon);
    } else {
        memory::short_lived();
    }
    let result = match cli.command {
        Command::Lint(args) => lint(args),
        Command::Rules { format } => list_rules(format),
        Command::Explain { code } => explain(&code),
        Command::Compile(args) => compile(args),
        Command::Diff(args) => diff(args),
        Command::Test(args) => policy_test(args),
        Command::Serve(args) => serve(*args),
        Command::Proxy(args) => meshc_dataplane::process::run_proxy(*args),
        Command::Echo(args) => run_echo(args),
        Command::Up(args) => up::run(args),
        Command::Synth { services, out } => synth(services, &out),
    };
    exit_code(result)
}

/// Write to stdout; a closed pipe ends output quietly.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// `--format` values, as the validator names them.
fn format_parser() -> impl clap::builder::TypedValueParser<Value = Format> {
    use clap::builder::TypedValueParser as _;
    clap::builder::PossibleValuesParser::new(Format::NAMES)
        .map(|s| Format::parse(&s).expect("a listed format name parses"))
}

fn lint(args: LintArgs) -> Result<u8> {
    let mut options = load_config(args.config.as_deref(), &args.paths)?;
    if let Some(code) = args
        .select
        .iter()
        .chain(&args.ignore)
        .find(|c| !config::is_known_selector(c))
    {
        bail!("`{code}` names no rule; `meshc rules` lists them");
    }
    if !args.select.is_empty() {
        options.settings.select = Some(args.select.clone());
    }
    options.settings.ignore.extend(args.ignore.iter().cloned());
    let inputs = collect_inputs(&args.paths, &options.limits)?;
    let analysis = meshc_compiler::analyze(inputs, &options);
    if args.verbose {
        for s in &analysis.skipped {
            let f = analysis.sources.get(s.span.file);
            let lc = f.line_col(s.span.start as usize);
            eprintln!(
                "{}:{}:{}: skipped {} ({}): not a kind meshc checks",
                f.path, lc.line, lc.column, s.kind, s.api_version
            );
        }
    }
    let color = match args.color {
        Color::Always => true,
        Color::Never => false,
        Color::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    emit(&meshc_validator::render(
        &analysis,
        args.format,
        RenderOptions { color, width: 100 },
    ))?;
    let errors = analysis.count(meshc_compiler::Severity::Error);
    let warnings = analysis.count(meshc_compiler::Severity::Warning);
    // The process ends right after; freeing a large analysis costs a tenth of
    // the run (0.4 s for 70,000 resources), so leave it to the OS.
    std::mem::forget(analysis);
    Ok(u8::from(errors > 0 || (args.deny_warnings && warnings > 0)))
}

/// The options of `--config`, else of `meshc.toml` in the first directory
/// argument, else in the current directory, else the defaults.
fn load_config(config: Option<&Path>, paths: &[PathBuf]) -> Result<Options> {
    let candidate = match config {
        Some(p) => Some(p.to_path_buf()),
        None => paths
            .iter()
            .find(|p| p.is_dir())
            .map(|d| d.join("meshc.toml"))
            .filter(|p| p.is_file())
            .or_else(|| Some(PathBuf::from("meshc.toml")).filter(|p| p.is_file())),
    };
    let Some(path) = candidate else {
        return Ok(Options::default());
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let file = ConfigFile::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let shown = path
        .strip_prefix("./")
        .unwrap_or(&path)
        .display()
        .to_string();
    Ok(Options::from_config(&file, Some((shown, text))))
}

fn is_yaml(p: &Path) -> bool {
    matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
}

/// The YAML files under `dir` (recursive, `.gitignore` honoured), sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    // Walked on `ignore`'s threads (a 10,000-file repository is a hundred
    // directories), then sorted: the order never depends on the walk.
    let found = std::sync::Mutex::new(Vec::new());
    ignore::WalkBuilder::new(dir)
        .require_git(false)
        .build_parallel()
        .run(|| {
            let found = &found;
            Box::new(move |entry| {
                if let Ok(e) = entry
                    && e.file_type().is_some_and(|t| t.is_file())
                    && is_yaml(e.path())
                {
                    found
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(e.into_path());
                }
                ignore::WalkState::Continue
            })
        });
    let mut found = found.into_inner().unwrap_or_else(|p| p.into_inner());
    found.sort();
    found
}

/// A file's bytes, or why not: one open, its size from the open file.
fn read_limited(path: &Path, max: u64) -> Result<Vec<u8>, InputError> {
    let io = |e: std::io::Error| InputError::Io(e.to_string());
    let mut f = std::fs::File::open(path).map_err(io)?;
    let len = f.metadata().map_err(io)?.len();
    if len > max {
        return Err(InputError::TooLarge(len));
    }
    let mut buf = Vec::with_capacity(len as usize);
    f.read_to_end(&mut buf).map_err(io)?;
    Ok(buf)
}

/// Expand the arguments into inputs, in a stable order.
fn collect_inputs(paths: &[PathBuf], limits: &Limits) -> Result<Vec<Input>> {
    let mut files: Vec<PathBuf> = Vec::new();
    let mut inputs = Vec::new();
    for p in paths {
        if p.as_os_str() == "-" {
            let mut buf = Vec::new();
            std::io::stdin()
                .lock()
                .take(limits.max_file_bytes as u64 + 1)
                .read_to_end(&mut buf)
                .context("cannot read standard input")?;
            inputs.push(Input::bytes("<stdin>", buf));
        } else if p.is_dir() {
            files.extend(yaml_files(p));
        } else if p.exists() {
            files.push(p.clone());
        } else {
            bail!("{}: no such file or directory", p.display());
        }
    }
    let max = limits.max_file_bytes as u64;
    let read: Vec<Input> = files
        .par_iter()
        .map(|path| {
            let shown = path
                .strip_prefix("./")
                .unwrap_or(path)
                .display()
                .to_string();
            let content = read_limited(path, max);
            Input {
                path: shown,
                content,
                id: None,
            }
        })
        .collect();
    inputs.extend(read);
    Ok(inputs)
}

fn list_rules(format: ListFormat) -> Result<u8> {
    let text = match format {
        ListFormat::Text => {
            let mut s = String::new();
            for r in rules::ALL {
                let eq = if r.equivalents.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", r.upstream_codes().join(", "))
                };
                s += &format!(
                    "{}  {:<22} {:<8} {}{eq}\n",
                    r.code,
                    r.name,
                    r.severity.as_str(),
                    r.summary
                );
            }
            s
        }
        ListFormat::Json => {
            let list: Vec<_> = rules::ALL
                .iter()
                .map(|r| serde_json::json!({"code": r.code, "name": r.name, "group": r.group.as_str(), "severity": r.severity, "summary": r.summary, "equivalents": r.upstream_codes(), "upstream": r.equivalents}))
                .collect();
            serde_json::to_string_pretty(&list)? + "\n"
        }
    };
    emit(&text)?;
    Ok(0)
}

fn explain(code: &str) -> Result<u8> {
    let Some(r) = rules::find(code) else {
        bail!("no rule `{code}`; `meshc rules` lists them")
    };
    let mut s = format!(
        "# {} {}\n\n{}.\n\nGroup: {}. Default severity: {}.",
        r.code,
        r.name,
        r.summary,
        r.group.as_str(),
        r.severity
    );
    if !r.equivalents.is_empty() {
        let checks: Vec<String> = r.equivalents.iter().map(|u| u.to_string()).collect();
        s += &format!(" Equivalent upstream checks: {}.", checks.join(", "));
    }
    s += "\n\n";
    s += &r.documentation();
    emit(&s)?;
    Ok(0)
}

fn synth(services: usize, out: &Path) -> Result<u8> {
    for (path, text) in meshc_compiler::synth::repository(services) {
        let path = out.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(0)
}

/// Compile `inputs`; on errors print them (concise, to stderr) and give `None`.
fn compile_inputs(what: &str, inputs: Vec<Input>, options: Options) -> Option<meshc_ir::Ir> {
    let meshc_compiler::Compiled { analysis, ir } = meshc_compiler::compile(inputs, &options);
    match ir {
        Ok(ir) => {
            // As in `lint`: freeing a large analysis is a tenth of the run.
            std::mem::forget(analysis);
            Some(std::sync::Arc::unwrap_or_clone(ir))
        }
        Err(meshc_compiler::CompileError::Diagnostics(n)) => {
            let text =
                meshc_validator::render(&analysis, Format::Concise, RenderOptions::default());
            eprint!("{text}");
            eprintln!("error: {what} has {n} error(s); it is not compiled");
            None
        }
        Err(meshc_compiler::CompileError::Lowering(errors)) => {
            for e in &errors {
                eprintln!("{}: {}: {}", e.resource, e.path, e.message);
            }
            eprintln!("error: {what} cannot be lowered to IR");
            None
        }
    }
}

fn compile(args: CompileArgs) -> Result<u8> {
    let config = load_config(args.config.as_deref(), &args.paths)?;
    let inputs = collect_inputs(&args.paths, &config.limits)?;
    let Some(mut ir) = compile_inputs("the policy", inputs, config) else {
        return Ok(1);
    };
    if let Some(w) = &args.workload {
        ir = match ir.scope(w) {
            Some(scoped) => scoped,
            None => bail!("no workload `{w}` (namespace/name) in the policy"),
        };
    }
    let hash = ir.hash();
    // As with the analysis: freeing a large IR is a tenth of the run, and
    // the process ends here.
    let ir = std::mem::ManuallyDrop::new(ir);
    if args.hash {
        emit(&format!("{hash}\n"))?;
        return Ok(0);
    }
    #[derive(serde::Serialize)]
    struct Versioned<'a> {
        version: &'a str,
        ir: &'a meshc_ir::Ir,
    }
    let doc = Versioned {
        version: &hash,
        ir: &ir,
    };
    match args.format {
        // Streamed: a large IR is never held as text (the 10,000-service
        // one prints 150 MB).
        IrFormat::Json => {
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            let written = serde_json::to_writer_pretty(&mut out, &doc)
                .map_err(std::io::Error::from)
                .and_then(|()| out.write_all(b"\n"))
                .and_then(|()| out.flush());
            match written {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
                _ => {}
            }
        }
        IrFormat::Yaml => emit(&meshc_validator::yaml::to_yaml(&serde_json::to_value(
            &doc,
        )?))?,
    }
    Ok(0)
}

/// The policy files of one side of a diff: a directory, or a Git revision.
fn side(args: &DiffArgs, which: &str) -> Result<(Vec<Input>, Options)> {
    let dir = Path::new(which);
    if dir.is_dir() {
        let paths = [dir.to_path_buf()];
        let config = load_config(None, &paths)?;
        return Ok((collect_inputs(&paths, &config.limits)?, config));
    }
    let repo = meshc_reconciler::git::open(&args.repo)?;
    meshc_reconciler::commit::policy_at(&repo, which, &args.path, |p| format!("{which}:{p}"))
        .map_err(anyhow::Error::msg)
}

fn diff(args: DiffArgs) -> Result<u8> {
    let (a_in, a_cfg) = side(&args, &args.from)?;
    let (b_in, b_cfg) = side(&args, &args.to)?;
    let (Some(a), Some(b)) = (
        compile_inputs(&args.from, a_in, a_cfg),
        compile_inputs(&args.to, b_in, b_cfg),
    ) else {
        return Ok(1);
    };
    let changes = meshc_ir::diff::diff(&a, &b);
    let text = match args.format {
        DiffFormat::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "from": {"revision": args.from, "version": a.hash()},
                "to": {"revision": args.to, "version": b.hash()},
                "changes": changes,
            }))? + "\n"
        }
        DiffFormat::Human => meshc_validator::changes::human(&changes),
    };
    emit(&text)?;
    Ok(0)
}

fn policy_test(args: TestArgs) -> Result<u8> {
    let mut files: Vec<PathBuf> = Vec::new();
    for t in &args.tests {
        if t.is_dir() {
            files.extend(
                yaml_files(t)
                    .into_iter()
                    .filter(|p| p.components().any(|c| c.as_os_str() == "tests")),
            );
        } else if t.exists() {
            files.push(t.clone());
        } else {
            bail!("{}: no such file or directory", t.display());
        }
    }
    if files.is_empty() {
        bail!("no test files found (they live in a `tests/` directory)");
    }
    let policy = match &args.policy {
        Some(p) => p.clone(),
        None => {
            let first = &files[0];
            first
                .ancestors()
                .find(|a| a.file_name().is_some_and(|n| n == "tests"))
                .and_then(Path::parent)
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from("."))
        }
    };
    let mut cases = Vec::new();
    let mut errors = Vec::new();
    for f in &files {
        let shown = f.strip_prefix("./").unwrap_or(f).display().to_string();
        let text = std::fs::read_to_string(f).with_context(|| format!("cannot read {shown}"))?;
        match meshc_compiler::policytest::parse(&shown, &text) {
            Ok(c) => cases.extend(c),
            Err(e) => errors.extend(e),
        }
    }
    if !errors.is_empty() {
        for e in &errors {
            eprintln!("{e}");
        }
        bail!("{} problem(s) in the test files", errors.len());
    }
    // Test documents (`kind: PolicyTest`) in the policy tree are skipped by
    // the loader like any kind meshc does not model.
    let paths = [policy.clone()];
    let config = load_config(None, &paths)?;
    let inputs = collect_inputs(&paths, &config.limits)?;
    let Some(ir) = compile_inputs(&policy.display().to_string(), inputs, config) else {
        return Ok(1);
    };
    let outcomes: Vec<_> = cases
        .iter()
        .map(|c| meshc_compiler::policytest::run(&ir, c))
        .collect();
    let failed = outcomes.iter().filter(|o| !o.passed).count();
    let text = match args.format {
        DiffFormat::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "tests": outcomes,
                "summary": {"passed": outcomes.len() - failed, "failed": failed},
            }))? + "\n"
        }
        DiffFormat::Human => meshc_validator::changes::test_report(&outcomes),
    };
    emit(&text)?;
    Ok(u8::from(failed > 0))
}

fn run_echo(settings: meshc_dataplane::echo::EchoSettings) -> Result<u8> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let scheme = if settings.tcp { "tcp" } else { "http" };
        let echo = meshc_dataplane::echo::start(settings).await?;
        eprintln!("meshc echo: {scheme}://{}", echo.addr);
        shutdown_signal().await;
        echo.stop();
        anyhow::Ok(0)
    })
}

fn serve(args: ServeArgs) -> Result<u8> {
    use meshc_reconciler::serve::Settings;
    init_logs(args.log_format, "info");
    let file = match &args.config {
        Some(p) => Settings::from_file(p)?,
        None => Settings::default(),
    };
    let config = args.settings.over(file).into_config()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let running = meshc_reconciler::serve::start_with(config, web_ui).await?;
        eprintln!(
            "meshc serve: gRPC on {}, API on http://{}",
            running.grpc_addr, running.http_addr
        );
        shutdown_signal().await;
        tracing::info!("shutting down");
        running.stop().await;
        anyhow::Ok(0)
    })
}

/// The web UI's routes for a control plane.
pub(crate) fn web_ui(
    control: &std::sync::Arc<meshc_reconciler::control::Control>,
    config: &meshc_reconciler::serve::Config,
) -> axum::Router {
    meshc_web::router(std::sync::Arc::new(meshc_web::Web::new(
        control.clone(),
        config.mirror_dir(),
        config.source.subpath.clone(),
        config.api_token.clone(),
    )))
}
