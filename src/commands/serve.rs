//! `crm serve`: first-run setup, then the HTTP server until SIGINT/SIGTERM.

use std::process::ExitCode;

use anyhow::Context;

use crate::config::{resolve_secrets, LogFormat, Settings};
use crate::domain::{Email, Role};
use crate::http::{self, AppState};
use crate::security::random_password;
use crate::store::{audit_index, staff, Db};

pub fn run(settings: &Settings) -> anyhow::Result<ExitCode> {
    init_logging(settings.log_format)?;
    if std::path::Path::new(crate::config::DOTENV_FILE).is_file() {
        tracing::info!("settings the environment does not set are read from ./.env too");
    }
    // A port in use stops start-up before anything is created or printed (a first run's admin
    // password, shown once, would otherwise be lost with the failed start). Only tried here:
    // held through a long migration, the port would take connections nobody answers, where a
    // refused one tells the platform at once to retry.
    let cannot_listen = || format!("cannot listen on {}", settings.listen);
    drop(std::net::TcpListener::bind(settings.listen).with_context(cannot_listen)?);
    crate::store::durability::require_verified(&settings.database)?;
    // Like unsafe secrets, this stops start-up before the database is created.
    if crate::config::is_placeholder(&settings.trading_platform_url) {
        anyhow::bail!(
            "TRADING_PLATFORM_URL is the guide's example {}: impersonation would hand SSO tokens to a domain \
             someone else owns. Set it to the trading platform's https:// address",
            settings.trading_platform_url
        );
    }
    // Unsafe secrets stop start-up before the database is created, too.
    let (secrets, generated) = resolve_secrets(settings)?;
    let db = Db::open(&settings.database)?;
    if !generated.is_empty() {
        eprintln!(
            "WARNING: {} not configured: generated and stored in {} (mode 0600).\n\
             WARNING: fine for a trial; for production set your own (`crm secrets generate`) and share \
             them with the Trading Platform team over a secure channel.",
            generated.join(", "),
            settings.secrets_file().display()
        );
    }
    if !settings.trading_platform_url.starts_with("https://") {
        // The default, so a first run works; but each impersonation hands a live SSO token to
        // this address, in the clear.
        eprintln!(
            "WARNING: TRADING_PLATFORM_URL is {} (not https): impersonation sends SSO tokens there \
             unencrypted. Set it to the trading platform's https:// address.",
            settings.trading_platform_url
        );
    }
    bootstrap_admin(&db)?;
    db.write_sync(|tx| {
        for (name, secret) in secrets.named() {
            crate::store::secret_history::record(tx, name, secret.expose())?;
        }
        Ok(())
    })?;

    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(settings.listen)
            .await
            .with_context(cannot_listen)?;
        let addr = listener.local_addr()?;
        let shutdown = shutdown_signal()?;
        tracing::info!(%addr, database = %settings.database.display(), "CRM started");
        // Tests and scripts read this line to learn the port when listening on :0.
        println!("listening on http://{addr}");
        let (stop_backups, backups_stop) = tokio::sync::watch::channel(());
        let backups = settings.backup_interval.map(|interval| {
            tokio::spawn(crate::ops::backup::schedule(
                db.clone(),
                settings.backup_dir.clone(),
                interval,
                settings.backup_keep,
                backups_stop,
            ))
        });
        let indexer = audit_index::spawn(db.clone()).context("cannot start the audit index thread")?;
        let state = AppState::new(db.clone(), settings.clone(), secrets);
        http::serve(state.clone(), listener, shutdown).await;
        state.flush_refusal_counts();
        // A backup still reading would hold up the fold below: it finishes first.
        drop(stop_backups);
        if let Some(backups) = backups {
            backups.await?;
        }
        tokio::task::spawn_blocking(|| indexer.stop()).await?;
        let db = db.clone();
        tokio::task::spawn_blocking(move || fold_wal(&db)).await?;
        tracing::info!("CRM stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    // A supervisor should see that this run ended with the database refused (see durability).
    Ok(if db.sync_failed() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Up to 128 MiB of committed writes may still be in the WAL (see store::checkpoint): folded into
/// the database file on the way out, so `crm.db` alone is the whole database. Another program
/// reading it (`crm verify`, `crm backup`) holds the fold up; it is retried for half a minute,
/// then the WAL is left in place, said loudly: it must stay beside `crm.db`.
fn fold_wal(db: &Db) {
    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
    if db.sync_failed() {
        // Said at the failure; folding would copy what may not be on the disk (see durability).
        return;
    }
    let started = std::time::Instant::now();
    loop {
        match db.checkpoint_fully() {
            Ok(()) => return,
            Err(e) if started.elapsed() >= PATIENCE => {
                tracing::error!(
                    error = %e,
                    "could not fold the WAL into the database file on the way out: keep crm.db-wal beside crm.db (it holds committed writes)"
                );
                return;
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(200)),
        }
    }
}

/// With no staff user at all, nobody could log in: create `admin` and print its password once.
fn bootstrap_admin(db: &Db) -> anyhow::Result<()> {
    if db.read_sync(staff::count)? > 0 {
        return Ok(());
    }
    let email = Email::parse("admin@crm.local")?;
    let password = random_password();
    super::user::create_staff(db, &email, "admin", Role::Admin, &password, "system")?;
    println!(
        "First run: created the admin user.\n  email:    {email}\n  password: {password}\n\
         This password is shown only once. Log in at the admin page and change it, or reset it with \
         `crm user reset-password --email {email}`."
    );
    Ok(())
}

/// `CRM_LOG`: a level (`error`, `warn`, `info`, `debug`, `trace`, `off`) or `target=level`
/// directives. A bare word that is no level would be read as a target and silence everything
/// else (`warning`, `verbose`), so it is refused like any other bad setting.
fn log_filter() -> anyhow::Result<tracing_subscriber::EnvFilter> {
    const LEVELS: [&str; 6] = ["error", "warn", "info", "debug", "trace", "off"];
    let raw = match std::env::var("CRM_LOG") {
        Ok(raw) if !raw.trim().is_empty() => raw,
        // The migration library logs every start at info, with paths from the build machine.
        _ => return Ok(tracing_subscriber::EnvFilter::new("info,refinery_core=warn")),
    };
    let bare_word = raw
        .split(',')
        .map(str::trim)
        .find(|d| !d.is_empty() && !d.contains('=') && !LEVELS.contains(&d.to_ascii_lowercase().as_str()));
    if let Some(word) = bare_word {
        anyhow::bail!(
            "CRM_LOG: {word:?} is not a log level; use one of {} (or target=level directives)",
            LEVELS.join(", ")
        );
    }
    tracing_subscriber::EnvFilter::try_new(&raw).map_err(|e| anyhow::anyhow!("CRM_LOG: {e}"))
}

fn init_logging(format: LogFormat) -> anyhow::Result<()> {
    let filter = log_filter()?;
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
    Ok(())
}

/// Listens for SIGINT and SIGTERM. The handlers are installed here, before the server says it
/// is listening, so a signal sent right after start-up is never missed (the default action
/// would kill the process mid-request).
#[cfg(unix)]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {},
            _ = terminate.recv() => {},
        }
        tracing::info!("shutting down: finishing requests in flight");
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()> + Send + 'static> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutting down: finishing requests in flight");
    })
}
