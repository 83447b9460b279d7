//! Typed settings. Precedence, lowest first: built-in defaults, `crm.toml`, a `.env` file in the
//! working directory, environment variables (the guide's names, `*_PREVIOUS`, `CRM_*`),
//! command-line flags.
//!
//! Secrets are held in [`Secret`], whose `Debug` never shows the value, so no log line or error
//! can leak one. A secret not configured anywhere is taken from `secrets.env` beside the
//! database, generating it there on first run (see [`resolve_secrets`]).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::security::random_secret_hex;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_DATABASE: &str = "./data/crm.db";
pub const DEFAULT_CONFIG_FILE: &str = "crm.toml";
pub const SECRETS_FILE: &str = "secrets.env";
/// Read from the working directory, beneath the environment (see [`Settings::load`]).
pub const DOTENV_FILE: &str = ".env";
const MIN_SECRET_LEN: usize = 16;

/// A secret value. Prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn bytes(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The four secrets of the guide, by their environment names.
pub const SECRET_NAMES: [&str; 4] = ["JWT_SECRET", "WEBHOOK_SECRET", "SERVICE_API_TOKEN", "SSO_SECRET"];
/// The ones that may have a `*_PREVIOUS` twin during rotation.
pub const ROTATING_NAMES: [&str; 3] = ["JWT_SECRET", "WEBHOOK_SECRET", "SERVICE_API_TOKEN"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Where a secret came from; `crm doctor` warns about generated ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretOrigin {
    ConfigFile,
    Environment,
    SecretsFile,
    Generated,
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub config_file: Option<PathBuf>,
    pub listen: SocketAddr,
    pub database: PathBuf,
    pub trading_platform_url: String,
    /// Requests per minute per service-API caller; 0 switches the limit off.
    pub service_rate_limit: u32,
    pub webhook_max_body_bytes: usize,
    /// How long a client may take to send a request body once its headers are in.
    pub body_timeout: Duration,
    pub log_format: LogFormat,
    /// Where `serve` writes scheduled backups, how often (`None` = never) and how many it keeps.
    pub backup_dir: PathBuf,
    pub backup_interval: Option<Duration>,
    pub backup_keep: usize,
    /// The address staff and the Trading Platform use, e.g. behind a TLS proxy; `crm doctor`
    /// checks that it is https.
    pub public_url: Option<String>,
    /// Reverse proxies whose `X-Forwarded-For` is believed (see `http::resolve_client_ip`); empty
    /// means the TCP peer is the client.
    pub trusted_proxies: Vec<IpAddr>,
    /// Configured secrets by environment name (including `*_PREVIOUS`), before first-run fill-in.
    pub secrets: BTreeMap<String, (Secret, SecretOrigin)>,
}

/// Command-line flags that override everything else.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub config: Option<PathBuf>,
    pub listen: Option<String>,
    pub database: Option<PathBuf>,
}

/// `crm.toml`. Unknown keys stop start-up, so a typo never silently falls back to a default.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    database: Option<PathBuf>,
    trading_platform_url: Option<String>,
    service_rate_limit: Option<u32>,
    webhook_max_body_bytes: Option<usize>,
    body_timeout_secs: Option<u64>,
    log_format: Option<String>,
    backup_dir: Option<PathBuf>,
    backup_interval: Option<String>,
    backup_keep: Option<usize>,
    public_url: Option<String>,
    trusted_proxies: Option<Vec<String>>,
    jwt_secret: Option<String>,
    jwt_secret_previous: Option<String>,
    webhook_secret: Option<String>,
    webhook_secret_previous: Option<String>,
    service_api_token: Option<String>,
    service_api_token_previous: Option<String>,
    sso_secret: Option<String>,
}

/// A start-up configuration problem, phrased as one line that names the key and the fix.
#[derive(Debug, thiserror::Error)]
#[error("configuration error: {0}")]
pub struct ConfigError(pub String);

fn err(msg: impl Into<String>) -> ConfigError {
    ConfigError(msg.into())
}

