//! What each subcommand does. `main` parses the command line and calls [`run`].

mod serve;
mod user;

use std::process::ExitCode;

use crate::cli::{Cli, Command, SecretsCommand};
use crate::config::{Overrides, Settings, SECRET_NAMES};
use crate::ops::verify::Depth;
use crate::store::durability::{self, Marker};
use crate::store::{check_existing, newest_schema, schema_version, Db};

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let mut flags = Overrides {
        config: cli.config,
        database: cli.database,
        listen: None,
    };
    match cli.command {
        Command::Serve { listen } => {
            flags.listen = listen;
            serve::run(&Settings::load(&flags)?)
        }
        Command::Migrate => {
            let settings = Settings::load(&flags)?;
            let before = match settings.database.is_file() {
                true => schema_version(&settings.database)?,
                false => None,
            };
            with_db(&settings, |_| Ok(()))?;
            let (shown, newest) = (settings.database.display(), newest_schema());
            match before {
                Some(v) if v < newest => println!("database {shown} migrated from V{v} to V{newest}"),
                Some(_) => println!("database {shown} is up to date (V{newest})"),
                None => println!("database {shown} created at V{newest}"),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::User(cmd) => with_existing_db(&Settings::load(&flags)?, |db| user::run(db, cmd)),
        Command::Secrets(SecretsCommand::Generate) => {
            for name in SECRET_NAMES {
                println!("{name}={}", crate::security::random_secret_hex());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { out } => {
            let settings = Settings::load(&flags)?;
            let path = with_existing_db(&settings, |db| {
                crate::ops::backup::run(db, out.as_deref(), &settings.backup_dir)
            })?;
            println!("backup written to {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { full } => {
            let settings = Settings::load(&flags)?;
            // The one command a database with a failed write behind it may be opened by, once the
            // machine has rebooted: a pass puts the failure behind it. That pass is the full
            // check, the one for after a disk fault (`quick_check` does not compare indexes
            // with their tables).
            let after_failure = durability::marker(&settings.database)? == Marker::Rebooted;
            let depth = if full || after_failure {
                Depth::Full
            } else {
                Depth::Quick
            };
            check_existing(&settings.database)?;
            let report = open_and_run(&settings, |db| crate::ops::verify::run(db, depth))?;
            print!("{report}");
            if !report.ok() {
                return Ok(ExitCode::FAILURE);
            }
            if after_failure {
                durability::clear(&settings.database)?;
                println!("the write that failed before the last reboot left the database sound: the CRM may start");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Doctor => {
            let settings = Settings::load(&flags)?;
            let report = with_existing_db(&settings, |db| crate::ops::doctor::run(&settings, db))?;
            print!("{report}");
            Ok(if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// [`with_db`] for the commands that check, copy or manage a database: a path that names no
/// CRM database is a mistake (a typo in a cron job, a failed copy), and creating or migrating one
/// there would pass every check or add a user nobody can use (see [`check_existing`]).
fn with_existing_db<T>(settings: &Settings, command: impl FnOnce(&Db) -> anyhow::Result<T>) -> anyhow::Result<T> {
    check_existing(&settings.database)?;
    with_db(settings, command)
}

/// Opens the database (creating it if needed), runs `command` on it and closes it (see [`Db::close`]): with no server
/// running, the command's writes are then in `crm.db` itself, not left in its WAL. Not after a
/// failed write that `crm verify` has not checked (see [`durability`]).
fn with_db<T>(settings: &Settings, command: impl FnOnce(&Db) -> anyhow::Result<T>) -> anyhow::Result<T> {
    durability::require_verified(&settings.database)?;
    open_and_run(settings, command)
}

fn open_and_run<T>(settings: &Settings, command: impl FnOnce(&Db) -> anyhow::Result<T>) -> anyhow::Result<T> {
    let db = Db::open(&settings.database)?;
    let outcome = command(&db);
    let closed = db.close();
    let value = outcome?;
    closed?;
    Ok(value)
}
