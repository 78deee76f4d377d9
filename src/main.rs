//! The `pgveil` command line: parses arguments, calls the library, maps
//! errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// A privacy-view SQL proxy for PostgreSQL CRM databases.
#[derive(Parser)]
#[command(name = "pgveil", version, about)]
struct Cli {
    /// Log as JSON lines instead of text.
    #[arg(long, global = true)]
    log_json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the proxy.
    Serve {
        /// The configuration file.
        #[arg(long, short, default_value = "pgveil.toml")]
        config: PathBuf,
    },
    /// Print a SCRAM-SHA-256 verifier for a user's password (read from
    /// standard input, or asked for on a terminal).
    Passwd {
        /// The user name.
        user: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_json);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgveil: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgveil: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGVEIL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => serve(config).await,
        Command::Passwd { user } => passwd(&user),
    }
}

async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = pgveil::config::Config::load(&path)?;
    let server = pgveil::server::Server::bind(config).await?;
    tracing::info!(addr = %server.local_addr()?, "pgveil listening");
    server.run(shutdown_signal()).await;
    Ok(())
}

async fn shutdown_signal() {
    let _ = tokio::signal::ctrl_c().await;
    tracing::info!("shutting down");
}

fn passwd(user: &str) -> anyhow::Result<()> {
    let password = read_password()?;
    if password.is_empty() {
        anyhow::bail!("empty password");
    }
    let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
    println!(
        "[[users]]\nname = \"{}\"\nscram = \"{verifier}\"",
        user.replace('"', "\\\"")
    );
    Ok(())
}

fn read_password() -> anyhow::Result<String> {
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")?;
        let second = rpassword::prompt_password("Again: ")?;
        anyhow::ensure!(first == second, "the passwords differ");
        return Ok(first);
    }
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(line.trim_end_matches(['\r', '\n']).to_owned())
}