impl Settings {
    /// Loads settings from the process environment.
    pub fn load(flags: &Overrides) -> Result<Settings, ConfigError> {
        // `std::env::var` refuses a value that is not UTF-8, which would leave the setting at
        // its default without a word: a database other than the one meant, say.
        let unreadable = std::env::vars_os().find_map(|(name, value)| {
            let name = name.to_str()?;
            let read = name.starts_with("CRM_")
                || name == "TRADING_PLATFORM_URL"
                || SECRET_NAMES.iter().any(|s| name.starts_with(s));
            (read && value.to_str().is_none()).then(|| name.to_string())
        });
        if let Some(name) = unreadable {
            return Err(err(format!(
                "{name} is not valid UTF-8; give that setting on the command line or in crm.toml instead"
            )));
        }
        // The guide's Step 2 names a `.env` file as a place for the secrets: one in the working
        // directory fills in what the environment does not set, as dotenv does.
        let dotenv = read_env_file(Path::new(DOTENV_FILE))?;
        Settings::load_with(flags, &|name| match std::env::var(name) {
            // A previous secret set empty ends its rotation, whatever a file still holds (see
            // `load_with`); any other setting left empty (a compose file's `${VAR}` of an unset
            // one) falls back to the file.
            Ok(v) if v.trim().is_empty() && !name.ends_with("_PREVIOUS") => dotenv.get(name).cloned(),
            Ok(v) => Some(v),
            Err(_) => dotenv.get(name).cloned(),
        })
    }

    /// Loads settings with `env` standing in for the environment (tests pass a map).
    pub fn load_with(flags: &Overrides, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let set_empty = |name: &str| env(name).is_some_and(|v| v.trim().is_empty());
        let env = |name: &str| env(name).filter(|v| !v.trim().is_empty());
        let explicit_config = flags.config.clone().or_else(|| env("CRM_CONFIG").map(PathBuf::from));
        let (file, config_file) = match explicit_config {
            Some(path) => (read_file(&path)?, Some(path)),
            None if Path::new(DEFAULT_CONFIG_FILE).exists() => (
                read_file(Path::new(DEFAULT_CONFIG_FILE))?,
                Some(PathBuf::from(DEFAULT_CONFIG_FILE)),
            ),
            None => (FileConfig::default(), None),
        };

        let listen_raw = flags
            .listen
            .clone()
            .or_else(|| env("CRM_LISTEN"))
            .or(file.listen.clone())
            .unwrap_or_else(|| DEFAULT_LISTEN.into());
        let listen = listen_raw.parse().map_err(|_| {
            err(format!(
                "listen address '{listen_raw}' is not valid: use IP:PORT such as 127.0.0.1:8080"
            ))
        })?;

        let database = flags
            .database
            .clone()
            .or_else(|| env("CRM_DATABASE").map(PathBuf::from))
            .or(file.database.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATABASE));

        let trading_platform_url = env("TRADING_PLATFORM_URL")
            .or(file.trading_platform_url.clone())
            .unwrap_or_else(|| "http://localhost:3000".into());
        let trading_platform_url = trading_platform_url.trim_end_matches('/').to_string();
        if !(trading_platform_url.starts_with("https://") || trading_platform_url.starts_with("http://")) {
            return Err(err(
                "TRADING_PLATFORM_URL must start with https:// (or http:// for local testing)",
            ));
        }

        let service_rate_limit = number("CRM_SERVICE_RATE_LIMIT", &env, file.service_rate_limit, 100)?;
        let webhook_max_body_bytes = number(
            "CRM_WEBHOOK_MAX_BODY_BYTES",
            &env,
            file.webhook_max_body_bytes,
            1024 * 1024,
        )?;
        if webhook_max_body_bytes < 1024 {
            return Err(err("webhook_max_body_bytes must be at least 1024"));
        }
        let body_timeout_secs = number("CRM_BODY_TIMEOUT_SECS", &env, file.body_timeout_secs, 30)?;
        if !(1..=3600).contains(&body_timeout_secs) {
            return Err(err("body_timeout_secs must be between 1 and 3600"));
        }
        let backup_interval = match env("CRM_BACKUP_INTERVAL").or(file.backup_interval.clone()) {
            Some(text) => parse_interval(&text).ok_or_else(|| {
                err(format!(
                    "backup_interval '{text}' is not valid: use a number with s, m, h or d (\"24h\"), or \"off\""
                ))
            })?,
            None => Some(Duration::from_secs(24 * 3600)),
        };
        let backup_keep = number("CRM_BACKUP_KEEP", &env, file.backup_keep, 7)?;
        if backup_keep == 0 {
            return Err(err(
                "backup_keep must be at least 1: set backup_interval = \"off\" to turn backups off",
            ));
        }
        let backup_dir = env("CRM_BACKUP_DIR")
            .map(PathBuf::from)
            .or(file.backup_dir.clone())
            .unwrap_or_else(|| database.parent().unwrap_or(Path::new(".")).join("backups"));
        let public_url = env("CRM_PUBLIC_URL")
            .or(file.public_url.clone())
            .map(|u| u.trim_end_matches('/').to_string());

