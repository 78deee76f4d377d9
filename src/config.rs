//! The proxy's TOML configuration (`pgveil.toml`): loading, defaults and
//! errors that name the file, the line and the fix.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// A configuration problem, always located in a file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{path}: cannot read the configuration: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown keys or bad values.
    #[error("{path}:{line}:{column}: {message}\n  fix: {fix}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
        /// What to do about it.
        fix: String,
    },
    /// A secret (password) named by the configuration could not be read.
    #[error("{path}: {message}\n  fix: {fix}")]
    Secret {
        /// The configuration file.
        path: PathBuf,
        /// What is wrong.
        message: String,
        /// What to do about it.
        fix: String,
    },
}

/// The whole configuration, as read from one file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where clients connect (default 127.0.0.1:6432).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// The largest message a client may send, in bytes; a larger one ends
    /// that session with a FATAL error (default 64 MiB).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// The most client sessions at once; more are refused with SQLSTATE 53300.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// The privacy policy: a TOML file or a directory of them (relative to
    /// this file). Without it pgveil is a plain pass-through proxy.
    #[serde(default)]
    pub policy: Option<PathBuf>,
    /// The PostgreSQL server behind the proxy.
    pub backend: BackendConfig,
    /// TLS for client connections (optional).
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// Backend connection pools.
    #[serde(default)]
    pub pool: PoolConfig,
    /// Time limits.
    #[serde(default)]
    pub timeouts: TimeoutConfig,
    /// Limits on failed logins.
    #[serde(default)]
    pub auth: AuthConfig,
    /// Users allowed to log in to the proxy.
    #[serde(default)]
    pub users: Vec<UserConfig>,
    /// The privacy log (optional; its `file` is relative to this file).
    #[serde(default)]
    pub audit: Option<crate::audit::AuditConfig>,
    /// The admin HTTP endpoint: `/health` and `/metrics` (optional).
    #[serde(default)]
    pub admin: Option<AdminConfig>,
    /// The file this configuration was read from.
    #[serde(skip)]
    pub source: PathBuf,
}

/// How pgveil reaches PostgreSQL and logs in as its administrator.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// Host name or address of PostgreSQL.
    #[serde(default = "default_backend_host")]
    pub host: String,
    /// Port of PostgreSQL.
    #[serde(default = "default_backend_port")]
    pub port: u16,
    /// The CRM database.
    pub database: String,
    /// The administrator (owner) login; the top administrator role and
    /// `pgveil apply` use it.
    pub user: String,
    /// Name of an environment variable holding the administrator password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the administrator password (relative to this file).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the master secret from which the
    /// passwords of the view-set login roles are derived.
    #[serde(default)]
    pub role_secret_env: Option<String>,
    /// File holding that master secret (relative to this file).
    #[serde(default)]
    pub role_secret_file: Option<PathBuf>,
    /// TLS towards PostgreSQL.
    #[serde(default)]
    pub tls: BackendTls,
}

/// TLS mode towards PostgreSQL, as libpq's `sslmode`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BackendTls {
    /// Never use TLS.
    Disable,
    /// Use TLS when the server offers it (default).
    #[default]
    Prefer,
    /// Refuse to talk to a server without TLS (the certificate is not verified).
    Require,
}

/// Certificate and key that pgveil presents to clients asking for TLS.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain (relative to this file).
    pub cert: PathBuf,
    /// PEM private key (relative to this file).
    pub key: PathBuf,
}

/// Where the admin HTTP endpoint (`/health`, `/metrics`) listens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address of the admin endpoint, e.g. 127.0.0.1:9187.
    pub listen: SocketAddr,
}

