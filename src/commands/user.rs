//! `crm user ...`: staff upkeep from the command line, audited as actor `cli`.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::UserCommand;
use crate::domain::{Email, Role};
use crate::security::{password, random_password};
use crate::store::audit::{self, actions, Audit};
use crate::store::{staff, Db, StoreError};

const ACTOR: &str = audit::actors::CLI;

pub fn run(db: &Db, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UserCommand::Add(add) => {
            let email = Email::parse(&add.email)?;
            let name = staff::valid_name(&add.name).map_err(|e| anyhow::anyhow!("--name: {e}"))?;
            let (pw, generated) = choose_password(add.password_stdin)?;
            let user = create_staff(db, &email, &name, add.role, &pw, ACTOR)?;
            println!("created {} user {} ({})", user.role, user.email, user.id);
            if generated {
                println!("password (shown once): {pw}");
            }
        }
        UserCommand::List => {
            for u in db.read_sync(staff::list)? {
                let state = if u.disabled { "disabled" } else { "active" };
                println!("{:<40} {:<8} {:<9} {}", u.email, u.role, state, u.name);
            }
        }
        UserCommand::Disable { email } => set_disabled(db, &email, true)?,
        UserCommand::Enable { email } => set_disabled(db, &email, false)?,
        UserCommand::ResetPassword { email, password_stdin } => {
            let email = Email::parse(&email)?;
            let (pw, generated) = choose_password(password_stdin)?;
            let hash = password::hash(&pw)?;
            db.write_sync(|tx| {
                let user = staff::by_email(tx, &email)?;
                staff::set_password_hash(tx, &user.id, &hash)?;
                audit::append(
                    tx,
                    &Audit::new(
                        ACTOR,
                        actions::STAFF_RESET_PASSWORD,
                        audit::target("staff", &user.email),
                    ),
                )?;
                Ok(())
            })?;
            println!("password reset for {email}");
            if generated {
                println!("password (shown once): {pw}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Disables or enables a user under the staff API's rules (`staff::change`), audited the same way
/// (`staff.update`); a user already so is left alone, with nothing written.
fn set_disabled(db: &Db, email: &str, disabled: bool) -> anyhow::Result<()> {
    let email = Email::parse(email)?;
    let word = if disabled { "disabled" } else { "enabled" };
    let changed = db.write_sync(|tx| {
        let user = staff::by_email(tx, &email)?;
        if user.disabled == disabled {
            return Ok(false);
        }
        let entry = Audit::new(ACTOR, actions::STAFF_UPDATE, audit::target("staff", &user.email));
        let change = staff::Change {
            disabled: Some(disabled),
            ..staff::Change::default()
        };
        staff::change(tx, &user.id, change, None, entry)?;
        Ok(true)
    });
    // Refused (the last active admin, no such user): audited as the staff API audits it.
    let changed = match changed {
        Err(e @ (StoreError::Conflict(_) | StoreError::NotFound(_))) => {
            let failed = Audit::new(ACTOR, actions::STAFF_UPDATE, audit::target("staff", &email))
                .failed()
                .detail("error", e.to_string())
                .detail("disabled", disabled);
            db.write_sync(|tx| audit::append(tx, &failed).map(drop))?;
            return Err(e.into());
        }
        other => other?,
    };
    if changed {
        println!("{word} {email}");
    } else {
        println!("{email} was already {word}");
    }
    Ok(())
}

/// Creates a staff user and audits it in one transaction.
pub fn create_staff(
    db: &Db,
    email: &Email,
    name: &str,
    role: Role,
    pw: &str,
    actor: &str,
) -> anyhow::Result<staff::StaffUser> {
    password::check_strength(pw).map_err(anyhow::Error::msg)?;
    let hash = password::hash(pw)?;
    let entry = Audit::new(actor, actions::STAFF_CREATE, audit::target("staff", email));
    Ok(db.write_sync(|tx| staff::create(tx, email, name, role, &hash, entry))?)
}

fn choose_password(from_stdin: bool) -> anyhow::Result<(String, bool)> {
    if !from_stdin {
        return Ok((random_password(), true));
    }
    let mut input = String::new();
    std::io::stdin()
        .read_to_string(&mut input)
        .context("cannot read the password from standard input")?;
    let pw = input.trim_end_matches(['\r', '\n']).to_string();
    password::check_strength(&pw).map_err(anyhow::Error::msg)?;
    Ok((pw, false))
}
