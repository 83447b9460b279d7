//! `crm verify`: the database checks an operator runs after a crash, a restore or a suspicion.

use std::fmt;

use crate::store::{accounts, audit, Db};

#[derive(Debug, Default)]
pub struct Report {
    pub checks: Vec<(String, Vec<String>)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|(_, problems)| problems.is_empty())
    }

    fn add(&mut self, name: &str, problems: Vec<String>) {
        self.checks.push((name.to_string(), problems));
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (name, problems) in &self.checks {
            if problems.is_empty() {
                writeln!(f, "ok    {name}")?;
            } else {
                writeln!(f, "FAIL  {name}")?;
                for p in problems.iter().take(20) {
                    writeln!(f, "      - {p}")?;
                }
                if problems.len() > 20 {
                    writeln!(f, "      ... and {} more", problems.len() - 20)?;
                }
            }
        }
        writeln!(
            f,
            "{}",
            if self.ok() {
                "verify: all checks passed"
            } else {
                "verify: FAILED"
            }
        )
    }
}

pub fn run(db: &Db) -> anyhow::Result<Report> {
    Ok(db.read_sync(|conn| {
        let mut report = Report::default();
        let integrity: Vec<String> = conn
            .prepare("PRAGMA integrity_check")?
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .filter(|line| line != "ok")
            .collect();
        report.add("SQLite integrity check", integrity);

        let fk: Vec<String> = conn
            .prepare("PRAGMA foreign_key_check")?
            .query_map([], |r| {
                Ok(format!(
                    "{} row {} points at a missing {}",
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, String>(2)?
                ))
            })?
            .collect::<Result<_, _>>()?;
        report.add("foreign keys", fk);

        report.add(
            "every balance equals the sum of its ledger entries",
            accounts::ledger_mismatches(conn)?,
        );

        let negative: Vec<String> = conn
            .prepare("SELECT id FROM accounts WHERE real_balance < 0 OR demo_balance < 0 OR bonus_balance < 0")?
            .query_map([], |r| {
                Ok(format!("account {} has a negative fund", r.get::<_, String>(0)?))
            })?
            .collect::<Result<_, _>>()?;
        report.add("no negative funds", negative);

        report.add("audit log hash chain", audit::verify_chain(conn)?.into_iter().collect());
        Ok(report)
    })?)
}
