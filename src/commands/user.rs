//! `crm user ...`: staff upkeep from the command line, audited as actor `cli`.

use std::io::Read;
use std::process::ExitCode;

use anyhow::Context;

use crate::cli::UserCommand;
use crate::domain::{Email, Role};
use crate::security::{password, random_password};
use crate::store::audit::{self, Audit};
use crate::store::{staff, Db};

const ACTOR: &str = "cli";

pub fn run(db: &Db, cmd: UserCommand) -> anyhow::Result<ExitCode> {
    match cmd {
        UserCommand::Add(add) => {
            let email = Email::parse(&add.email)?;
            let name = add.name.trim().to_string();
            anyhow::ensure!(!name.is_empty(), "--name must not be empty");
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
        UserCommand::Disable { email } => {
            let email = Email::parse(&email)?;
            db.write_sync(|tx| {
                let user = staff::by_email(tx, &email)?;
                staff::set_disabled(tx, &user.id, true)?;
                audit::append(tx, &Audit::new(ACTOR, "staff.disable", format!("staff:{}", user.email)))?;
                Ok(())
            })?;
            println!("disabled {email}");
        }
        UserCommand::ResetPassword { email, password_stdin } => {
            let email = Email::parse(&email)?;
            let (pw, generated) = choose_password(password_stdin)?;
            let hash = password::hash(&pw)?;
            db.write_sync(|tx| {
                let user = staff::by_email(tx, &email)?;
                staff::set_password_hash(tx, &user.id, &hash)?;
                audit::append(
                    tx,
                    &Audit::new(ACTOR, "staff.reset_password", format!("staff:{}", user.email)),
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
    Ok(db.write_sync(|tx| {
        let user = staff::insert(tx, email, name, role, &hash)?;
        audit::append(
            tx,
            &Audit::new(actor, "staff.create", format!("staff:{}", user.email)).detail("role", role.as_str()),
        )?;
        Ok(user)
    })?)
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
