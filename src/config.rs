//! Typed settings: a TOML file (or the development defaults) overlaid by `TOKENVAULT_*`
//! environment variables. Secrets are typed as secrets from the first byte.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

use crate::audit::ObjectKind;
use crate::guard::{ClientPolicy, Grant};
use crate::hsm::WrapMechanism;
pub use crate::keys::KeyringSettings;
pub use crate::tokenize::{TokenFormat, TypeSettings, Validator};

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "TOKENVAULT_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config: {0} — check the file named by --config or TOKENVAULT_CONFIG")]
    Load(String),
    #[error(
        "the config file sets hsm.pin; a PIN never belongs in a file that may be committed — \
         use TOKENVAULT_HSM__PIN or hsm.pin_file (mode 0600)"
    )]
    PinInFile,
    #[error("invalid configuration: {0}")]
    Invalid(String),
    #[error(
        "no [clients] are configured, so `serve` would admit the development clients app, \
         tokenizer and auditor (any certificate from the CA named app may detokenize \
         everything) — configure [clients] in the file named by --config or TOKENVAULT_CONFIG, \
         or set TOKENVAULT_DEV_MODE=true for a development vault (scripts/run does)"
    )]
    DevelopmentClients,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    #[serde(default)]
    pub server: ServerSettings,
    #[serde(default)]
    pub database: DatabaseSettings,
    #[serde(default)]
    pub hsm: HsmSettings,
    #[serde(default)]
    pub limits: Limits,
    /// Keyrings by name; each holds versioned data keys.
    #[serde(default = "default_keyrings")]
    pub keyrings: BTreeMap<String, KeyringSettings>,
    /// Transit signing keys by name: key pairs generated in the HSM, versioned like
    /// keyrings (none by default). Names are shared with keyrings: one may not be both.
    #[serde(default)]
    pub signing_keys: BTreeMap<String, crate::keys::SigningKeySettings>,
    /// Token types by name (`pan` is always present).
    #[serde(default = "default_types")]
    pub types: BTreeMap<String, TypeSettings>,
    /// Client identities (certificate SAN URI or CN) and their permissions.
    #[serde(default = "default_clients")]
    pub clients: BTreeMap<String, ClientPolicy>,
    #[serde(default)]
    pub audit: AuditSettings,
    #[serde(default)]
    pub retention: RetentionSettings,
    /// The Vault-compatible API (`/v1/auth`, `/v1/sys`, the Transit and Transform mounts).
    #[serde(default)]
    pub vault_api: crate::session::VaultApiSettings,
    /// `production` (default) or `nonproduction`: recorded in the database the first time
    /// the vault opens, and a vault whose config and database disagree does not open.
    #[serde(default)]
    pub environment: crate::nonprod::Environment,
    /// What a non-production vault accepts as test data.
    #[serde(default)]
    pub nonproduction: crate::nonprod::TestData,
    /// Detokenize anomaly scoring and step-up (docs/anomaly-detection.md).
    #[serde(default)]
    pub anomaly: crate::anomaly::AnomalySettings,
    /// No longer read: officers are registered in the vault (`init --officer`, then
    /// `officer add` under dual control). Kept only so that a config or environment that
    /// still names officers is refused instead of silently believed.
    #[serde(default)]
    pub officers: BTreeMap<String, crate::officers::OfficerSettings>,
    /// A development vault: `serve` may run with the built-in development clients
    /// (`TOKENVAULT_DEV_MODE=true`; scripts/run sets it).
    #[serde(default)]
    pub dev_mode: bool,
    /// Whether `clients` are the built-in development clients (neither the file nor the
    /// environment configured any).
    #[serde(skip)]
    pub development_clients: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct ServerSettings {
    pub listen: String,
    pub tls_cert: PathBuf,
    pub tls_key: PathBuf,
    /// CA that issues client certificates; nobody else gets in.
    pub client_ca: PathBuf,
    /// Whether `/metrics` needs no client certificate permission.
    pub public_metrics: bool,
    /// Where a client's identity comes from: the subject CN only, or the one URI SAN
    /// only. Never one and then the other.
    pub identity: IdentitySource,
    /// With `identity = "uri"`: the prefix every identity has (e.g. `spiffe://`).
    pub identity_uri_prefix: String,
    /// Certificate revocation lists (PEM or DER) for the client CA chain; re-read every
    /// `crl_reload_secs` and applied to new connections when the file changed.
    pub crl_file: Option<PathBuf>,
    pub crl_reload_secs: u64,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// PROXY headers and TLS handshakes in progress at once.
    pub max_handshakes: usize,
    /// HTTP/2 PING interval, and how long an unanswered PING keeps the connection.
    pub http2_keep_alive_interval_ms: u64,
    pub http2_keep_alive_timeout_ms: u64,
    /// A connection with no request for this long is closed (HTTP/1 and HTTP/2).
    pub idle_timeout_ms: u64,
    /// A request body not complete this long after its headers arrived is refused.
    pub body_read_timeout_ms: u64,
    pub proxy_protocol: ProxyProtocolSettings,
}

