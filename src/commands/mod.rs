//! What each subcommand does. `main` parses the command line and calls [`run`].

mod serve;
mod user;

use std::process::ExitCode;

use crate::cli::{Cli, Command, SecretsCommand};
use crate::config::{Overrides, Settings, SECRET_NAMES};
use crate::ops::verify::Depth;
use crate::store::Db;

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
            Db::open(&settings.database)?;
            println!("database {} is up to date", settings.database.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::User(cmd) => user::run(&open_db(&flags)?, cmd),
        Command::Secrets(SecretsCommand::Generate) => {
            for name in SECRET_NAMES {
                println!("{name}={}", crate::security::random_secret_hex());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Backup { out } => {
            let settings = Settings::load(&flags)?;
            let db = Db::open(&settings.database)?;
            let path = crate::ops::backup::run(&db, out.as_deref(), &settings.backup_dir)?;
            println!("backup written to {}", path.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify { full } => {
            let depth = if full { Depth::Full } else { Depth::Quick };
            let report = crate::ops::verify::run(&open_db(&flags)?, depth)?;
            print!("{report}");
            Ok(if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Doctor => {
            let settings = Settings::load(&flags)?;
            let db = Db::open(&settings.database)?;
            let report = crate::ops::doctor::run(&settings, &db)?;
            print!("{report}");
            Ok(if report.failed() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn open_db(flags: &Overrides) -> anyhow::Result<Db> {
    Db::open(&Settings::load(flags)?.database)
}