/// Backend connection pools: one per backend login role (view set).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Most backend connections per backend login role.
    #[serde(default = "default_pool_size")]
    pub max_size: usize,
    /// How sessions share backend connections (default `session`).
    #[serde(default)]
    pub mode: PoolMode,
    /// The mode of particular view sets (by name, `admin` for the top
    /// administrator, `passthrough` without a policy), overriding `mode`.
    #[serde(default)]
    pub view_sets: std::collections::BTreeMap<String, PoolMode>,
    /// Run simple-protocol queries as statements pgveil prepares (see
    /// `rewrite::params`); default on.
    #[serde(default = "default_true")]
    pub auto_prepare: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_size: default_pool_size(),
            mode: PoolMode::default(),
            view_sets: Default::default(),
            auto_prepare: true,
        }
    }
}

impl PoolConfig {
    /// The pool mode of a view set's sessions.
    pub fn mode_for(&self, view_set: &str) -> PoolMode {
        self.view_sets.get(view_set).copied().unwrap_or(self.mode)
    }
}

/// How client sessions share backend connections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PoolMode {
    /// A session keeps one backend connection from start to end.
    #[default]
    Session,
    /// A session holds a backend connection only during a transaction
    /// (and for good once it leaves state that cannot be carried over).
    Transaction,
}

/// Time limits, in seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeoutConfig {
    /// A client must finish startup and authentication within this time.
    #[serde(default = "default_startup_secs")]
    pub startup_secs: u64,
    /// Connecting and logging in to PostgreSQL, and waiting for a pooled
    /// connection, may take this long.
    #[serde(default = "default_connect_secs")]
    pub connect_secs: u64,
    /// A session idle for longer is closed (0 = never).
    #[serde(default)]
    pub idle_secs: u64,
    /// On SIGTERM, sessions inside a transaction may finish it for this long
    /// before they are cancelled and closed.
    #[serde(default = "default_shutdown_secs")]
    pub shutdown_secs: u64,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            startup_secs: default_startup_secs(),
            connect_secs: default_connect_secs(),
            idle_secs: 0,
            shutdown_secs: default_shutdown_secs(),
        }
    }
}

impl TimeoutConfig {
    /// The startup limit as a Duration.
    pub fn startup(&self) -> Duration {
        Duration::from_secs(self.startup_secs)
    }
    /// The connect limit as a Duration.
    pub fn connect(&self) -> Duration {
        Duration::from_secs(self.connect_secs)
    }
    /// The grace period of a graceful shutdown.
    pub fn shutdown(&self) -> Duration {
        Duration::from_secs(self.shutdown_secs)
    }
    /// The idle limit, if any.
    pub fn idle(&self) -> Option<Duration> {
        (self.idle_secs > 0).then(|| Duration::from_secs(self.idle_secs))
    }
}

/// Limits on failed logins (see `crate::auth::ratelimit`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// Failed logins from one client address within `window_secs` that
    /// lock the address out for `lockout_secs` (0 = no limit).
    #[serde(default = "default_max_failures")]
    pub max_failures: u32,
    /// Failed logins for one user name, from any address, within
    /// `window_secs` that throttle the name for `lockout_secs` (0 = no limit).
    #[serde(default = "default_max_user_failures")]
    pub max_user_failures: u32,
    /// The sliding window failures are counted in, in seconds.
    #[serde(default = "default_auth_window_secs")]
    pub window_secs: u64,
    /// How long a lockout lasts, in seconds.
    #[serde(default = "default_lockout_secs")]
    pub lockout_secs: u64,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            max_failures: default_max_failures(),
            max_user_failures: default_max_user_failures(),
            window_secs: default_auth_window_secs(),
            lockout_secs: default_lockout_secs(),
        }
    }
}

/// One user who may log in to the proxy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// Login name.
    pub name: String,
    /// SCRAM-SHA-256 verifier in PostgreSQL's stored format, as printed by
    /// `pgveil passwd USER`.
    pub scram: String,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 6432))
}
fn default_max_message_bytes() -> usize {
    64 << 20
}
fn default_max_sessions() -> usize {
    2000
}
fn default_backend_host() -> String {
    "127.0.0.1".to_owned()
}
fn default_backend_port() -> u16 {
    5432
}
fn default_true() -> bool {
    true
}
fn default_pool_size() -> usize {
    50
}
fn default_startup_secs() -> u64 {
    10
}
fn default_connect_secs() -> u64 {
    10
}
fn default_shutdown_secs() -> u64 {
    30
}
fn default_max_failures() -> u32 {
    10
}
fn default_max_user_failures() -> u32 {
    30
}
fn default_auth_window_secs() -> u64 {
    60
}
fn default_lockout_secs() -> u64 {
    60
}