/// What names a client in its certificate (`server.identity`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IdentitySource {
    /// The subject CN; it must not look like a URI (`://`).
    Cn,
    /// Exactly one URI SAN, starting with `identity_uri_prefix`; the CN is ignored.
    Uri,
}

/// PROXY protocol v2 from load balancers (`server.proxy_protocol`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ProxyProtocolSettings {
    /// Peers (CIDR) whose connections must start with a PROXY v2 header; its source
    /// address becomes the request origin. Nobody else's header is read.
    pub trusted: Vec<ipnet::IpNet>,
}

impl Default for ServerSettings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8443".into(),
            tls_cert: "data/dev/tls/server.pem".into(),
            tls_key: "data/dev/tls/server-key.pem".into(),
            client_ca: "data/dev/tls/ca.pem".into(),
            public_metrics: false,
            // `tokenvault dev-certs` names its clients by CN.
            identity: IdentitySource::Cn,
            identity_uri_prefix: String::new(),
            crl_file: None,
            crl_reload_secs: 30,
            max_connections: 4096,
            max_handshakes: 256,
            http2_keep_alive_interval_ms: 30_000,
            http2_keep_alive_timeout_ms: 10_000,
            idle_timeout_ms: 120_000,
            body_read_timeout_ms: 30_000,
            proxy_protocol: ProxyProtocolSettings::default(),
        }
    }
}

