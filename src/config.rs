//! Configuration: built-in defaults (`config/switchyard.toml`, compiled in)
//! < the TOML file < `SWITCHYARD_*` environment variables, validated once.

use crate::secret::Secret;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The commented reference configuration, used as the defaults layer.
pub const DEFAULT_CONFIG_TOML: &str = include_str!("../config/switchyard.toml");

/// Environment variables `SWITCHYARD_<SECTION>__<KEY>` override the file.
const ENV_PREFIX: &str = "SWITCHYARD_";

/// Keys whose environment values are strings whatever they look like.
const STRING_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "admin_token",
    "public_url",
    "master_key",
    "log.level",
    "slack.api_base",
    "slack.oauth_base",
    "slack.client_id",
    "slack.client_secret",
    "email.resend.api_base",
    "email.resend.api_key",
    "email.smtp.host",
    "email.smtp.username",
    "email.smtp.password",
    "pagerduty.events_url",
    "retention.events",
    "storage.postgres.url",
];

/// Path read when `--config` is not given, if the file exists.
pub const DEFAULT_CONFIG_PATH: &str = "config/switchyard.toml";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub listen: String,
    pub data_dir: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token: Option<Secret>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Key that encrypts connection secrets at rest (base64 or hex, 32
    /// bytes); when unset, `{data_dir}/master_key` is used or generated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_key: Option<Secret>,
    pub log: LogConfig,
    pub limits: LimitsConfig,
    pub delivery: DeliveryConfig,
    pub storage: StorageConfig,
    pub retention: RetentionConfig,
    pub slack: SlackConfig,
    pub email: EmailConfig,
    pub pagerduty: PagerDutyConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
    /// Events per second each workspace may emit (0: no limit).
    pub events_per_second: u32,
    /// Seconds of `events_per_second` a workspace may send at once.
    pub burst_seconds: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    pub retry_schedule: Vec<u64>,
    pub timeout_seconds: u64,
    pub max_in_flight_per_connection: usize,
    pub max_in_flight_per_workspace: usize,
    pub max_in_flight: usize,
    pub allow_private_networks: bool,
    /// Addresses pinned for tenant target host names, used instead of DNS
    /// (still judged by `allow_private_networks`).
    #[serde(default)]
    pub hosts: BTreeMap<String, Vec<IpAddr>>,
    /// Queue entries the scheduler holds in memory; the rest of the backlog
    /// stays on disk.
    pub queue_window: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// Which engine holds the data: one redb file in `data_dir` (the
    /// default) or a PostgreSQL database that several nodes may share.
    pub backend: StorageBackend,
    /// redb's page cache, in MiB.
    pub cache_mb: usize,
    /// The redb write-ahead log's size in MiB; 0 turns it off (a durable
    /// redb commit per write batch).
    pub wal_mb: u64,
    /// Longest time, in ms, between two durable redb commits while writes
    /// come in; until then a write is durable in the log.
    pub wal_checkpoint_ms: u64,
    /// Least time, in µs, between the starts of two groups of logged
    /// writes (group pacing, redb with its log only); 0, the default,
    /// turns it off.
    pub wal_group_wait_us: u64,
    pub postgres: PostgresConfig,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Redb,
    Postgres,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresConfig {
    /// `postgres://user:password@host:port/database`, or libpq's
    /// `key=value` form; required when `backend = "postgres"`. A secret:
    /// it usually carries the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<Secret>,
    /// Connections the pool keeps open at most.
    pub pool_size: usize,
    pub tls: PostgresTls,
    /// How long a node's claim on a connection's queue lasts unless renewed;
    /// after a node dies, its connections wait this long for another node.
    pub lease_seconds: u64,
}

/// How the connection to PostgreSQL is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PostgresTls {
    /// Plain TCP (or a unix socket): for a database on the same host or a
    /// private network.
    Disable,
    /// TLS required; the server's certificate must chain to a root the
    /// system trusts and name the host in the URL.
    VerifyFull,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// How long events (with their deliveries and attempts) are kept.
    pub events: RetentionPeriod,
    /// How often the retention sweep runs.
    #[serde(with = "duration_text")]
    pub interval: Duration,
}

/// How long to keep something: a duration such as `"30d"`, `"12h"` or
/// `"90s"`, or `"0"` to keep it for ever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetentionPeriod {
    Forever,
    For(Duration),
}