impl Config {
    /// Reads and validates a configuration file; relative paths in it are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses configuration text that came from `path`.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| invalid_toml(path, text, &e))?;
        config.source = path.to_owned();
        config.resolve_paths();
        config.validate(text)?;
        Ok(config)
    }

    fn base_dir(&self) -> PathBuf {
        self.source
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    fn resolve_paths(&mut self) {
        let base = self.base_dir();
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = self.policy.as_mut() {
            resolve(p);
        }
        if let Some(p) = self.backend.password_file.as_mut() {
            resolve(p);
        }
        if let Some(p) = self.backend.role_secret_file.as_mut() {
            resolve(p);
        }
        if let Some(tls) = self.tls.as_mut() {
            resolve(&mut tls.cert);
            resolve(&mut tls.key);
        }
        if let Some(p) = self.audit.as_mut().and_then(|a| a.file.as_mut()) {
            resolve(p);
        }
    }

    fn validate(&self, text: &str) -> Result<(), ConfigError> {
        let at = |needle: &str, message: String, fix: &str| {
            let (line, column) = find_line(text, needle);
            ConfigError::Invalid {
                path: self.source.clone(),
                line,
                column,
                message,
                fix: fix.to_owned(),
            }
        };
        if self.max_message_bytes < 1024 {
            return Err(at(
                "max_message_bytes",
                format!(
                    "max_message_bytes = {} is too small",
                    self.max_message_bytes
                ),
                "use at least 1024 (the default is 67108864, 64 MiB)",
            ));
        }
        if self.pool.max_size == 0 {
            return Err(at(
                "max_size",
                "pool.max_size must be at least 1".into(),
                "set pool.max_size = 50 (or the most backend connections per role you want)",
            ));
        }
        if let Some(admin) = &self.admin {
            if admin.listen == self.listen && admin.listen.port() != 0 {
                return Err(at(
                    "[admin]",
                    format!(
                        "admin.listen = {} is also the client listen address",
                        admin.listen
                    ),
                    "give the admin endpoint a port of its own, e.g. listen = \"127.0.0.1:9187\"",
                ));
            }
        }
        self.validate_auth(&at)?;
        let mut seen = std::collections::HashSet::new();
        for user in &self.users {
            if !seen.insert(user.name.as_str()) {
                return Err(at(
                    &format!("\"{}\"", user.name),
                    format!("user {:?} is listed twice", user.name),
                    "keep one [[users]] entry per name",
                ));
            }
            if crate::protocol::scram::Verifier::parse(&user.scram).is_none() {
                return Err(at(
                    &user.scram,
                    format!("user {:?} has a malformed SCRAM verifier", user.name),
                    "paste the line printed by `pgveil passwd USER` (SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>)",
                ));
            }
        }
        Ok(())
    }

    /// Checks `[auth]`: a limit needs a window and a lockout to count in.
    fn validate_auth(
        &self,
        at: &impl Fn(&str, String, &str) -> ConfigError,
    ) -> Result<(), ConfigError> {
        let auth = &self.auth;
        let limited = auth.max_failures > 0 || auth.max_user_failures > 0;
        for (key, value) in [
            ("window_secs", auth.window_secs),
            ("lockout_secs", auth.lockout_secs),
        ] {
            if limited && value == 0 {
                return Err(at(
                    key,
                    format!("auth.{key} = 0 leaves the failed-login limits without effect"),
                    "use at least 1 (the default is 60), or set max_failures = 0 and max_user_failures = 0 to turn the limits off",
                ));
            }
        }
        Ok(())
    }

    /// The administrator password for PostgreSQL, from the environment
    /// variable or file the configuration names (empty when neither is set,
    /// for servers that trust the proxy's address).
    pub fn backend_password(&self) -> Result<String, ConfigError> {
        self.read_secret(
            self.backend.password_env.as_deref(),
            self.backend.password_file.as_deref(),
            "backend.password_env or backend.password_file",
        )
        .map(|s| s.unwrap_or_default())
    }

    /// The master secret for view-set login role passwords, if configured.
    pub fn role_secret(&self) -> Result<Option<String>, ConfigError> {
        self.read_secret(
            self.backend.role_secret_env.as_deref(),
            self.backend.role_secret_file.as_deref(),
            "backend.role_secret_env or backend.role_secret_file",
        )
    }

    fn read_secret(
        &self,
        env: Option<&str>,
        file: Option<&Path>,
        keys: &str,
    ) -> Result<Option<String>, ConfigError> {
        if let Some(var) = env {
            return match std::env::var(var) {
                Ok(v) => Ok(Some(v)),
                Err(_) => Err(ConfigError::Secret {
                    path: self.source.clone(),
                    message: format!("environment variable {var} is not set"),
                    fix: format!("export {var}=... before starting pgveil, or change {keys}"),
                }),
            };
        }
        if let Some(file) = file {
            return match std::fs::read_to_string(file) {
                Ok(v) => Ok(Some(v.trim_end_matches(['\r', '\n']).to_owned())),
                Err(e) => Err(ConfigError::Secret {
                    path: self.source.clone(),
                    message: format!("cannot read secret file {}: {e}", file.display()),
                    fix: format!("create the file or change {keys}"),
                }),
            };
        }
        Ok(None)
    }

    /// Looks up a proxy user by name.
    pub fn user(&self, name: &str) -> Option<&UserConfig> {
        self.users.iter().find(|u| u.name == name)
    }
}