impl ServerSettings {
    fn validate(&self, clients: &BTreeMap<String, ClientPolicy>) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        let prefix = &self.identity_uri_prefix;
        match self.identity {
            IdentitySource::Uri if prefix.is_empty() => {
                return invalid(
                    "server.identity = \"uri\" needs server.identity_uri_prefix \
                     (e.g. \"spiffe://\")"
                        .into(),
                );
            }
            IdentitySource::Cn if !prefix.is_empty() => {
                return invalid(
                    "server.identity_uri_prefix is set but server.identity is \"cn\"; \
                     set server.identity = \"uri\" or remove the prefix"
                        .into(),
                );
            }
            _ => {}
        }
        // A client name the identity source can never produce grants nothing, silently.
        for name in clients.keys() {
            let fits = match self.identity {
                IdentitySource::Cn => !name.contains("://"),
                IdentitySource::Uri => {
                    name.starts_with(prefix.as_str()) && name.len() > prefix.len()
                }
            };
            if !fits {
                return invalid(format!(
                    "client `{name}` can never match: server.identity is {} — {}",
                    match self.identity {
                        IdentitySource::Cn => "\"cn\"",
                        IdentitySource::Uri => "\"uri\"",
                    },
                    match self.identity {
                        IdentitySource::Cn =>
                            "a CN identity has no `://` (set server.identity = \"uri\")".to_owned(),
                        IdentitySource::Uri => format!("identities start with `{prefix}`"),
                    }
                ));
            }
        }
        if self.crl_reload_secs == 0
            || self.max_connections == 0
            || self.max_handshakes == 0
            || self.http2_keep_alive_interval_ms == 0
            || self.http2_keep_alive_timeout_ms == 0
            || self.idle_timeout_ms == 0
            || self.body_read_timeout_ms == 0
        {
            return invalid(
                "server.crl_reload_secs, max_connections, max_handshakes, \
                 http2_keep_alive_*_ms, idle_timeout_ms and body_read_timeout_ms must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct DatabaseSettings {
    /// `sqlite://path` or `postgres://…`.
    pub url: SecretString,
    pub max_connections: u32,
}

impl Default for DatabaseSettings {
    fn default() -> Self {
        Self {
            url: SecretString::from("sqlite://data/tokenvault.db"),
            max_connections: 8,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct HsmSettings {
    /// Path of the PKCS#11 module (shared library).
    pub module: PathBuf,
    pub token_label: String,
    /// The user PIN itself (from `TOKENVAULT_HSM__PIN` only; refused in a file).
    pub pin: Option<SecretString>,
    /// A file holding the user PIN; must not be readable by group or others.
    pub pin_file: Option<PathBuf>,
    /// Key-wrap mechanism for new wrapped keys; each wrapped key records its own.
    pub wrap_mechanism: WrapMechanism,
    /// Prefix of every object label this vault creates in the token.
    pub label_prefix: String,
    /// Sessions kept open for concurrent HSM work.
    pub sessions: usize,
    /// Lock file that serializes token-object changes across processes on this host
    /// (SoftHSM2 needs it); empty to disable.
    pub lock_file: PathBuf,
    /// An HSM call that has not answered after this long counts as an HSM failure: the
    /// request gets 503 and the vault goes not-ready until the HSM answers again.
    pub call_timeout_ms: u64,
    /// How often `serve` checks that the HSM still answers (and, while it does not, how
    /// often it tries to reconnect).
    pub health_interval_ms: u64,
}

impl Default for HsmSettings {
    fn default() -> Self {
        Self {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token_label: "tokenvault-dev".into(),
            pin: None,
            pin_file: Some("data/dev/hsm-user-pin".into()),
            wrap_mechanism: WrapMechanism::AesKeyWrapPad,
            label_prefix: "tokenvault".into(),
            sessions: 4,
            lock_file: "data/hsm-objects.lock".into(),
            call_timeout_ms: 3000,
            health_interval_ms: 1000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct AuditSettings {
    /// Sign a checkpoint after this many events…
    pub checkpoint_every: i64,
    /// …or this many seconds, whichever comes first (while events arrive).
    pub checkpoint_interval_secs: i64,
    /// Every checkpoint is appended to this file (one JSON line each, created 0600) as it
    /// is made: the series `audit verify --checkpoints` checks. Put it where the database
    /// writer cannot reach (another host's mount, WORM storage).
    pub checkpoint_file: Option<PathBuf>,
    /// …and sent to syslog on this local datagram socket (e.g. `/dev/log`).
    pub syslog: Option<PathBuf>,
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            checkpoint_every: 1000,
            checkpoint_interval_secs: 60,
            checkpoint_file: None,
            syslog: None,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetentionSettings {
    /// How often `serve` deletes expired tokens and makes deletions final in the database
    /// files (SQLite: a WAL checkpoint; `secure_delete` is always on).
    pub purge_interval_secs: u64,
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self {
            purge_interval_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Limits {
    pub max_body_bytes: usize,
    pub max_batch: usize,
    pub max_json_depth: usize,
    pub max_value_bytes: usize,
    pub max_metadata_bytes: usize,
    pub header_read_timeout_ms: u64,
    pub tls_handshake_timeout_ms: u64,
    /// Request rate of an identity that has no `[clients]` entry (it may do nothing, but
    /// each refusal is audited, so it is rate limited like everyone else).
    pub unknown_rate_per_second: f64,
    pub unknown_burst: f64,
    /// New deterministic values an identity may create per hour (per node), unless its
    /// client entry sets `new_values_per_hour`; a client with `import:<type>` is exempt.
    pub new_values_per_hour: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: 1 << 20,
            max_batch: 1000,
            max_json_depth: 32,
            max_value_bytes: 4096,
            max_metadata_bytes: 4096,
            header_read_timeout_ms: 10_000,
            tls_handshake_timeout_ms: 10_000,
            unknown_rate_per_second: 5.0,
            unknown_burst: 10.0,
            new_values_per_hour: 1000,
        }
    }
}

fn default_keyrings() -> BTreeMap<String, KeyringSettings> {
    ["pan", "pii"]
        .into_iter()
        .map(|k| (k.to_owned(), KeyringSettings::default()))
        .collect()
}

fn default_types() -> BTreeMap<String, TypeSettings> {
    let t = |validator, keyring: &str, format, deterministic| TypeSettings {
        validator,
        keyring: keyring.to_owned(),
        format,
        deterministic,
        formats: None,
        synthetic: None,
    };
    BTreeMap::from([
        (
            "pan".to_owned(),
            t(Validator::Pan, "pan", TokenFormat::Last4, true),
        ),
        (
            "ssn".to_owned(),
            t(Validator::Ssn, "pii", TokenFormat::Opaque, false),
        ),
        (
            "email".to_owned(),
            t(Validator::Email, "pii", TokenFormat::Opaque, false),
        ),
        (
            "text".to_owned(),
            t(Validator::None, "pii", TokenFormat::Opaque, false),
        ),
    ])
}

fn default_clients() -> BTreeMap<String, ClientPolicy> {
    let c = |perms: &[&str]| ClientPolicy {
        // Invariant: these literals are valid patterns (a unit test loads the defaults).
        permissions: perms
            .iter()
            .map(|p| Grant::parse(p).expect("built-in permission patterns parse"))
            .collect(),
        ..ClientPolicy::default()
    };
    BTreeMap::from([
        (
            "app".to_owned(),
            c(&[
                "tokenize:*",
                "fingerprint:*",
                "import:*",
                "lookup:*",
                "detokenize:*",
                "read:*",
                "delete:*",
                "encrypt:*",
                "decrypt:*",
                "hmac:*",
                "sign:*",
                "verify:*",
                "rotate:*",
            ]),
        ),
        ("tokenizer".to_owned(), c(&["tokenize:*"])),
        (
            "auditor".to_owned(),
            c(&["keys:read", "audit:read", "metrics:read"]),
        ),
    ])
}

impl Settings {
    /// Loads the file (if any), then the environment; validates cross-references.
    pub fn load(file: Option<&Path>) -> Result<Self, ConfigError> {
        let env_file = std::env::var_os(CONFIG_ENV).map(PathBuf::from);
        let file = file.map(Path::to_path_buf).or(env_file);
        let text = match &file {
            Some(path) => Some(
                fs::read_to_string(path)
                    .map_err(|e| ConfigError::Load(format!("{}: {e}", path.display())))?,
            ),
            None => None,
        };
        let env = config::Environment::with_prefix("TOKENVAULT")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true);
        Self::build(text.as_deref(), Some(env))
    }

    /// Settings from TOML text alone (no environment): what a config file says.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Self::build(Some(text), None)
    }

    fn build(text: Option<&str>, env: Option<config::Environment>) -> Result<Self, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(text) = text {
            let parsed: toml::Table = text
                .parse()
                .map_err(|e| ConfigError::Load(format!("config file: {e}")))?;
            if parsed.get("hsm").and_then(|h| h.get("pin")).is_some() {
                return Err(ConfigError::PinInFile);
            }
            builder = builder.add_source(config::File::from_str(text, config::FileFormat::Toml));
        }
        if let Some(env) = env {
            builder = builder.add_source(env);
        }
        let merged = builder
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let clients_configured = merged.get_table("clients").is_ok();
        let mut settings: Settings = merged
            .try_deserialize()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        settings.development_clients = !clients_configured;
        settings.validate()?;
        Ok(settings)
    }

    /// `serve` admits the development clients only to a development vault: a production
    /// unit that forgot its config file must not start with them.
    pub fn refuse_development_clients(&self) -> Result<(), ConfigError> {
        if self.development_clients && !self.dev_mode {
            return Err(ConfigError::DevelopmentClients);
        }
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.officers.is_empty() {
            return Err(ConfigError::Invalid(
                "officers are no longer read from the config or the environment (an [officers] \
                 section or TOKENVAULT_OFFICERS__*): they are registered in the vault, at the \
                 first `tokenvault init --officer NAME=KEY` and then with `tokenvault officer \
                 add` under dual control. Remove the setting."
                    .into(),
            ));
        }
        if !self.types.contains_key("pan") {
            return Err(ConfigError::Invalid(
                "the built-in type `pan` must stay configured".into(),
            ));
        }
        for name in self.types.keys() {
            crate::names::TypeName::parse(name)
                .map_err(|e| ConfigError::Invalid(format!("type `{name}`: {e}")))?;
        }
        for (name, k) in &self.keyrings {
            crate::names::KeyringName::parse(name)
                .map_err(|e| ConfigError::Invalid(format!("keyring `{name}`: {e}")))?;
            if k.convergent && !k.derived {
                return Err(ConfigError::Invalid(format!(
                    "keyring `{name}`: convergent needs derived (as in Vault): without a \
                     context, equal plaintexts would be equal across every caller"
                )));
            }
        }
        for name in self.signing_keys.keys() {
            crate::names::KeyringName::parse(name)
                .map_err(|e| ConfigError::Invalid(format!("signing key `{name}`: {e}")))?;
            if name == crate::names::FINGERPRINT_KEYRING {
                return Err(ConfigError::Invalid(format!(
                    "signing key `{name}`: the name of the vault's internal fingerprint keyring"
                )));
            }
            if self.keyrings.contains_key(name) {
                return Err(ConfigError::Invalid(format!(
                    "`{name}` is both a keyring and a signing key: Transit serves both under \
                     one name space (`transit/keys/<name>`), so each name may be one of them"
                )));
            }
        }
        for (name, t) in &self.types {
            if !self.keyrings.contains_key(&t.keyring) {
                return Err(ConfigError::Invalid(format!(
                    "type `{name}` uses keyring `{}`, which is not declared under [keyrings]",
                    t.keyring
                )));
            }
            let digits = matches!(t.validator, Validator::Pan | Validator::Ssn);
            if t.format != TokenFormat::Opaque && !digits {
                return Err(ConfigError::Invalid(format!(
                    "type `{name}`: format-preserving tokens need a digit validator (pan or ssn)"
                )));
            }
        }
        for (identity, client) in &self.clients {
            if let Some(ns) = &client.namespace {
                crate::names::TypeName::parse(ns).map_err(|_| {
                    ConfigError::Invalid(format!(
                        "client `{identity}`: a namespace is 1–32 characters of a-z, 0-9, _ and -, \
                         starting with a letter"
                    ))
                })?;
            }
            for grant in &client.permissions {
                self.check_grant(identity, grant)?;
            }
        }
        if self.hsm.call_timeout_ms == 0 || self.hsm.health_interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "hsm.call_timeout_ms and hsm.health_interval_ms must be at least 1".into(),
            ));
        }
        if self.retention.purge_interval_secs == 0 {
            return Err(ConfigError::Invalid(
                "retention.purge_interval_secs must be at least 1".into(),
            ));
        }
        self.server.validate(&self.clients)?;
        self.anomaly
            .validate(self.clients.iter().map(|(id, c)| (id, c.anomaly.as_ref())))
            .map_err(ConfigError::Invalid)?;
        self.vault_api.validate().map_err(ConfigError::Invalid)?;
        self.nonproduction
            .validate()
            .map_err(ConfigError::Invalid)?;
        crate::nonprod::check_synthetic(self.environment, &self.types)
            .map_err(ConfigError::Invalid)?;
        self.vault_api
            .transform
            .validate(&self.types)
            .map_err(ConfigError::Invalid)?;
        if self.hsm.sessions == 0 {
            return Err(ConfigError::Invalid(
                "hsm.sessions must be at least 1".into(),
            ));
        }
        Ok(())
    }
}

impl Settings {
    /// A grant on a type or keyring that is not configured is a typo: it would grant
    /// nothing, silently. Refused at load, naming the client and the pattern.
    fn check_grant(&self, identity: &str, grant: &Grant) -> Result<(), ConfigError> {
        let Some((verb, object)) = grant.named() else {
            return Ok(());
        };
        let known = match verb.object() {
            ObjectKind::TokenType => self.types.contains_key(object),
            ObjectKind::Keyring => self.keyrings.contains_key(object),
            ObjectKind::SigningKey => self.signing_keys.contains_key(object),
            ObjectKind::TransitKey => {
                self.keyrings.contains_key(object) || self.signing_keys.contains_key(object)
            }
            ObjectKind::Scope => true,
        };
        if known {
            Ok(())
        } else {
            Err(ConfigError::Invalid(format!(
                "client `{identity}`: permission `{grant}` names no configured {}",
                match verb.object() {
                    ObjectKind::Keyring => "keyring",
                    ObjectKind::SigningKey => "signing key",
                    ObjectKind::TransitKey => "keyring or signing key",
                    _ => "token type",
                }
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shipped_hsm_profile_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("hsm-config");
        let mut loaded = 0;
        for entry in fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let text = fs::read_to_string(&path).unwrap();
            let s =
                Settings::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(s.hsm.call_timeout_ms >= 1000, "{}", path.display());
            loaded += 1;
        }
        assert!(loaded >= 3, "SoftHSM2 and at least two real HSM families");
    }

    #[test]
    fn config_files_are_checked_and_a_pin_in_a_file_is_refused() {
        let dev = Settings::from_toml("").unwrap();
        assert_eq!(dev.server.listen, "127.0.0.1:8443");
        assert!(dev.clients.contains_key("app"));
        assert!(matches!(
            Settings::from_toml("[hsm]\npin = \"1234\"\n"),
            Err(ConfigError::PinInFile)
        ));
        let bad_ring = "[types.pan]\nvalidator = \"pan\"\nkeyring = \"nowhere\"\n";
        assert!(matches!(
            Settings::from_toml(bad_ring),
            Err(ConfigError::Invalid(_))
        ));
        let bad_format = "[keyrings.pan]\n[types.pan]\nvalidator = \"email\"\nkeyring = \"pan\"\nformat = \"last4\"\n";
        assert!(matches!(
            Settings::from_toml(bad_format),
            Err(ConfigError::Invalid(_))
        ));
        assert!(Settings::from_toml("not toml [").is_err());
        // Transit names keyrings and signing keys alike: one name may not be both.
        let signing = Settings::from_toml(
            "[signing_keys.receipts]\nalgorithm = \"ecdsa-p256\"\n\
             [signing_keys.docs]\nalgorithm = \"ed25519\"\n",
        )
        .unwrap();
        assert_eq!(signing.signing_keys.len(), 2);
        for bad in [
            "[signing_keys.pii]\nalgorithm = \"ed25519\"\n",
            "[signing_keys.x]\nalgorithm = \"rsa-2048\"\n",
            "[signing_keys.Bad]\nalgorithm = \"ed25519\"\n",
            // The internal keyring's name (review of sign, finding 1).
            "[signing_keys.fingerprint]\nalgorithm = \"ed25519\"\n",
            // Convergent encryption without a context would make equal values equal for
            // every caller.
            "[keyrings.pan]\n[keyrings.pii]\nconvergent = true\n",
        ] {
            assert!(Settings::from_toml(bad).is_err(), "{bad}");
        }
        // A file's clients replace the development defaults as a whole.
        let prod = Settings::from_toml(
            "[server]\nidentity = \"uri\"\nidentity_uri_prefix = \"spiffe://\"\n\
             [clients.\"spiffe://payments/checkout\"]\npermissions = [\"tokenize:pan\"]\n",
        )
        .unwrap();
        assert!(!prod.clients.contains_key("app"));
    }

    #[test]
    fn the_identity_source_is_explicit_and_every_client_name_fits_it() {
        let dev = Settings::from_toml("").unwrap();
        assert_eq!(dev.server.identity, IdentitySource::Cn);
        let spiffe = "[clients.\"spiffe://payments/checkout\"]\npermissions = [\"tokenize:pan\"]\n";
        for (text, want) in [
            // A URI-shaped client cannot match a CN identity.
            (spiffe.to_owned(), "can never match"),
            // uri mode needs its prefix…
            (
                format!("[server]\nidentity = \"uri\"\n{spiffe}"),
                "identity_uri_prefix",
            ),
            // …and a prefix without uri mode is a mistake.
            (
                "[server]\nidentity_uri_prefix = \"spiffe://\"\n".to_owned(),
                "identity_uri_prefix",
            ),
            // In uri mode, the development clients (CNs) can never match.
            (
                "[server]\nidentity = \"uri\"\nidentity_uri_prefix = \"spiffe://\"\n".to_owned(),
                "client `app` can never match",
            ),
            ("[server]\nidentity = \"san\"\n".to_owned(), "identity"),
            (
                "[server]\nmax_connections = 0\n".to_owned(),
                "max_connections",
            ),
        ] {
            let e = Settings::from_toml(&text).unwrap_err().to_string();
            assert!(e.contains(want), "{text}: {e}");
        }
        let lb = Settings::from_toml(
            "[server.proxy_protocol]\ntrusted = [\"10.0.0.5/32\", \"fd00::/8\"]\n",
        )
        .unwrap();
        assert_eq!(lb.server.proxy_protocol.trusted.len(), 2);
        assert!(
            Settings::from_toml("[server.proxy_protocol]\ntrusted = [\"10.0.0.5\"]\n").is_err()
        );
    }

    #[test]
    fn the_development_clients_serve_only_a_development_vault() {
        let dev = Settings::from_toml("").unwrap();
        assert!(dev.development_clients && !dev.dev_mode);
        assert!(matches!(
            dev.refuse_development_clients(),
            Err(ConfigError::DevelopmentClients)
        ));
        assert!(!dev.server.public_metrics, "metrics:read unless opened");
        let asked = Settings::from_toml("dev_mode = true\n").unwrap();
        assert!(asked.development_clients);
        asked.refuse_development_clients().unwrap();
        let prod =
            Settings::from_toml("[clients.svc]\npermissions = [\"tokenize:pan\"]\n").unwrap();
        assert!(!prod.development_clients);
        prod.refuse_development_clients().unwrap();
    }

    #[test]
    fn a_mistyped_permission_fails_start_up_naming_the_client_and_pattern() {
        let client = |perm: &str| format!("[clients.svc]\npermissions = [\"{perm}\"]\n");
        for (perm, want) in [
            ("detokenise:*", "names no known action"),
            ("detokenize:pna", "names no configured token type"),
            ("encrypt:pn", "names no configured keyring"),
            ("sign:pii", "names no configured signing key"),
            (
                "rotate:nothing",
                "names no configured keyring or signing key",
            ),
            ("keys:raed", "must be `read` or `*`"),
        ] {
            let e = Settings::from_toml(&client(perm)).unwrap_err().to_string();
            assert!(e.contains(want) && e.contains(perm), "{perm}: {e}");
        }
        for perm in [
            "*",
            "tokenize:pan",
            "detokenize:*",
            "*:pii",
            "encrypt:pii",
            "hmac:pii",
            "keys:read",
        ] {
            let s = Settings::from_toml(&client(perm)).unwrap();
            assert_eq!(s.clients["svc"].permissions[0].to_string(), perm);
        }
        let defaults = Settings::from_toml("").unwrap();
        assert_eq!(defaults.clients["app"].permissions.len(), 13);
    }
}