        let trusted_proxies = match env("CRM_TRUSTED_PROXIES") {
            Some(list) => parse_proxies(list.split(','))?,
            None => parse_proxies(file.trusted_proxies.iter().flatten().map(String::as_str))?,
        };

        let log_format = match env("CRM_LOG_FORMAT").or(file.log_format.clone()).as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(err(format!(
                    "log_format '{other}' is not known: use \"text\" or \"json\""
                )))
            }
        };

        let mut secrets = BTreeMap::new();
        let from_file = [
            ("JWT_SECRET", &file.jwt_secret),
            ("JWT_SECRET_PREVIOUS", &file.jwt_secret_previous),
            ("WEBHOOK_SECRET", &file.webhook_secret),
            ("WEBHOOK_SECRET_PREVIOUS", &file.webhook_secret_previous),
            ("SERVICE_API_TOKEN", &file.service_api_token),
            ("SERVICE_API_TOKEN_PREVIOUS", &file.service_api_token_previous),
            ("SSO_SECRET", &file.sso_secret),
        ];
        for (name, value) in from_file {
            let chosen = match env(name) {
                Some(v) => Some((v, SecretOrigin::Environment)),
                // `WEBHOOK_SECRET_PREVIOUS=` ends the rotation even while crm.toml holds the old
                // value, so a leaked secret stops working when the operator says so.
                None if name.ends_with("_PREVIOUS") && set_empty(name) => None,
                None => value
                    .clone()
                    .filter(|v| !v.trim().is_empty())
                    .map(|v| (v, SecretOrigin::ConfigFile)),
            };
            if let Some((value, origin)) = chosen {
                check_secret(name, &value)?;
                secrets.insert(name.to_string(), (Secret::new(value.trim()), origin));
            }
        }

        Ok(Settings {
            config_file,
            listen,
            database,
            trading_platform_url,
            service_rate_limit,
            webhook_max_body_bytes,
            body_timeout: Duration::from_secs(body_timeout_secs),
            log_format,
            backup_dir,
            backup_interval,
            backup_keep,
            public_url,
            trusted_proxies,
            secrets,
        })
    }

    /// Where `secrets.env` lives: beside the database.
    pub fn secrets_file(&self) -> PathBuf {
        self.database.parent().unwrap_or(Path::new(".")).join(SECRETS_FILE)
    }
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text =
        std::fs::read_to_string(path).map_err(|e| err(format!("cannot read config file {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let msg = e.message().to_string();
        // toml's message says what is wrong but not where; name the line and its key (never the
        // value: it may be a secret).
        let place = e
            .span()
            .and_then(|span| text.get(..span.start))
            .map(|before| {
                let line_no = before.matches('\n').count() + 1;
                let line = text.lines().nth(line_no - 1).unwrap_or("");
                let key = line.split_once('=').map_or("", |(k, _)| k.trim());
                format!(" line {line_no} ({key})")
            })
            .unwrap_or_default();
        err(format!(
            "{}{place}: {msg} (see crm.toml.example for every key)",
            path.display()
        ))
    })
}

/// `"30s"`, `"15m"`, `"24h"`, `"7d"`; `"off"` or `"0"` is `Some(None)`; anything else `None`.
fn parse_interval(text: &str) -> Option<Option<Duration>> {
    let text = text.trim();
    if text == "off" || text == "0" {
        return Some(None);
    }
    let unit = match text.chars().last()? {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86400,
        _ => return None,
    };
    let n: u64 = text[..text.len() - 1].parse().ok().filter(|n| *n > 0)?;
    Some(Some(Duration::from_secs(n.checked_mul(unit)?)))
}