impl RetentionPeriod {
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text == "0" {
            return Ok(Self::Forever);
        }
        match humantime::parse_duration(text) {
            Ok(duration) if duration.is_zero() => Ok(Self::Forever),
            Ok(duration) => Ok(Self::For(duration)),
            Err(error) => Err(format!(
                "{error}; expected a duration such as \"30d\", \"12h\" or \"90s\", or \"0\" to keep everything"
            )),
        }
    }

    /// The retention as a duration; `None` keeps everything.
    pub fn duration(self) -> Option<Duration> {
        match self {
            Self::Forever => None,
            Self::For(duration) => Some(duration),
        }
    }
}

impl std::fmt::Display for RetentionPeriod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Forever => f.write_str("0"),
            Self::For(duration) => write!(f, "{}", humantime::format_duration(*duration)),
        }
    }
}

impl Serialize for RetentionPeriod {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RetentionPeriod {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// A string, or a bare number of seconds (so `events = 0` works).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Seconds(u64),
        }
        match Raw::deserialize(deserializer)? {
            Raw::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
            Raw::Seconds(0) => Ok(Self::Forever),
            Raw::Seconds(seconds) => Ok(Self::For(Duration::from_secs(seconds))),
        }
    }
}

/// Durations written as `"60s"`, `"1m"` (humantime).
mod duration_text {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(value: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&humantime::format_duration(*value))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(deserializer)?;
        humantime::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    pub api_base: String,
    pub oauth_base: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<Secret>,
    pub scopes: Vec<String>,
}

/// PagerDuty's Events API v2, an operator-configured (trusted) base.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// Events are sent to `{events_url}/v2/enqueue`.
    pub events_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub resend: ResendConfig,
    pub smtp: SmtpConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResendConfig {
    pub api_base: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    pub port: u16,
    pub tls: SmtpTls,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    None,
    Starttls,
    Tls,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration file {0} does not exist")]
    MissingFile(PathBuf),
    #[error("{}", describe_figment_error(.0))]
    Figment(Box<figment::Error>),
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

impl From<figment::Error> for ConfigError {
    fn from(error: figment::Error) -> Self {
        Self::Figment(Box::new(error))
    }
}

/// One line per problem: the key in lowercase dot form, what is wrong with
/// it, and which layer (file or environment) supplied the value.
fn describe_figment_error(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|error| {
            let key = error.path.join(".").to_lowercase();
            let source = error
                .metadata
                .as_ref()
                .map(|metadata| format!(" (from {})", metadata.name))
                .unwrap_or_default();
            if let figment::error::Kind::UnknownField(name, expected) = &error.kind {
                // The path ends with the unknown key itself.
                let section = match error.path.split_last() {
                    Some((last, section)) if last == name => section.join("."),
                    _ => key,
                };
                let source = error
                    .metadata
                    .as_ref()
                    .and_then(|metadata| metadata.source.as_ref())
                    .map(|file| format!(" (in {file})"))
                    .unwrap_or(source);
                return unknown_key_message(&section, name, expected, &source);
            }
            if key.is_empty() {
                format!("{}{source}", error.kind)
            } else {
                format!("invalid value for `{key}`: {}{source}", error.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// `unknown key `timeout_secs` in [delivery] (from TOML file …); did you
/// mean `timeout_seconds`?`: a typo must not pass for a default.
fn unknown_key_message(section: &str, name: &str, expected: &[&str], source: &str) -> String {
    let place = if section.is_empty() {
        "at the top level".to_string()
    } else {
        format!("in [{section}]")
    };
    let hint = closest_name(name, expected)
        .map(|known| format!("; did you mean `{known}`?"))
        .unwrap_or_default();
    format!("unknown key `{name}` {place}{source}{hint}")
}

/// The known name nearest to `name`, if it is near enough to be a typo:
/// within a third of its length in edits, or one holding the other
/// (`timeout` for `timeout_seconds`).
fn closest_name<'a>(name: &str, known: &[&'a str]) -> Option<&'a str> {
    let name = name.to_lowercase();
    known
        .iter()
        .map(|candidate| (edit_distance(&name, candidate), *candidate))
        .filter(|(distance, candidate)| {
            *distance <= (name.len().max(3) / 3) || (name.len() >= 4 && candidate.contains(&name))
        })
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Edit distance counting a swap of two neighbours as one edit (optimal
/// string alignment), so `hots` is one edit from `host`.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut table = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in table.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in table[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (table[i - 1][j] + 1)
                .min(table[i][j - 1] + 1)
                .min(table[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(table[i - 2][j - 2] + 1);
            }
            table[i][j] = best;
        }
    }
    table[a.len()][b.len()]
}

/// What is wrong with `delivery.hosts`, if anything: each key must be a
/// host name exactly as a URL carries it, each with one address at least,
/// and no name twice.
fn pinned_hosts_problem(hosts: &BTreeMap<String, Vec<IpAddr>>) -> Option<String> {
    let mut seen = std::collections::BTreeSet::new();
    for (name, addresses) in hosts {
        let bare = name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase();
        if let Some(problem) = host_name_problem(&bare) {
            return Some(format!("{name}: {problem}"));
        }
        if addresses.is_empty() {
            return Some(format!("{name}: no addresses listed"));
        }
        if !seen.insert(bare) {
            return Some(format!(
                "{name}: listed twice (names match without case or a trailing dot)"
            ));
        }
    }
    None
}

/// Why `name` (lowercase, no trailing dot) can never be a URL's host
/// name: the URL parser reads some names as IPv4 addresses (`2130706433`,
/// `hooks.123`), which are never looked up, and writes others differently
/// (an IDN as punycode), so a pin under them would never match.
fn host_name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("an empty host name".into());
    }
    match reqwest::Url::parse(&format!("http://{name}/")) {
        // `domain()` is `None` for the IP addresses the parser found.
        Ok(url) => match url.domain() {
            Some(domain) if domain == name => None,
            Some(domain) => Some(format!("not a host name as a URL carries it ({domain})")),
            None => Some("an IP address, which is never looked up, needs no entry".into()),
        },
        Err(error) => Some(format!("not a host name ({error})")),
    }
}

