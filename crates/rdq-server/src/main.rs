//! `rdq`: the server (`serve`, `demo`) and its command-line client.
//!
//! Exit status: 0 on success, 1 when something failed, 2 for a usage or
//! configuration error.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::parser::ValueSource;
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use rdq_server::cli::CliError;
use rdq_server::config::{self, Config};
use rdq_server::serve::ServeError;

#[derive(Debug, Parser)]
#[command(
    name = "rdq",
    version,
    about = "Durable, rate-controlled job queues: a server and its client."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Run a server with a demo queue sending "SMS" to a fake gateway.
    Demo {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:7878")]
        listen: SocketAddr,
    },
    #[command(flatten)]
    Client(rdq_server::cli::Verb),
}

#[derive(Debug, clap::Args)]
struct ServeArgs {
    /// The configuration file.
    #[arg(long, short, env = "RDQ_CONFIG")]
    config: Option<PathBuf>,
    /// The SQLite database file (overrides server.db, server.database_url
    /// and RDQ_DATABASE_URL).
    #[arg(long)]
    db: Option<PathBuf>,
    /// Keep the jobs in PostgreSQL instead of a SQLite file, e.g.
    /// postgres://user:password@127.0.0.1:5432/rdq (overrides
    /// server.database_url). Several servers may share one database.
    #[arg(long, env = "RDQ_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Whether `database_url` came from the environment.
    #[arg(skip)]
    url_from_env: bool,
    /// Address to listen on (overrides server.listen).
    #[arg(long)]
    listen: Option<SocketAddr>,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        // Colours for a person at a terminal, not escape codes in a log file.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    // RDQ_DATABASE_URL in the environment gives way to an explicit --db.
    if let Command::Serve(args) = &mut cli.command {
        args.url_from_env = matches
            .subcommand_matches("serve")
            .and_then(|m| m.value_source("database_url"))
            == Some(ValueSource::EnvVariable);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rdq: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rdq: {e:#}");
            let code = match e.downcast_ref::<CliError>() {
                Some(e) => e.exit_code(),
                None => e
                    .downcast_ref::<ServeError>()
                    .map_or(1, ServeError::exit_code),
            };
            ExitCode::from(code)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => serve(args).await,
        Command::Demo { listen } => Ok(rdq_server::demo::run(listen).await?),
        Command::Client(verb) => Ok(rdq_server::cli::run(verb).await?),
    }
}

async fn serve(mut args: ServeArgs) -> anyhow::Result<()> {
    let mut config = match &args.config {
        Some(path) => config::load(path).map_err(|e| ServeError::Usage(e.to_string()))?,
        None => Config::default(),
    };
    if args.db.is_some() && args.url_from_env {
        args.database_url = None;
    }
    if args.db.is_some() && args.database_url.is_some() {
        return Err(ServeError::Usage(
            "give either --db (a SQLite file) or --database-url (PostgreSQL, also RDQ_DATABASE_URL), not both"
                .into(),
        )
        .into());
    }
    if let Some(db) = args.db {
        config.db = db;
        config.database_url = None;
    }
    if let Some(url) = args.database_url.filter(|u| !u.is_empty()) {
        config.database_url = Some(url);
    }
    if let Some(listen) = args.listen {
        config.listen = listen;
    }
    if let Ok(token) = std::env::var("RDQ_TOKEN") {
        if !token.is_empty() {
            config.token = Some(token);
        }
    }
    let queues: Vec<&str> = config.queues.iter().map(|q| q.name.as_str()).collect();
    let running = rdq_server::serve::start(config.clone()).await?;
    let database = match &config.database_url {
        Some(url) => format!(
            "{} schema {}",
            config::database::redact(url),
            config.database_schema
        ),
        None => config.db.display().to_string(),
    };
    println!(
        "rdq: listening on http://{} (database {database}, queues {queues:?})",
        running.addr,
    );
    running.wait().await?;
    Ok(())
}
