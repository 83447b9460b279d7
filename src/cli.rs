//! The command line: one subcommand per operator task.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::domain::Role;

#[derive(Debug, Parser)]
#[command(
    name = "crm",
    version,
    about = "CRM and back office for small forex/CFD brokers: one binary, one SQLite file.",
    long_about = "CRM and back office for small forex/CFD brokers.\n\n\
        Start with `crm serve`: with no configuration it listens on 127.0.0.1:8080, keeps its data in \
        ./data/crm.db, generates any missing secrets into ./data/secrets.env and prints a one-time \
        password for the first `admin` user.\n\n\
        Configuration comes from crm.toml (or --config), then environment variables, then flags."
)]
pub struct Cli {
    /// Configuration file (default: ./crm.toml if it exists; env CRM_CONFIG)
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// SQLite database file (default: ./data/crm.db; env CRM_DATABASE)
    #[arg(long, global = true, value_name = "PATH")]
    pub database: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the CRM: webhook receiver, service API, staff API and admin page. Applies pending
    /// migrations first.
    Serve {
        /// Address to listen on, IP:PORT (default 127.0.0.1:8080; env CRM_LISTEN)
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Manage the broker staff who log in to the admin page.
    #[command(subcommand)]
    User(UserCommand),
    /// Work with the four integration secrets.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Write a consistent snapshot of the database to one file (safe while `serve` runs).
    Backup {
        /// Where to write it; a file there is replaced (default: crm-backup-<time>.db in the backup folder, `backups/` beside the database unless configured)
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Check the database: integrity, balances against the ledger, the audit chain. Exits
    /// non-zero on any failure.
    Verify {
        /// Also check every index entry against its row (SQLite's `integrity_check` instead of
        /// `quick_check`): several times slower on a large database.
        #[arg(long)]
        full: bool,
    },
    /// The integration guide's pre-production checklist, checked automatically: one line per
    /// item with ok, warn or FAIL and how to fix it. Exits non-zero on any FAIL.
    Doctor,
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a staff user. Without --password-stdin a password is generated and printed once.
    Add(UserAdd),
    /// List staff users.
    List,
    /// Disable a staff user: they can no longer log in and their sessions stop working at once.
    /// The last active admin cannot be disabled.
    Disable {
        #[arg(long)]
        email: String,
    },
    /// Enable a disabled staff user again (they log in afresh).
    Enable {
        #[arg(long)]
        email: String,
    },
    /// Set a new password. Without --password-stdin one is generated and printed once.
    ResetPassword {
        #[arg(long)]
        email: String,
        /// Read the new password from standard input instead of generating one
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Args)]
pub struct UserAdd {
    #[arg(long)]
    pub email: String,
    /// Display name
    #[arg(long)]
    pub name: String,
    /// admin (everything), manager (read, notes, KYC) or agent (read, notes)
    #[arg(long, value_parser = parse_role)]
    pub role: Role,
    /// Read the password from standard input instead of generating one
    #[arg(long)]
    pub password_stdin: bool,
}

fn parse_role(s: &str) -> Result<Role, String> {
    s.parse().map_err(|e: crate::domain::Invalid| e.0)
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Print fresh JWT_SECRET, WEBHOOK_SECRET, SERVICE_API_TOKEN and SSO_SECRET lines
    /// (32 random bytes each, hex), ready for an environment file.
    Generate,
}