/// Variables with the prefix that are not configuration keys: the client
/// commands' own, and the build's commit (build.rs), which a packaging
/// environment may leave exported.
const CLIENT_VARIABLES: &[&str] = &["URL", "KEY", "BUILD_COMMIT"];

/// Dotted keys the configuration has (sections too, so a whole section can
/// be given as one value), derived from the types themselves.
fn known_keys() -> Vec<String> {
    let mut every_key = match Config::defaults() {
        Ok(config) => config,
        Err(_) => return Vec::new(),
    };
    // Optional keys are absent from the defaults; fill each in so that it
    // serialises. An optional key added to the types must be added here,
    // or its environment variable is reported as unknown.
    let filler = || Some(Secret::new("x"));
    every_key.admin_token = filler();
    every_key.master_key = filler();
    every_key.public_url = Some(String::new());
    every_key.slack.client_id = Some(String::new());
    every_key.slack.client_secret = filler();
    every_key.email.resend.api_key = filler();
    every_key.email.smtp.host = Some(String::new());
    every_key.email.smtp.username = Some(String::new());
    every_key.email.smtp.password = filler();
    every_key.storage.postgres.url = filler();
    let mut keys = Vec::new();
    if let Ok(toml::Value::Table(table)) = toml::Value::try_from(&every_key) {
        collect_keys("", &table, &mut keys);
    }
    keys
}

fn collect_keys(prefix: &str, table: &toml::Table, keys: &mut Vec<String>) {
    for (name, value) in table {
        let key = format!("{prefix}{name}");
        if let toml::Value::Table(inner) = value {
            collect_keys(&format!("{key}."), inner, keys);
        }
        keys.push(key);
    }
}

/// `SWITCHYARD_*` variables that name no configuration key (and are not
/// read by the client commands): most likely typos, which would otherwise
/// be ignored without a word. The caller warns about them.
pub fn unknown_environment_variables() -> Vec<String> {
    unknown_variables_with_prefix(ENV_PREFIX)
}

fn unknown_variables_with_prefix(prefix: &str) -> Vec<String> {
    let known = known_keys();
    let mut unknown: Vec<String> = std::env::vars_os()
        .filter_map(|(name, _)| name.into_string().ok())
        .filter(|name| {
            let Some(rest) = name.strip_prefix(prefix) else {
                return false;
            };
            let key = rest.replace("__", ".").to_lowercase();
            !CLIENT_VARIABLES.contains(&rest) && !known.contains(&key)
        })
        .collect();
    unknown.sort();
    unknown
}