/// 1-based line and column of the first occurrence of `needle` (1:1 if absent).
fn find_line(text: &str, needle: &str) -> (usize, usize) {
    text.find(needle)
        .map(|offset| line_col(text, offset))
        .unwrap_or((1, 1))
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

fn invalid_toml(path: &Path, text: &str, err: &toml::de::Error) -> ConfigError {
    let (line, column) = err
        .span()
        .map(|span| line_col(text, span.start))
        .unwrap_or((1, 1));
    let message = err.message().to_owned();
    ConfigError::Invalid {
        path: path.to_owned(),
        line,
        column,
        fix: fix_for(&message),
        message,
    }
}

fn fix_for(message: &str) -> String {
    if message.contains("unknown field") {
        "remove the key or correct its spelling (the message lists the keys allowed here); see the configuration reference in README.md".into()
    } else if message.contains("missing field") {
        "add the key; see the configuration reference in README.md".into()
    } else if message.contains("unknown variant") {
        "use one of the values the message lists".into()
    } else {
        "correct the value; see the configuration reference in README.md".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[backend]\ndatabase = \"crm\"\nuser = \"owner\"\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(MINIMAL, Path::new("/etc/pgveil/pgveil.toml")).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:6432");
        assert_eq!(c.backend.port, 5432);
        assert_eq!(c.backend.tls, BackendTls::Prefer);
        assert_eq!(c.pool.max_size, 50);
    }

    #[test]
    fn unknown_key_names_file_line_and_fix() {
        let text = format!("{MINIMAL}\n[pool]\nmax_sise = 3\n");
        let err = Config::parse(&text, Path::new("x/pgveil.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("x/pgveil.toml:6:1: unknown field `max_sise`"),
            "{err}"
        );
        assert!(err.contains("fix:"), "{err}");
    }

    #[test]
    fn bad_enum_value_is_located() {
        let text = format!("{MINIMAL}tls = \"always\"\n");
        let err = Config::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p.toml:4:7:"), "{err}");
        assert!(err.contains("disable"), "{err}");
    }

    #[test]
    fn relative_paths_resolve_against_the_file() {
        let text = format!("policy = \"../policies\"\n{MINIMAL}password_file = \"pw\"\n");
        let c = Config::parse(&text, Path::new("/srv/conf/pgveil.toml")).unwrap();
        assert_eq!(c.policy.unwrap(), Path::new("/srv/conf/../policies"));
        assert_eq!(c.backend.password_file.unwrap(), Path::new("/srv/conf/pw"));
    }

    #[test]
    fn audit_file_resolves_against_the_file() {
        let text = format!("{MINIMAL}[audit]\nfile = \"log/audit.jsonl\"\nrequired = true\n");
        let c = Config::parse(&text, Path::new("/srv/conf/pgveil.toml")).unwrap();
        let audit = c.audit.unwrap();
        assert_eq!(audit.file.unwrap(), Path::new("/srv/conf/log/audit.jsonl"));
        assert!(audit.required);
        assert!(Config::parse(MINIMAL, Path::new("p.toml"))
            .unwrap()
            .audit
            .is_none());
    }

    #[test]
    fn admin_and_shutdown_settings() {
        let c = Config::parse(MINIMAL, Path::new("p.toml")).unwrap();
        assert!(c.admin.is_none());
        assert_eq!(c.timeouts.shutdown(), Duration::from_secs(30));
        let text = format!(
            "{MINIMAL}[admin]\nlisten = \"127.0.0.1:9187\"\n[timeouts]\nshutdown_secs = 5\n"
        );
        let c = Config::parse(&text, Path::new("p.toml")).unwrap();
        assert_eq!(c.admin.unwrap().listen.to_string(), "127.0.0.1:9187");
        assert_eq!(c.timeouts.shutdown_secs, 5);
    }

    #[test]
    fn admin_on_the_client_port_is_refused() {
        let text =
            format!("listen = \"127.0.0.1:7000\"\n{MINIMAL}[admin]\nlisten = \"127.0.0.1:7000\"\n");
        let err = Config::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p.toml:5:1: admin.listen"), "{err}");
        assert!(
            err.contains("fix: give the admin endpoint a port of its own"),
            "{err}"
        );
    }

    #[test]
    fn bad_admin_address_is_located() {
        let text = format!("{MINIMAL}[admin]\nlisten = \"localhost\"\n");
        let err = Config::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p.toml:5:10:"), "{err}");
    }

    #[test]
    fn malformed_verifier_is_refused() {
        let text = format!("{MINIMAL}[[users]]\nname = \"a\"\nscram = \"md5abc\"\n");
        let err = Config::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("p.toml:6:10:"), "{err}");
    }

    #[test]
    fn auth_limits_have_defaults_and_located_errors() {
        let c = Config::parse(MINIMAL, Path::new("p.toml")).unwrap();
        assert_eq!(
            (
                c.auth.max_failures,
                c.auth.max_user_failures,
                c.auth.window_secs,
                c.auth.lockout_secs
            ),
            (10, 30, 60, 60)
        );
        let text = format!("{MINIMAL}[auth]\nmax_failures = 3\nlockout_secs = 0\n");
        let err = Config::parse(&text, Path::new("p.toml"))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("p.toml:6:1: auth.lockout_secs = 0"),
            "{err}"
        );
        assert!(err.contains("fix: use at least 1"), "{err}");
        let off =
            format!("{MINIMAL}[auth]\nmax_failures = 0\nmax_user_failures = 0\nwindow_secs = 0\n");
        assert_eq!(
            Config::parse(&off, Path::new("p.toml"))
                .unwrap()
                .auth
                .max_failures,
            0
        );
    }

    #[test]
    fn missing_env_secret_is_explained() {
        let text = format!("{MINIMAL}password_env = \"PGVEIL_TEST_SURELY_UNSET\"\n");
        let c = Config::parse(&text, Path::new("p.toml")).unwrap();
        let err = c.backend_password().unwrap_err().to_string();
        assert!(err.contains("PGVEIL_TEST_SURELY_UNSET is not set"), "{err}");
    }
}