/// `trusted_proxies` entries: plain IP addresses (IPv4-mapped IPv6 ones read as IPv4, the way
/// peers are compared); blank entries are skipped so a trailing comma does no harm.
fn parse_proxies<'a>(entries: impl Iterator<Item = &'a str>) -> Result<Vec<IpAddr>, ConfigError> {
    entries
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .map(|e| {
            e.parse::<IpAddr>().map(|ip| ip.to_canonical()).map_err(|_| {
                err(format!(
                    "trusted_proxies (CRM_TRUSTED_PROXIES) entry '{e}' is not an IP address: list your reverse \
                     proxy's address, such as 127.0.0.1 (no ports, no ranges)"
                ))
            })
        })
        .collect()
}

/// A whole number from the environment, else the file, else the default; a bad one names its key.
fn number<T: std::str::FromStr>(
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
    from_file: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    match env(name) {
        Some(v) => v.trim().parse().map_err(|_| {
            let key = name.trim_start_matches("CRM_").to_lowercase();
            err(format!(
                "{name} (or {key} in crm.toml) '{v}' is not a valid whole number"
            ))
        }),
        None => Ok(from_file.unwrap_or(default)),
    }
}

fn check_secret(name: &str, value: &str) -> Result<(), ConfigError> {
    if value.trim().len() < MIN_SECRET_LEN {
        return Err(err(format!(
            "{name} is too short: use at least {MIN_SECRET_LEN} characters; `crm secrets generate` prints good ones"
        )));
    }
    Ok(())
}

/// The guide's and `crm.toml.example`'s placeholders pasted as they are:
/// `<your-generated-webhook-secret>`, `<64 hex characters>`, `https://trading.yourcompany.com`
/// (only their shapes: a real secret may hold `<`, a real address `your-`).
pub fn is_placeholder(value: &str) -> bool {
    let lower = value.trim().trim_matches(['"', '\'']).to_ascii_lowercase();
    (lower.starts_with('<') && lower.ends_with('>'))
        || ["<your-", "<same-as-", "://trading.yourcompany.com"]
            .iter()
            .any(|shape| lower.contains(shape))
}

/// The pairs of secrets, by name, that hold one value for two purposes (a secret and its own
/// `_PREVIOUS` are one purpose). For `serve`, which refuses them, and `crm doctor`.
pub fn shared_values<'a>(named: &[(&'a str, &str)]) -> Vec<(&'a str, &'a str)> {
    let purpose = |name: &str| name.trim_end_matches("_PREVIOUS").to_string();
    let mut pairs = Vec::new();
    for (i, (name, value)) in named.iter().enumerate() {
        for (other, other_value) in &named[i + 1..] {
            if purpose(name) != purpose(other) && value == other_value {
                pairs.push((*name, *other));
            }
        }
    }
    pairs
}

/// Every secret the server needs, resolved.
#[derive(Debug, Clone)]
pub struct Secrets {
    pub jwt: Secret,
    pub jwt_previous: Option<Secret>,
    pub webhook: Secret,
    pub webhook_previous: Option<Secret>,
    pub service_token: Secret,
    pub service_token_previous: Option<Secret>,
    pub sso: Secret,
    pub origins: BTreeMap<String, SecretOrigin>,
}

impl Secrets {
    /// Refuses secrets that would let someone else in: the guide's placeholder text (known to
    /// everyone who read the guide), or one value used for two purposes. The platform holds
    /// `SSO_SECRET` and `SERVICE_API_TOKEN`; were either also `JWT_SECRET`, it could sign staff
    /// sessions. (`crm doctor` reports these too, with the weaker problems.)
    fn refuse_unsafe(&self) -> anyhow::Result<()> {
        let named = self.named();
        let generate = "`crm secrets generate` prints fresh ones";
        for (name, secret) in &named {
            if is_placeholder(secret.expose()) {
                anyhow::bail!("{name} is the guide's placeholder text: set a real secret ({generate})");
            }
        }
        let values: Vec<(&str, &str)> = named.iter().map(|(name, s)| (*name, s.expose())).collect();
        if let Some((name, other)) = shared_values(&values).first() {
            anyhow::bail!("{name} and {other} are the same value: give each secret its own ({generate})");
        }
        Ok(())
    }

    /// Every secret in use, by environment name, for rotation bookkeeping.
    pub fn named(&self) -> Vec<(&'static str, &Secret)> {
        let mut out = vec![
            ("JWT_SECRET", &self.jwt),
            ("WEBHOOK_SECRET", &self.webhook),
            ("SERVICE_API_TOKEN", &self.service_token),
            ("SSO_SECRET", &self.sso),
        ];
        let previous = [
            ("JWT_SECRET_PREVIOUS", &self.jwt_previous),
            ("WEBHOOK_SECRET_PREVIOUS", &self.webhook_previous),
            ("SERVICE_API_TOKEN_PREVIOUS", &self.service_token_previous),
        ];
        out.extend(previous.into_iter().filter_map(|(n, s)| s.as_ref().map(|s| (n, s))));
        out
    }
}