impl Config {
    /// Loads defaults < file < environment. An explicit `file` must exist;
    /// without one, `./config/switchyard.toml` is read when present.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        Self::load_with_env(file, ENV_PREFIX)
    }

    /// The built-in defaults alone: no file, no environment.
    pub fn defaults() -> Result<Self, ConfigError> {
        Ok(Figment::from(Toml::string(DEFAULT_CONFIG_TOML)).extract()?)
    }

    fn load_with_env(file: Option<&Path>, prefix: &str) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Toml::string(DEFAULT_CONFIG_TOML));
        match file {
            Some(path) if !path.exists() => return Err(ConfigError::MissingFile(path.into())),
            Some(path) => figment = figment.merge(Toml::file_exact(path)),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                figment = figment.merge(Toml::file_exact(DEFAULT_CONFIG_PATH));
            }
            None => {}
        }
        // Only variables naming a key: the others (typos, the client
        // commands' SWITCHYARD_URL) are warned about, not fatal.
        let known = known_keys();
        figment = figment.merge(
            Env::prefixed(prefix)
                .split("__")
                .filter(move |key| known.iter().any(|known| key == known.as_str())),
        );
        // figment reads environment values as TOML-ish literals, so a Slack
        // client id like 1234.5678 or an all-digit hex key would arrive as a
        // number (and lose digits). String keys are taken verbatim.
        for key in STRING_KEYS {
            let variable = format!("{prefix}{}", key.replace('.', "__").to_uppercase());
            if let Ok(value) = std::env::var(&variable) {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        let config: Config = figment.extract()?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what serde's types cannot express; each error names its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        match self.listen.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {}
            _ => return invalid("listen", "expected host:port, e.g. 127.0.0.1:7600"),
        }
        if self.data_dir.as_os_str().is_empty() {
            return invalid("data_dir", "must not be empty");
        }
        if let Some(token) = &self.admin_token
            && token.expose().len() < 16
        {
            return invalid("admin_token", "must be at least 16 characters");
        }
        if let Some(url) = &self.public_url
            && !(url.starts_with("http://") || url.starts_with("https://"))
        {
            return invalid("public_url", "must start with http:// or https://");
        }
        if self.log.level.trim().is_empty() {
            return invalid("log.level", "must not be empty");
        }
        if self.limits.max_body_bytes < 1024 {
            return invalid("limits.max_body_bytes", "must be at least 1024");
        }
        if !(1..=10_000).contains(&self.limits.max_batch_events) {
            return invalid("limits.max_batch_events", "must be between 1 and 10000");
        }
        if self.delivery.timeout_seconds == 0 {
            return invalid("delivery.timeout_seconds", "must be at least 1");
        }
        if let Some(reason) = pinned_hosts_problem(&self.delivery.hosts) {
            return invalid("delivery.hosts", &reason);
        }
        if self.delivery.max_in_flight == 0 {
            return invalid("delivery.max_in_flight", "must be at least 1");
        }
        if self.delivery.max_in_flight_per_connection == 0 {
            return invalid(
                "delivery.max_in_flight_per_connection",
                "must be at least 1",
            );
        }
        if self.delivery.max_in_flight_per_workspace == 0 {
            return invalid("delivery.max_in_flight_per_workspace", "must be at least 1");
        }
        if self.delivery.queue_window < 16 {
            return invalid("delivery.queue_window", "must be at least 16");
        }
        if self.storage.cache_mb == 0 {
            return invalid("storage.cache_mb", "must be at least 1");
        }
        if self.storage.wal_mb > 1024 {
            return invalid(
                "storage.wal_mb",
                "must be at most 1024 (0 turns the log off)",
            );
        }
        if !(10..=60_000).contains(&self.storage.wal_checkpoint_ms) {
            return invalid("storage.wal_checkpoint_ms", "must be between 10 and 60000");
        }
        if self.storage.wal_group_wait_us > 10_000 {
            return invalid(
                "storage.wal_group_wait_us",
                "must be at most 10000 (0 turns pacing off)",
            );
        }
        if self.storage.backend == StorageBackend::Postgres {
            match &self.storage.postgres.url {
                Some(url) if !url.expose().trim().is_empty() => {}
                _ => {
                    return invalid(
                        "storage.postgres.url",
                        "must be set when storage.backend is \"postgres\"",
                    );
                }
            }
        }
        if self.storage.backend == StorageBackend::Postgres
            && self.storage.postgres.lease_seconds < self.delivery.timeout_seconds + 5
        {
            // An attempt must be able to start and record within one lease.
            return invalid(
                "storage.postgres.lease_seconds",
                "must be at least delivery.timeout_seconds + 5",
            );
        }
        if self.storage.postgres.pool_size < 2 {
            // One connection is held by the ingest writer; reads need another.
            return invalid("storage.postgres.pool_size", "must be at least 2");
        }
        if self.retention.interval.is_zero() {
            return invalid("retention.interval", "must be longer than zero");
        }
        if self.limits.events_per_second > 0 && self.limits.burst_seconds == 0 {
            return invalid("limits.burst_seconds", "must be at least 1");
        }
        for (key, base) in [
            ("slack.api_base", &self.slack.api_base),
            ("slack.oauth_base", &self.slack.oauth_base),
            ("email.resend.api_base", &self.email.resend.api_base),
            ("pagerduty.events_url", &self.pagerduty.events_url),
        ] {
            if !(base.starts_with("http://") || base.starts_with("https://")) {
                return invalid(key, "must start with http:// or https://");
            }
        }
        Ok(())
    }

    pub fn database_path(&self) -> PathBuf {
        self.data_dir.join("switchyard.redb")
    }

    /// The effective configuration as TOML, secrets masked.
    pub fn to_masked_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|error| format!("# cannot render: {error}\n"))
    }
}

