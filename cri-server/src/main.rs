use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use crius::config::{Config, LogLevel, Overrides};

/// criusd: a Kubernetes container runtime (CRI v1 on a unix socket).
#[derive(Parser)]
#[command(name = "criusd", version)]
struct Cli {
    /// Config file (TOML); default /etc/crius/crius.toml when it exists.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// CRI socket path (default /run/crius/crius.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// Persistent data dir (default /var/lib/crius).
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Volatile state dir: bundles, shim sockets, pinned namespaces (default /run/crius).
    #[arg(long, global = true)]
    state: Option<PathBuf>,
    /// error, warn, info, debug or trace (RUST_LOG overrides).
    #[arg(long, global = true)]
    log_level: Option<LogLevel>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print the effective config (defaults, file, flags) as TOML.
    Config,
}

fn effective_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    config.apply(Overrides {
        socket: cli.socket.clone(),
        root: cli.root.clone(),
        state: cli.state.clone(),
        log_level: cli.log_level,
    });
    config.validate()?;
    Ok(config)
}

fn init_logging(level: LogLevel) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level.as_str()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match effective_config(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("criusd: {e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(Command::Config) = cli.command {
        print!("{}", config.to_toml());
        return ExitCode::SUCCESS;
    }
    init_logging(config.log_level);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("criusd: starting the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crius::server::run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("criusd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