/// Fills in the secrets that are not configured from `secrets.env` beside the database, and
/// generates the ones missing there too, writing them to that file (mode 0600). Returns the
/// names that were generated just now, so the caller can warn about them.
pub fn resolve_secrets(settings: &Settings) -> anyhow::Result<(Secrets, Vec<&'static str>)> {
    let path = settings.secrets_file();
    let mut stored = read_env_file(&path)?;
    let mut generated = Vec::new();
    for name in SECRET_NAMES {
        if !settings.secrets.contains_key(name) && !stored.contains_key(name) {
            stored.insert(name.to_string(), random_secret_hex());
            generated.push(name);
        }
    }
    let mut origins = BTreeMap::new();
    let mut pick = |name: &str| -> Option<Secret> {
        if let Some((s, origin)) = settings.secrets.get(name) {
            origins.insert(name.to_string(), *origin);
            return Some(s.clone());
        }
        let value = stored.get(name)?;
        let origin = if generated.contains(&name) {
            SecretOrigin::Generated
        } else {
            SecretOrigin::SecretsFile
        };
        origins.insert(name.to_string(), origin);
        Some(Secret::new(value.clone()))
    };
    let required = |s: Option<Secret>, name: &str| s.ok_or_else(|| anyhow::anyhow!("{name} is not configured"));
    let secrets = Secrets {
        jwt: required(pick("JWT_SECRET"), "JWT_SECRET")?,
        jwt_previous: pick("JWT_SECRET_PREVIOUS"),
        webhook: required(pick("WEBHOOK_SECRET"), "WEBHOOK_SECRET")?,
        webhook_previous: pick("WEBHOOK_SECRET_PREVIOUS"),
        service_token: required(pick("SERVICE_API_TOKEN"), "SERVICE_API_TOKEN")?,
        service_token_previous: pick("SERVICE_API_TOKEN_PREVIOUS"),
        sso: required(pick("SSO_SECRET"), "SSO_SECRET")?,
        origins,
    };
    secrets.refuse_unsafe()?;
    if !generated.is_empty() {
        write_secrets_file(&path, &stored)?;
    }
    Ok((secrets, generated))
}

/// Reads an env file (`secrets.env`, or a `.env` as the guide's Step 2 suggests) the way dotenv,
/// the platform's Node tooling, reads one: `KEY=VALUE` lines, optionally `export KEY=VALUE`;
/// blank lines and `#` comments skipped; a value inside matching quotes is taken as it is, and
/// otherwise ends at a `#`. A file that does not exist holds nothing.
pub fn read_env_file(path: &Path) -> Result<BTreeMap<String, String>, ConfigError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(err(format!("cannot read {}: {e}", path.display()))),
    };
    Ok(parse_env(&text))
}

fn parse_env(text: &str) -> BTreeMap<String, String> {
    // Editors on Windows save UTF-8 with a byte-order mark, which would become part of the first key.
    text.trim_start_matches('\u{feff}')
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| l.strip_prefix("export ").unwrap_or(l))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), env_value(v.trim()).to_string()))
        .filter(|(_, v)| !v.is_empty())
        .collect()
}

/// A value as written in an env file: inside matching quotes (what follows the closing one, a
/// comment, is dropped), or up to a `#`.
fn env_value(value: &str) -> &str {
    for quote in ['"', '\''] {
        if let Some(inner) = value
            .strip_prefix(quote)
            .and_then(|v| v.split_once(quote))
            .map(|(inner, _)| inner)
        {
            return inner;
        }
    }
    value.split('#').next().unwrap_or("").trim_end()
}

