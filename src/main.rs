//! The `pgveil` command line: parses arguments, calls the library, maps
//! errors to exit codes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgveil::config::Config;

/// A privacy-view SQL proxy for PostgreSQL CRM databases.
#[derive(Parser)]
#[command(name = "pgveil", version, about)]
struct Cli {
    /// Log as JSON lines instead of text: one object per line, the event's
    /// fields at the top level and the session's (session_id, user,
    /// view_set, peer) under "span".
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
    /// Install the policy's privacy views, schemas and login roles.
    Apply {
        /// The configuration file.
        #[arg(long, short, default_value = "pgveil.toml")]
        config: PathBuf,
        /// Print the DDL instead of running it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Validate the policy against the live database catalog (exit code 1 on errors).
    Check {
        /// The configuration file.
        #[arg(long, short, default_value = "pgveil.toml")]
        config: PathBuf,
    },
    /// Show the view set a user gets and how one statement is rewritten.
    Explain {
        /// The configuration file.
        #[arg(long, short, default_value = "pgveil.toml")]
        config: PathBuf,
        /// The proxy user.
        #[arg(long)]
        user: String,
        /// The view set asked for (as with options=-c pgveil.view=...).
        #[arg(long)]
        view: Option<String>,
        /// The SQL statement.
        sql: String,
    },
    /// Start a throwaway PostgreSQL with the example CRM and policy, and
    /// pgveil in front of it; Ctrl-C removes everything.
    Demo {
        /// Where pgveil listens.
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: std::net::SocketAddr,
        /// Customers to generate.
        #[arg(long, default_value_t = 10_000)]
        customers: u64,
        /// A policy file or directory instead of the built-in example.
        #[arg(long)]
        policy: Option<PathBuf>,
    },
    /// Load the example CRM (schema and generated data) into the configured database.
    LoadCrm {
        /// The configuration file (its backend administrator login is used).
        #[arg(long, short, default_value = "pgveil.toml")]
        config: PathBuf,
        /// Customers to generate.
        #[arg(long, default_value_t = 10_000)]
        customers: u64,
        /// Seed of the generator (the same seed gives the same data).
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// Print a SCRAM-SHA-256 verifier for a user's password (read from
    /// standard input, or asked for on a terminal).
    Passwd {
        /// The user name.
        user: String,
    },
    /// Data-subject rights: export, consent, correction with review, erasure.
    Subject {
        /// The configuration file.
        #[arg(long, short, default_value = "pgveil.toml", global = true)]
        config: PathBuf,
        /// Who acts (recorded as requester or reviewer).
        #[arg(long, env = "USER", default_value = "pgveil-cli", global = true)]
        actor: String,
        #[command(subcommand)]
        command: SubjectCommand,
    },
    /// The privacy log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Write the privacy report (report.html and report.md) into a directory.
    Report {
        /// The configuration file.
        #[arg(long, short, default_value = "pgveil.toml")]
        config: PathBuf,
        /// Privacy log files, oldest first (default: the [audit] file and its rotated files).
        #[arg(long, num_args = 1..)]
        audit: Vec<PathBuf>,
        /// The directory to write into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
    /// The policy's retention rules.
    Retention {
        /// The configuration file.
        #[arg(long, short, default_value = "pgveil.toml", global = true)]
        config: PathBuf,
        /// Who acts (recorded in the destruction records and the privacy log).
        #[arg(long, env = "USER", default_value = "pgveil-cli", global = true)]
        actor: String,
        #[command(subcommand)]
        command: RetentionCommand,
    },
}

#[derive(Subcommand)]
enum RetentionCommand {
    /// Erase what the retention rules say has expired (each erasure with a
    /// destruction record) and print what was done as JSON.
    Run {
        /// Only count what would change.
        #[arg(long)]
        dry_run: bool,
    },
}

/// Data-subject requests; each runs as the backend administrator, prints
/// the result and its privacy-log record as JSON, and writes the record to
/// the privacy log when `[audit]` is configured.
#[derive(Subcommand)]
enum SubjectCommand {
    /// Every personal datum about a customer.
    Export {
        /// Customer key.
        #[arg(long)]
        customer: String,
    },
    /// Withdraw the customer's consent for a purpose.
    OptOut {
        /// Customer key.
        #[arg(long)]
        customer: String,
        /// Purpose (e.g. direct_marketing).
        #[arg(long)]
        purpose: String,
    },
    /// Record the customer's consent for a purpose.
    OptIn {
        /// Customer key.
        #[arg(long)]
        customer: String,
        /// Purpose (e.g. direct_marketing).
        #[arg(long)]
        purpose: String,
    },
    /// File corrections (table.column=value); they land only after review.
    Correct {
        /// Customer key.
        #[arg(long)]
        customer: String,
        /// A correction, e.g. customers.city=Kaunas (repeatable).
        #[arg(long = "set", required = true)]
        changes: Vec<pgveil::subject::Assignment>,
    },
    /// Pending corrections, and their review.
    Review {
        #[command(subcommand)]
        command: ReviewCommand,
    },
    /// Erase the customer under the policy's erase rules, with a destruction record.
    Erase {
        /// Customer key.
        #[arg(long)]
        customer: String,
    },
    /// Serve these requests (without review) over HTTP to a self-service
    /// portal that authenticates customers; see README.md.
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:6435")]
        listen: std::net::SocketAddr,
        /// File holding the bearer token the portal sends (at least 16 characters).
        #[arg(long)]
        token_file: PathBuf,
    },
}

#[derive(Subcommand)]
enum ReviewCommand {
    /// List pending corrections.
    List,
    /// Apply a pending correction (the reviewer must not be its requester).
    Approve {
        /// Correction id.
        id: i64,
    },
    /// Reject a pending correction.
    Reject {
        /// Correction id.
        id: i64,
        /// Why.
        #[arg(long)]
        reason: String,
    },
}

impl SubjectCommand {
    /// The request to run once; None for `serve`.
    fn into_request(self) -> Option<pgveil::subject::Request> {
        use pgveil::subject::Request as R;
        Some(match self {
            SubjectCommand::Export { customer } => R::Export { customer },
            SubjectCommand::OptOut { customer, purpose } => R::OptOut { customer, purpose },
            SubjectCommand::OptIn { customer, purpose } => R::OptIn { customer, purpose },
            SubjectCommand::Correct { customer, changes } => R::Correct { customer, changes },
            SubjectCommand::Review {
                command: ReviewCommand::List,
            } => R::ReviewList,
            SubjectCommand::Review {
                command: ReviewCommand::Approve { id },
            } => R::Approve { id },
            SubjectCommand::Review {
                command: ReviewCommand::Reject { id, reason },
            } => R::Reject { id, reason },
            SubjectCommand::Erase { customer } => R::Erase { customer },
            SubjectCommand::Serve { .. } => return None,
        })
    }
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain of privacy log files, oldest first (exit code 1
    /// unless intact).
    Verify {
        /// The log files, oldest first (e.g. FILE.2 FILE.1 FILE).
        #[arg(required = true)]
        files: Vec<PathBuf>,
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
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,tokio_postgres=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init();
    } else {
        builder.init();
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve { config } => serve(config).await,
        Command::Passwd { user } => passwd(&user),
        Command::Subject {
            config,
            actor,
            command: SubjectCommand::Serve { listen, token_file },
        } => subject_serve(&config, listen, &token_file, actor).await,
        Command::Subject {
            config,
            actor,
            command,
        } => match command.into_request() {
            Some(request) => subject(&config, request, &actor).await,
            None => Ok(()),
        },
        Command::Retention {
            config,
            actor,
            command: RetentionCommand::Run { dry_run },
        } => {
            subject(
                &config,
                pgveil::subject::Request::Retention { dry_run },
                &actor,
            )
            .await
        }
        Command::Audit {
            command: AuditCommand::Verify { files },
        } => audit_verify(&files),
        Command::Report { config, audit, out } => {
            let config = Config::load(&config)?;
            let written = pgveil::control::report(&config, audit, &out).await?;
            println!("{}\n{}", written.html.display(), written.markdown.display());
            Ok(())
        }
        Command::Demo {
            listen,
            customers,
            policy,
        } => {
            let setup = pgveil::demo::Setup {
                listen,
                customers,
                policy,
            };
            Ok(pgveil::demo::run(setup).await?)
        }
        Command::LoadCrm {
            config,
            customers,
            seed,
        } => {
            let config = Config::load(&config)?;
            let options = pgveil::crm::LoadOptions {
                customers,
                seed,
                ..Default::default()
            };
            let report = pgveil::control::load_crm(&config, &options).await?;
            println!("{report:?}");
            Ok(())
        }
        Command::Apply { config, dry_run } => {
            let config = Config::load(&config)?;
            print!("{}", pgveil::control::apply(&config, dry_run).await?);
            Ok(())
        }
        Command::Check { config } => {
            let config = Config::load(&config)?;
            let (report, errors) = pgveil::control::check(&config).await?;
            println!("{report}");
            anyhow::ensure!(!errors, "the policy has errors");
            Ok(())
        }
        Command::Explain {
            config,
            user,
            view,
            sql,
        } => {
            let config = Config::load(&config)?;
            print!(
                "{}",
                pgveil::control::explain(&config, &user, view.as_deref(), &sql)?
            );
            Ok(())
        }
    }
}

/// Runs one data-subject request and prints its result.
async fn subject(
    config: &std::path::Path,
    request: pgveil::subject::Request,
    actor: &str,
) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    print!(
        "{}",
        pgveil::control::subject(&config, request, actor).await?
    );
    Ok(())
}

/// Serves data-subject requests over HTTP until SIGTERM or Ctrl-C.
async fn subject_serve(
    config: &std::path::Path,
    listen: std::net::SocketAddr,
    token_file: &std::path::Path,
    actor: String,
) -> anyhow::Result<()> {
    let config = Config::load(config)?;
    let token = std::fs::read_to_string(token_file)
        .map_err(|e| anyhow::anyhow!("{}: cannot read the token: {e}", token_file.display()))?;
    let token = token.trim();
    anyhow::ensure!(
        token.len() >= pgveil::portal::MIN_TOKEN_LEN,
        "{}: the token must be at least {} characters (e.g. openssl rand -hex 32 > {0})",
        token_file.display(),
        pgveil::portal::MIN_TOKEN_LEN
    );
    let desk = pgveil::control::SubjectDesk::new(&config)?;
    let portal = pgveil::portal::Portal::new(desk, token.as_bytes().to_vec(), actor);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {listen}: {e}"))?;
    tracing::info!(addr = %listener.local_addr()?, "pgveil subject API listening");
    let shutdown = shutdown_signal()?;
    tokio::select! {
        () = pgveil::portal::serve(listener, std::sync::Arc::new(portal)) => {}
        () = shutdown => {}
    }
    Ok(())
}

/// Runs the proxy until SIGTERM or Ctrl-C, then shuts down gracefully. A
/// signal while waiting for PostgreSQL at startup exits at once.
async fn serve(path: PathBuf) -> anyhow::Result<()> {
    let config = Config::load(&path)?;
    if !pgveil::server::raise_open_file_limit() {
        tracing::warn!("cannot raise the open-file limit; sessions are limited by `ulimit -n`");
    }
    let shutdown = shutdown_signal()?;
    tokio::pin!(shutdown);
    let server = tokio::select! {
        server = pgveil::server::Server::bind(config) => server?,
        () = &mut shutdown => return Ok(()),
    };
    let admin = server.admin_addr().map(|addr| addr.to_string());
    tracing::info!(addr = %server.local_addr()?, admin = admin.as_deref(), "pgveil listening");
    tokio::spawn(reload_on_sighup(server.state()));
    server.run(shutdown).await;
    tracing::info!("pgveil stopped");
    Ok(())
}

/// Reloads the policy on each SIGHUP; a bad policy is logged and ignored.
async fn reload_on_sighup(state: std::sync::Arc<pgveil::server::ServerState>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; policy reload disabled");
        return;
    };
    while hangups.recv().await.is_some() {
        match state.reload_policy().await {
            Ok(()) => tracing::info!("policy reloaded"),
            Err(e) => {
                tracing::error!("policy reload failed, the previous policy stays in force: {e}")
            }
        }
    }
}

/// Completes on the first SIGTERM or SIGINT (Ctrl-C).
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
    })
}

/// Prints the report of `audit::verify`; fails unless the chain is intact.
fn audit_verify(files: &[PathBuf]) -> anyhow::Result<()> {
    let report = pgveil::audit::verify(files)?;
    println!("{report}");
    anyhow::ensure!(report.is_intact(), "the privacy log is not intact");
    Ok(())
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