#[cfg(test)]
// figment's Jail closures return its (large) error type by design.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    #[test]
    fn the_write_ahead_log_settings_are_bounded_and_named_in_errors() {
        let refused = |change: fn(&mut Config)| {
            let mut config = Config::defaults().unwrap();
            change(&mut config);
            match config.validate() {
                Err(ConfigError::Invalid { key, .. }) => key,
                other => panic!("accepted: {other:?}"),
            }
        };
        assert_eq!(refused(|c| c.storage.wal_mb = 1025), "storage.wal_mb");
        assert_eq!(
            refused(|c| c.storage.wal_checkpoint_ms = 9),
            "storage.wal_checkpoint_ms"
        );
        assert_eq!(
            refused(|c| c.storage.wal_checkpoint_ms = 60_001),
            "storage.wal_checkpoint_ms"
        );
        let mut off = Config::defaults().unwrap();
        off.storage.wal_mb = 0;
        off.validate().unwrap();
        let defaults = Config::defaults().unwrap().storage;
        assert_eq!(
            refused(|c| c.storage.wal_group_wait_us = 10_001),
            "storage.wal_group_wait_us"
        );
        let mut most = Config::defaults().unwrap();
        most.storage.wal_group_wait_us = 10_000;
        most.validate().unwrap();
        assert_eq!(
            (
                defaults.wal_mb,
                defaults.wal_checkpoint_ms,
                defaults.wal_group_wait_us
            ),
            (64, 1000, 0)
        );
    }

    #[test]
    fn defaults_match_the_contract() {
        // Inside a Jail: other tests change the working directory, which
        // decides whether ./config/switchyard.toml is read.
        Jail::expect_with(|_| {
            check_defaults(&Config::load_with_env(None, "SWITCHYARD_TEST_NONE_").unwrap());
            Ok(())
        });
        check_defaults(&Config::defaults().unwrap());
    }

    fn check_defaults(config: &Config) {
        assert_eq!(config.listen, "127.0.0.1:7600");
        assert_eq!(config.data_dir, PathBuf::from("./data"));
        assert!(config.admin_token.is_none());
        assert_eq!(config.limits.max_body_bytes, 262_144);
        assert_eq!(
            config.delivery.retry_schedule,
            vec![5, 300, 1800, 7200, 18000, 36000, 36000]
        );
        assert_eq!(config.delivery.timeout_seconds, 15);
        assert_eq!(config.delivery.max_in_flight_per_connection, 8);
        assert_eq!(config.delivery.max_in_flight_per_workspace, 512);
        assert!(!config.delivery.allow_private_networks);
        assert_eq!(config.delivery.queue_window, 10_000);
        assert_eq!(config.limits.events_per_second, 0);
        assert_eq!(
            config.retention.events,
            RetentionPeriod::For(Duration::from_secs(30 * 24 * 3600))
        );
        assert_eq!(config.slack.api_base, "https://slack.com/api");
        assert_eq!(config.email.resend.api_base, "https://api.resend.com");
        assert_eq!(config.pagerduty.events_url, "https://events.pagerduty.com");
    }

    #[test]
    fn the_postgres_backend_is_chosen_and_its_url_set_from_the_environment() {
        Jail::expect_with(|jail| {
            assert_eq!(
                Config::load(None).unwrap().storage.backend,
                StorageBackend::Redb,
                "redb stays the default"
            );
            jail.set_env("SWITCHYARD_STORAGE__BACKEND", "postgres");
            let missing = Config::load(None).unwrap_err().to_string();
            assert!(missing.contains("storage.postgres.url"), "{missing}");
            jail.set_env(
                "SWITCHYARD_STORAGE__POSTGRES__URL",
                "postgres://switchyard:hunter2@db:5432/events",
            );
            jail.set_env("SWITCHYARD_STORAGE__POSTGRES__POOL_SIZE", "4");
            jail.set_env("SWITCHYARD_STORAGE__POSTGRES__TLS", "verify-full");
            let config = Config::load(None).unwrap();
            assert_eq!(config.storage.backend, StorageBackend::Postgres);
            assert_eq!(
                config.storage.postgres.url.as_ref().map(Secret::expose),
                Some("postgres://switchyard:hunter2@db:5432/events")
            );
            assert_eq!(config.storage.postgres.pool_size, 4);
            assert_eq!(config.storage.postgres.tls, PostgresTls::VerifyFull);
            assert!(!config.to_masked_toml().contains("hunter2"));
            assert_eq!(config.storage.postgres.lease_seconds, 30);
            // A lease must outlast an attempt (15 s by default) plus 5 s.
            jail.set_env("SWITCHYARD_STORAGE__POSTGRES__LEASE_SECONDS", "19");
            let short = Config::load(None).unwrap_err().to_string();
            assert!(short.contains("storage.postgres.lease_seconds"), "{short}");
            jail.set_env("SWITCHYARD_DELIVERY__TIMEOUT_SECONDS", "14");
            assert_eq!(
                Config::load(None).unwrap().storage.postgres.lease_seconds,
                19
            );
            let unknown = unknown_environment_variables();
            assert!(
                !unknown
                    .iter()
                    .any(|name| name.starts_with("SWITCHYARD_STORAGE")),
                "{unknown:?}"
            );
            Ok(())
        });
    }

    #[test]
    fn environment_beats_file_beats_defaults() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "custom.toml",
                "listen = \"0.0.0.0:9000\"\n[limits]\nmax_body_bytes = 4096\n",
            )?;
            jail.set_env("SWITCHYARD_LIMITS__MAX_BODY_BYTES", "8192");
            jail.set_env("SWITCHYARD_DELIVERY__RETRY_SCHEDULE", "[1,1]");
            jail.set_env("SWITCHYARD_ADMIN_TOKEN", "an-admin-token-of-length");
            jail.set_env("SWITCHYARD_SLACK__CLIENT_ID", "1234567890123.9876543210987");
            jail.set_env(
                "SWITCHYARD_MASTER_KEY",
                "0123456789012345678901234567890123456789012345678901234567890123",
            );
            let config = Config::load(Some(Path::new("custom.toml"))).unwrap();
            assert_eq!(
                config.slack.client_id.as_deref(),
                Some("1234567890123.9876543210987"),
                "numeric-looking strings are kept verbatim"
            );
            assert_eq!(
                config.master_key.as_ref().map(Secret::expose),
                Some("0123456789012345678901234567890123456789012345678901234567890123")
            );
            assert_eq!(config.listen, "0.0.0.0:9000");
            assert_eq!(config.limits.max_body_bytes, 8192);
            assert_eq!(config.delivery.retry_schedule, vec![1, 1]);
            assert_eq!(
                config.admin_token.as_ref().map(Secret::expose),
                Some("an-admin-token-of-length")
            );
            Ok(())
        });
    }

    #[test]
    fn pinned_hosts_come_from_the_file_or_the_environment_and_are_checked() {
        Jail::expect_with(|jail| {
            assert!(Config::load(None).unwrap().delivery.hosts.is_empty());
            jail.create_file(
                "hosts.toml",
                "[delivery.hosts]\n\"hooks.example.com\" = [\"93.184.215.14\", \"2606:2800::1\"]\n",
            )?;
            let config = Config::load(Some(Path::new("hosts.toml"))).unwrap();
            let pinned: Vec<IpAddr> = vec![
                "93.184.215.14".parse().unwrap(),
                "2606:2800::1".parse().unwrap(),
            ];
            assert_eq!(
                config.delivery.hosts,
                BTreeMap::from([("hooks.example.com".to_string(), pinned)])
            );
            jail.set_env(
                "SWITCHYARD_DELIVERY__HOSTS",
                "{\"intake.example.org\"=[\"198.41.0.4\"]}",
            );
            let config = Config::load(None).unwrap();
            assert_eq!(
                config.delivery.hosts,
                BTreeMap::from([(
                    "intake.example.org".to_string(),
                    vec!["198.41.0.4".parse::<IpAddr>().unwrap()]
                )])
            );
            assert!(
                !unknown_environment_variables()
                    .iter()
                    .any(|name| name.starts_with("SWITCHYARD_DELIVERY")),
            );
            for (entry, problem) in [
                ("{\"a.example\"=[]}", "a.example: no addresses listed"),
                (
                    "{\"10.0.0.1\"=[\"10.0.0.1\"]}",
                    "an IP address, which is never",
                ),
                (
                    "{\"2130706433\"=[\"10.0.0.1\"]}",
                    "an IP address, which is never",
                ),
                (
                    "{\"hooks.123\"=[\"10.0.0.1\"]}",
                    "hooks.123: not a host name",
                ),
                ("{\"a b\"=[\"198.41.0.4\"]}", "a b: not a host name"),
                ("{\"a:80\"=[\"198.41.0.4\"]}", "a:80: not a host name"),
                (
                    "{\"bücher.example\"=[\"198.41.0.4\"]}",
                    "xn--bcher-kva.example",
                ),
                (
                    "{\"A.example\"=[\"198.41.0.4\"], \"a.example.\"=[\"198.41.0.4\"]}",
                    "listed twice",
                ),
                ("{\"a.example\"=[\"not-an-ip\"]}", "delivery.hosts"),
            ] {
                jail.set_env("SWITCHYARD_DELIVERY__HOSTS", entry);
                let error = Config::load(None).unwrap_err().to_string();
                assert!(error.contains("delivery.hosts"), "{entry}: {error}");
                assert!(error.contains(problem), "{entry}: {error}");
            }
            Ok(())
        });
    }

    #[test]
    fn bad_values_name_their_key() {
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD_LIMITS__MAX_BODY_BYTES", "lots");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("`limits.max_body_bytes`"), "{error}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD_LISTEN", "nowhere");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("`listen`"), "{error}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD_LOG__FORMAT", "xml");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("`log.format`"), "{error}");
            Ok(())
        });
    }

    #[test]
    fn unknown_keys_in_the_file_are_errors_with_a_suggestion() {
        Jail::expect_with(|jail| {
            jail.create_file("typo.toml", "[delivery]\ntimeout_secs = 3\n")?;
            let error = Config::load(Some(Path::new("typo.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("unknown key `timeout_secs` in [delivery]"),
                "{error}"
            );
            assert!(error.contains("did you mean `timeout_seconds`?"), "{error}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("bogus.toml", "bogus_key = 1\n")?;
            let error = Config::load(Some(Path::new("bogus.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("unknown key `bogus_key` at the top level"),
                "{error}"
            );
            assert!(!error.contains("did you mean"), "nothing is close: {error}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("smtp.toml", "[email.smtp]\nhots = \"mail\"\n")?;
            let error = Config::load(Some(Path::new("smtp.toml")))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("in [email.smtp]") && error.contains("did you mean `host`?"),
                "{error}"
            );
            Ok(())
        });
    }

    #[test]
    fn unknown_environment_variables_are_named_not_fatal() {
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD_DELIVERY__TIMEOUT_SECS", "3");
            jail.set_env("SWITCHYARD_LISTNE", "0.0.0.0:1");
            jail.set_env("SWITCHYARD_URL", "http://127.0.0.1:7600");
            jail.set_env("SWITCHYARD_EMAIL__SMTP__HOST", "mail.example.com");
            let config = Config::load(None).unwrap();
            assert_eq!(config.delivery.timeout_seconds, 15);
            assert_eq!(config.email.smtp.host.as_deref(), Some("mail.example.com"));
            let unknown = unknown_environment_variables();
            assert!(
                unknown.contains(&"SWITCHYARD_DELIVERY__TIMEOUT_SECS".to_string())
                    && unknown.contains(&"SWITCHYARD_LISTNE".to_string()),
                "{unknown:?}"
            );
            assert!(
                !unknown
                    .iter()
                    .any(|name| name == "SWITCHYARD_URL" || name == "SWITCHYARD_EMAIL__SMTP__HOST"),
                "{unknown:?}"
            );
            Ok(())
        });
    }

    #[test]
    fn every_key_of_the_defaults_file_is_known() {
        let known = known_keys();
        for key in [
            "listen",
            "admin_token",
            "master_key",
            "public_url",
            "delivery.timeout_seconds",
            "retention.interval",
            "slack.client_secret",
            "email.resend.api_key",
            "email.smtp.password",
        ] {
            assert!(known.iter().any(|known| known == key), "{key}: {known:?}");
        }
    }

    #[test]
    fn close_names_are_suggested() {
        let known = ["timeout_seconds", "retry_schedule", "queue_window"];
        assert_eq!(
            closest_name("timeout_secs", &known),
            Some("timeout_seconds")
        );
        assert_eq!(
            closest_name("retry_schedul", &known),
            Some("retry_schedule")
        );
        assert_eq!(closest_name("timeout", &known), Some("timeout_seconds"));
        assert_eq!(closest_name("colour", &known), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("hots", "host"), 1);
    }

    #[test]
    fn retention_takes_durations_and_zero_keeps_everything() {
        let day = Duration::from_secs(24 * 3600);
        assert_eq!(
            RetentionPeriod::parse("30d"),
            Ok(RetentionPeriod::For(30 * day))
        );
        assert_eq!(
            RetentionPeriod::parse("12h"),
            Ok(RetentionPeriod::For(Duration::from_secs(12 * 3600)))
        );
        assert_eq!(
            RetentionPeriod::parse("90s"),
            Ok(RetentionPeriod::For(Duration::from_secs(90)))
        );
        assert_eq!(RetentionPeriod::parse("0"), Ok(RetentionPeriod::Forever));
        assert!(RetentionPeriod::parse("soon").is_err());
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD_RETENTION__EVENTS", "0");
            let config = Config::load(None).unwrap();
            assert_eq!(config.retention.events, RetentionPeriod::Forever);
            jail.set_env("SWITCHYARD_RETENTION__EVENTS", "20s");
            let config = Config::load(None).unwrap();
            assert_eq!(
                config.retention.events.duration(),
                Some(Duration::from_secs(20))
            );
            jail.set_env("SWITCHYARD_RETENTION__EVENTS", "a while");
            let error = Config::load(None).unwrap_err().to_string();
            assert!(error.contains("`retention.events`"), "{error}");
            Ok(())
        });
        Jail::expect_with(|jail| {
            jail.create_file("keep.toml", "[retention]\nevents = 0\n")?;
            let config = Config::load(Some(Path::new("keep.toml"))).unwrap();
            assert_eq!(config.retention.events, RetentionPeriod::Forever);
            Ok(())
        });
    }

    #[test]
    fn an_explicit_missing_file_is_an_error() {
        let error = Config::load(Some(Path::new("/nonexistent/switchyard.toml"))).unwrap_err();
        assert!(matches!(error, ConfigError::MissingFile(_)));
    }

    #[test]
    fn masked_toml_hides_secrets() {
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD_ADMIN_TOKEN", "an-admin-token-of-length");
            jail.set_env("SWITCHYARD_SLACK__CLIENT_SECRET", "slack-client-secret");
            let text = Config::load(None).unwrap().to_masked_toml();
            assert!(!text.contains("an-admin-token-of-length"), "{text}");
            assert!(!text.contains("slack-client-secret"), "{text}");
            assert!(text.contains("admin_token = \"********\""), "{text}");
            Ok(())
        });
    }
}