fn write_secrets_file(path: &Path, values: &BTreeMap<String, String>) -> anyhow::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::store::private_dir(dir)?;
    }
    let mut text = String::from(
        "# Generated by crm on first run. Keep this file private (mode 0600) and back it up with the\n\
         # database. Configure your own secrets in crm.toml or the environment to replace these.\n",
    );
    for (k, v) in values {
        text.push_str(&format!("{k}={v}\n"));
    }
    let tmp = path.with_extension("env.tmp");
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts
        .open(&tmp)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", tmp.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(flags: Overrides, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::load_with(&flags, &|k| map.get(k).cloned())
    }

    /// Settings from one config file and the given environment.
    fn load_file(path: &Path, env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        load(
            Overrides {
                config: Some(path.to_path_buf()),
                ..Default::default()
            },
            env,
        )
    }

    fn write_config(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crm.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn defaults_apply_without_any_configuration() {
        let s = load(Overrides::default(), &[]).unwrap();
        assert_eq!(s.listen.to_string(), DEFAULT_LISTEN);
        assert_eq!(s.database, PathBuf::from(DEFAULT_DATABASE));
        assert_eq!(s.service_rate_limit, 100);
        assert!(s.secrets.is_empty());
    }

    #[test]
    fn flags_beat_environment_which_beats_the_file() {
        let (_dir, path) = write_config(
            "listen = \"127.0.0.1:1000\"\ndatabase = \"/file/crm.db\"\nservice_rate_limit = 5\n\
             jwt_secret = \"from-the-config-file-0123\"\nsso_secret = \"sso-from-the-config-file\"\n",
        );
        let env = [
            ("CRM_LISTEN", "127.0.0.1:2000"),
            ("CRM_DATABASE", "/env/crm.db"),
            ("JWT_SECRET", "from-the-environment-0123"),
            ("CRM_SERVICE_RATE_LIMIT", "0"),
        ];
        let file_only = load_file(&path, &[]).unwrap();
        assert_eq!(file_only.listen.port(), 1000);
        assert_eq!(file_only.service_rate_limit, 5);

        let with_env = load_file(&path, &env).unwrap();
        assert_eq!(with_env.listen.port(), 2000);
        assert_eq!(with_env.database, PathBuf::from("/env/crm.db"));
        assert_eq!(with_env.service_rate_limit, 0);
        assert_eq!(with_env.secrets["JWT_SECRET"].0.expose(), "from-the-environment-0123");
        assert_eq!(with_env.secrets["SSO_SECRET"].1, SecretOrigin::ConfigFile);

        let flags = Overrides {
            config: Some(path),
            listen: Some("127.0.0.1:3000".into()),
            database: Some("/flag/crm.db".into()),
        };
        let with_flags = load(flags, &env).unwrap();
        assert_eq!(with_flags.listen.port(), 3000);
        assert_eq!(with_flags.database, PathBuf::from("/flag/crm.db"));
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let (_dir, path) = write_config("lisen = \"127.0.0.1:1\"\n");
        let e = load_file(&path, &[]).unwrap_err().to_string();
        assert!(e.contains("lisen"), "{e}");

        let e = load(Overrides::default(), &[("CRM_LISTEN", "nonsense")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("nonsense") && e.contains("IP:PORT"), "{e}");
        let e = load(Overrides::default(), &[("CRM_SERVICE_RATE_LIMIT", "lots")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("CRM_SERVICE_RATE_LIMIT"), "{e}");
        let e = load(Overrides::default(), &[("WEBHOOK_SECRET", "short")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("WEBHOOK_SECRET") && !e.contains("short\""), "{e}");
        let e = load(Overrides::default(), &[("TRADING_PLATFORM_URL", "ftp://x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("TRADING_PLATFORM_URL"), "{e}");
    }

    #[test]
    fn backup_intervals_read_as_durations() {
        assert_eq!(parse_interval("24h"), Some(Some(Duration::from_secs(86400))));
        assert_eq!(parse_interval("90s"), Some(Some(Duration::from_secs(90))));
        assert_eq!(parse_interval("off"), Some(None));
        for bad in ["", "h", "24", "-1h", "1.5h", "0h", "1w"] {
            assert_eq!(parse_interval(bad), None, "{bad} must be refused");
        }
        let e = load(Overrides::default(), &[("CRM_BACKUP_INTERVAL", "daily")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("backup_interval"), "{e}");
    }

    #[test]
    fn trusted_proxies_are_read_from_the_file_or_the_environment_and_bad_ones_named() {
        assert!(load(Overrides::default(), &[]).unwrap().trusted_proxies.is_empty());
        let (_dir, path) = write_config("trusted_proxies = [\"127.0.0.1\", \"::1\"]\n");
        let file = Overrides {
            config: Some(path),
            ..Default::default()
        };
        let from_file = load(file.clone(), &[]).unwrap();
        assert_eq!(
            from_file.trusted_proxies,
            ["127.0.0.1".parse::<IpAddr>().unwrap(), "::1".parse().unwrap()]
        );
        let from_env = load(file, &[("CRM_TRUSTED_PROXIES", " 10.0.0.2 , ::ffff:10.0.0.3,")]).unwrap();
        assert_eq!(
            from_env.trusted_proxies,
            ["10.0.0.2".parse::<IpAddr>().unwrap(), "10.0.0.3".parse().unwrap()],
            "the environment wins; mapped IPv6 reads as IPv4; a trailing comma is harmless"
        );
        for (bad, why) in [
            ("127.0.0.1:8080", "a port"),
            ("10.0.0.0/8", "a range"),
            ("localhost", "a host name"),
        ] {
            let e = load(Overrides::default(), &[("CRM_TRUSTED_PROXIES", bad)])
                .unwrap_err()
                .to_string();
            assert!(e.contains("trusted_proxies") && e.contains(bad), "{why}: {e}");
        }
        let (_dir, path) = write_config("trusted_proxies = \"127.0.0.1\"\n");
        let e = load_file(&path, &[]).unwrap_err().to_string();
        assert!(e.contains("trusted_proxies"), "a string instead of a list: {e}");
    }

    #[test]
    fn the_example_file_documents_only_real_keys() {
        let parsed: FileConfig = toml::from_str(include_str!("../crm.toml.example")).unwrap();
        assert_eq!(parsed.listen.as_deref(), Some(DEFAULT_LISTEN));
    }

    #[test]
    fn env_files_read_as_dotenv_reads_them() {
        let text = "\u{feff}FIRST=after a byte-order mark\r\n\
                    # a comment\n\
                    \n\
                    export EXPORTED=1\n\
                    DOUBLE=\"a b # not a comment\"  # a comment\n\
                    SINGLE='x=y'\n\
                    BARE=abc # a comment\n\
                    HASH=abc#def\n\
                    UNCLOSED=\"abc\n\
                    EMPTY=\n\
                    SPACED = v \n";
        let parsed = parse_env(text);
        let expected = [
            ("BARE", "abc"),
            ("DOUBLE", "a b # not a comment"),
            ("EXPORTED", "1"),
            ("FIRST", "after a byte-order mark"),
            ("HASH", "abc"),
            ("SINGLE", "x=y"),
            ("SPACED", "v"),
            ("UNCLOSED", "\"abc"),
        ];
        let got: Vec<(&str, &str)> = parsed.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn a_previous_secret_set_empty_ends_the_rotation_whatever_the_file_holds() {
        let old = "0123456789abcdef-the-old-webhook-secret";
        let (_dir, path) = write_config(&format!("webhook_secret_previous = \"{old}\"\n"));
        let from_file = load_file(&path, &[]).unwrap();
        assert!(from_file.secrets.contains_key("WEBHOOK_SECRET_PREVIOUS"));
        let ended = load_file(&path, &[("WEBHOOK_SECRET_PREVIOUS", "")]).unwrap();
        assert!(!ended.secrets.contains_key("WEBHOOK_SECRET_PREVIOUS"));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let s = load(Overrides::default(), &[("SSO_SECRET", "super-secret-value-123")]).unwrap();
        assert!(!format!("{s:?}").contains("super-secret-value-123"));
    }

    #[test]
    fn missing_secrets_are_generated_once_into_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("crm.db");
        let flags = Overrides {
            database: Some(db),
            ..Default::default()
        };
        let s = load(flags.clone(), &[("SSO_SECRET", "configured-sso-secret-0")]).unwrap();
        let (first, generated) = resolve_secrets(&s).unwrap();
        assert_eq!(generated, ["JWT_SECRET", "WEBHOOK_SECRET", "SERVICE_API_TOKEN"]);
        assert_eq!(first.sso.expose(), "configured-sso-secret-0");
        assert_eq!(first.jwt.expose().len(), 64);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(s.secrets_file()).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (second, generated) = resolve_secrets(&s).unwrap();
        assert!(generated.is_empty());
        assert_eq!(second.jwt, first.jwt);
        assert_eq!(second.origins["JWT_SECRET"], SecretOrigin::SecretsFile);
    }
}
