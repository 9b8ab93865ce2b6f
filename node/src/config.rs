//! The node's config file (TOML): where its data lives, who it is in the hall, where it listens, and the store's knobs.
//!
//! Defaults live in one place, [`Config::recommended`]. A file only lists what it changes; an unknown key, a value of
//! the wrong type or a value out of range is an error that names the key, the value and what is allowed.
//!
//! ```toml
//! # /etc/zhaowo/node.toml: every key is optional.
//! data_dir = "/var/lib/zhaowo"        # the store (cases.db) and the key file (node.key)
//! window = "BBC01"                    # the window code this node registers under (1-16 ASCII letters, digits or `_`)
//! role = "window"                     # window | supervision | volunteer | admin
//! display_name = "办不成事窗口 1号机"
//! listen = "0.0.0.0:7420"             # QUIC, peers
//! http_listen = "127.0.0.1:7421"      # the staff desk
//! peers = ["192.168.1.12:7420"]       # static peers (always tried; discovery only adds hints)
//!
//! [store]
//! cache_docs = 4096                   # loaded case documents kept in memory (~17 KB each)
//! queue_requests = 256                # requests waiting for the store thread
//! compact_min_bytes = 1024            # change rows kept per case before compacting into a snapshot
//!
//! [materials]                         # material files (issue 16 §3)
//! fetch_bytes_per_sec = 2097152       # a hall PC's background fetching share, bytes/s (65536-1073741824)
//! fetch_in_flight = 4                 # files fetched at once (1-32)
//!
//! [sms]                               # the hall's SMS platform (issue 15 §4); without it no SMS leaves this node
//! endpoint = "http://10.20.0.8:8080/api/sms/send"   # JSON POST; plain HTTP on the hall network (see ARCHITECTURE.md)
//! token = "s3cr3t-token"              # optional: sent as `Authorization: Bearer …`
//! ```

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use zhaowo_crdt::model::Role;

/// Static peers in one config file: a hall has tens of window PCs, not thousands.
pub const PEERS_MAX: usize = 256;
/// Loaded documents at most: 1,000,000 × ~17 KB would be 17 GB, past any hall PC.
pub const CACHE_DOCS_LIMIT: usize = 100_000;
/// Queued store requests at most.
pub const QUEUE_REQUESTS_LIMIT: usize = 65_536;
/// The config file itself: a hand-written file is a few KB.
pub const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;
/// Display names are shown in lists.
pub const DISPLAY_NAME_CHARS_MAX: usize = 64;

/// The node's settings, every field resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// The store (`cases.db`) and the key file (`node.key`) live here.
    pub data_dir: PathBuf,
    /// The window code this node registers under.
    pub window: String,
    pub role: Role,
    pub display_name: String,
    /// QUIC endpoint for peers.
    pub listen: SocketAddr,
    /// The staff desk (HTTP).
    pub http_listen: SocketAddr,
    pub peers: Vec<SocketAddr>,
    /// See [`crate::store::CACHE_DOCS_MAX`].
    pub store_cache_docs: usize,
    /// See [`crate::store::QUEUE_REQUESTS_MAX`].
    pub store_queue_requests: usize,
    /// See [`crate::store::COMPACT_MIN_BYTES`].
    pub store_compact_min_bytes: usize,
    /// The hall's SMS platform (`[sms]`): per node, never in the replicated hall document, so its token never
    /// reaches a laptop. `None`: this node sends no SMS (its outbox rows wait, see `node::outbox`).
    pub sms: Option<SmsEndpoint>,
    /// `[materials] fetch_bytes_per_sec`: see [`crate::sync::transfer::FETCH_BYTES_PER_SEC_DEFAULT`].
    pub materials_fetch_bytes_per_sec: u64,
    /// `[materials] fetch_in_flight`: see [`crate::sync::transfer::FETCH_IN_FLIGHT_DEFAULT`].
    pub materials_fetch_in_flight: usize,
}

/// Characters of the SMS endpoint URL.
pub const SMS_ENDPOINT_CHARS_MAX: usize = 2048;
/// Characters of the SMS platform's bearer token.
pub const SMS_TOKEN_CHARS_MAX: usize = 1024;

/// Where this node posts SMS messages: `http://host:port/path` and an optional bearer token.
#[derive(Clone, PartialEq, Eq)]
pub struct SmsEndpoint {
    /// The URL as written.
    pub url: String,
    pub host: String,
    pub port: u16,
    /// Path and query, starting with `/`.
    pub path: String,
    pub token: Option<String>,
}

impl std::fmt::Debug for SmsEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a credential: never in a log or `--show-settings`.
        // Nor the query of the URL, which some platforms use for a key.
        let path = self.path.split('?').next().unwrap_or_default();
        f.debug_struct("SmsEndpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("path", &path)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .finish_non_exhaustive()
    }
}

impl SmsEndpoint {
    /// Parses `http://host[:port]/path`; the reason is a sentence for the config error.
    pub fn parse(url: &str, token: Option<String>) -> Result<SmsEndpoint, String> {
        if url.chars().count() > SMS_ENDPOINT_CHARS_MAX || url.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(format!("a URL of at most {SMS_ENDPOINT_CHARS_MAX} characters without spaces"));
        }
        if url.starts_with("https://") {
            return Err("https is not supported yet: use the platform's plain-HTTP address on the hall network, or a \
                        TLS proxy on this PC (see ARCHITECTURE.md, SMS outbox)"
                .to_owned());
        }
        let uri: axum::http::Uri =
            url.parse().map_err(|_| "expected a URL such as \"http://10.20.0.8:8080/api/sms/send\"".to_owned())?;
        if uri.scheme_str() != Some("http") {
            return Err("expected an http:// URL, e.g. \"http://10.20.0.8:8080/api/sms/send\"".to_owned());
        }
        let host = uri.host().filter(|host| !host.is_empty()).ok_or("the URL has no host")?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_owned();
        let path = uri.path_and_query().map_or("/".to_owned(), |p| p.as_str().to_owned());
        let path = if path.starts_with('/') { path } else { format!("/{path}") };
        if let Some(token) = &token
            && (token.is_empty() || token.len() > SMS_TOKEN_CHARS_MAX || !token.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(format!("the token must be 1-{SMS_TOKEN_CHARS_MAX} printable ASCII characters without spaces"));
        }
        Ok(SmsEndpoint { url: url.to_owned(), host, port: uri.port_u16().unwrap_or(80), path, token })
    }
}

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file `{path}`")]
    Read { path: PathBuf, source: std::io::Error },
    /// The file is larger than [`CONFIG_FILE_BYTES_MAX`].
    #[error("config file `{path}` is {bytes} bytes, more than {CONFIG_FILE_BYTES_MAX}")]
    TooLarge { path: PathBuf, bytes: u64 },
    /// Not valid TOML, an unknown key, or a value of the wrong type.
    #[error("config file `{path}`: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A value of the right type but not allowed.
    #[error("config file `{path}`: `{key}` = {value}: {reason}")]
    Invalid { path: PathBuf, key: &'static str, value: String, reason: String },
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    data_dir: Option<PathBuf>,
    window: Option<String>,
    role: Option<String>,
    display_name: Option<String>,
    listen: Option<String>,
    http_listen: Option<String>,
    peers: Option<Vec<String>>,
    store: Option<StoreFile>,
    sms: Option<SmsFile>,
    materials: Option<MaterialsFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MaterialsFile {
    fetch_bytes_per_sec: Option<i64>,
    fetch_in_flight: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SmsFile {
    endpoint: String,
    token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoreFile {
    cache_docs: Option<i64>,
    queue_requests: Option<i64>,
    compact_min_bytes: Option<i64>,
}

impl Config {
    /// The defaults: a window node of the hall's 办不成事 window, data under `/var/lib/zhaowo`.
    pub fn recommended() -> Config {
        Config {
            data_dir: PathBuf::from("/var/lib/zhaowo"),
            // The hall's default window (DOMAIN.md): the 办不成事 window on the first floor.
            window: "BBC01".to_owned(),
            role: Role::Window,
            display_name: "zhaowo node".to_owned(),
            // Peers on the hall LAN reach every node on one fixed UDP port.
            listen: SocketAddr::from(([0, 0, 0, 0], 7420)),
            // The staff desk is served to this PC only.
            http_listen: SocketAddr::from(([127, 0, 0, 1], 7421)),
            peers: Vec::new(),
            store_cache_docs: crate::store::CACHE_DOCS_MAX,
            store_queue_requests: crate::store::QUEUE_REQUESTS_MAX,
            store_compact_min_bytes: crate::store::COMPACT_MIN_BYTES,
            // No SMS platform: the hall's admin configures it on the PCs that send (issue 15 §4).
            sms: None,
            // A hall PC's background fetching takes a named share of the LAN (issue 16 §3).
            materials_fetch_bytes_per_sec: crate::sync::transfer::FETCH_BYTES_PER_SEC_DEFAULT,
            materials_fetch_in_flight: crate::sync::transfer::FETCH_IN_FLIGHT_DEFAULT,
        }
    }

    /// The store file inside [`Config::data_dir`].
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("cases.db")
    }

    /// The key file inside [`Config::data_dir`].
    pub fn key_path(&self) -> PathBuf {
        self.data_dir.join("node.key")
    }

    /// Reads a config file over the defaults.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read = |source| ConfigError::Read { path: path.to_path_buf(), source };
        let bytes = std::fs::metadata(path).map_err(read)?.len();
        if bytes > CONFIG_FILE_BYTES_MAX {
            return Err(ConfigError::TooLarge { path: path.to_path_buf(), bytes });
        }
        let text = std::fs::read_to_string(path).map_err(read)?;
        Config::from_toml(path, &text)
    }

    /// Parses config text over the defaults; `path` only names the source in errors.
    pub fn from_toml(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let file: File = toml::from_str(text)
            .map_err(|error| ConfigError::Syntax { path: path.to_path_buf(), message: error.to_string() })?;
        let invalid = |key: &'static str, value: &dyn std::fmt::Debug, reason: &str| ConfigError::Invalid {
            path: path.to_path_buf(),
            key,
            value: format!("{value:?}"),
            reason: reason.to_owned(),
        };
        let mut config = Config::recommended();
        if let Some(data_dir) = file.data_dir {
            if data_dir.as_os_str().is_empty() {
                return Err(invalid("data_dir", &data_dir, "must not be empty"));
            }
            config.data_dir = data_dir;
        }
        if let Some(window) = file.window {
            if !zhaowo_crdt::ids::is_valid_code(&window) {
                return Err(invalid(
                    "window",
                    &window,
                    "a window code is 1-16 ASCII letters, digits or `_`, e.g. \"BBC01\"",
                ));
            }
            config.window = window;
        }
        if let Some(role) = file.role {
            config.role = match Role::parse(&role) {
                Some(Role::Citizen) | None => {
                    return Err(invalid(
                        "role",
                        &role,
                        "expected one of \"window\", \"supervision\", \"volunteer\", \"admin\"",
                    ));
                }
                Some(role) => role,
            };
        }
        if let Some(name) = file.display_name {
            if name.trim().is_empty()
                || name.chars().count() > DISPLAY_NAME_CHARS_MAX
                || name.chars().any(char::is_control)
            {
                return Err(invalid(
                    "display_name",
                    &name,
                    &format!("1-{DISPLAY_NAME_CHARS_MAX} printable characters"),
                ));
            }
            config.display_name = name;
        }
        let address = |key: &'static str, text: &str| {
            text.parse::<SocketAddr>()
                .map_err(|_| invalid(key, &text, "expected an IP address and port, e.g. \"0.0.0.0:7420\""))
        };
        if let Some(listen) = file.listen {
            config.listen = address("listen", &listen)?;
        }
        if let Some(listen) = file.http_listen {
            config.http_listen = address("http_listen", &listen)?;
        }
        if let Some(peers) = file.peers {
            if peers.len() > PEERS_MAX {
                return Err(invalid("peers", &peers.len(), &format!("at most {PEERS_MAX} static peers")));
            }
            config.peers = peers.iter().map(|peer| address("peers", peer)).collect::<Result<_, _>>()?;
        }
        if let Some(store) = file.store {
            let ranged = |key: &'static str, value: i64, min: i64, max: i64| {
                if (min..=max).contains(&value) {
                    Ok(value as usize)
                } else {
                    Err(invalid(key, &value, &format!("must be between {min} and {max}")))
                }
            };
            if let Some(value) = store.cache_docs {
                config.store_cache_docs = ranged("store.cache_docs", value, 1, CACHE_DOCS_LIMIT as i64)?;
            }
            if let Some(value) = store.queue_requests {
                config.store_queue_requests = ranged("store.queue_requests", value, 1, QUEUE_REQUESTS_LIMIT as i64)?;
            }
            if let Some(value) = store.compact_min_bytes {
                config.store_compact_min_bytes =
                    ranged("store.compact_min_bytes", value, 0, crate::store::REMOTE_CHANGE_BYTES_MAX as i64)?;
            }
        }
        if let Some(materials) = file.materials {
            use crate::sync::transfer::{FETCH_BYTES_PER_SEC_MAX, FETCH_BYTES_PER_SEC_MIN, FETCH_IN_FLIGHT_MAX};
            if let Some(value) = materials.fetch_bytes_per_sec {
                if !(FETCH_BYTES_PER_SEC_MIN as i64..=FETCH_BYTES_PER_SEC_MAX as i64).contains(&value) {
                    return Err(invalid(
                        "materials.fetch_bytes_per_sec",
                        &value,
                        &format!(
                            "must be between {FETCH_BYTES_PER_SEC_MIN} (64 KiB/s) and {FETCH_BYTES_PER_SEC_MAX} \
                             (1 GiB/s, no limit on a LAN), e.g. 2097152 for 2 MiB/s"
                        ),
                    ));
                }
                config.materials_fetch_bytes_per_sec = value as u64;
            }
            if let Some(value) = materials.fetch_in_flight {
                if !(1..=FETCH_IN_FLIGHT_MAX as i64).contains(&value) {
                    return Err(invalid(
                        "materials.fetch_in_flight",
                        &value,
                        &format!("must be between 1 and {FETCH_IN_FLIGHT_MAX}"),
                    ));
                }
                config.materials_fetch_in_flight = value as usize;
            }
        }
        if let Some(sms) = file.sms {
            let token_given = sms.token.is_some();
            config.sms = Some(SmsEndpoint::parse(&sms.endpoint, sms.token).map_err(|reason| {
                // The token is not echoed back: name the key only.
                if token_given && reason.starts_with("the token") {
                    invalid("sms.token", &"[redacted]", &reason)
                } else {
                    invalid("sms.endpoint", &sms.endpoint, &reason)
                }
            })?);
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(Path::new("node.toml"), text)
    }

    #[test]
    fn an_empty_file_is_the_recommended_config() {
        assert_eq!(parse("").unwrap(), Config::recommended());
    }

    #[test]
    fn the_documented_example_parses() {
        let doc = include_str!("config.rs");
        let example: String = doc
            .lines()
            .skip_while(|line| !line.starts_with("//! ```toml"))
            .skip(1)
            .take_while(|line| !line.starts_with("//! ```"))
            .map(|line| format!("{}\n", line.trim_start_matches("//!").trim_start_matches(' ')))
            .collect();
        let config = parse(&example).unwrap();
        assert_eq!(config.peers.len(), 1);
        assert_eq!(config.store_cache_docs, 4096);
        assert_eq!(config.display_name, "办不成事窗口 1号机");
        assert_eq!((config.materials_fetch_bytes_per_sec, config.materials_fetch_in_flight), (2 * 1024 * 1024, 4));
        let sms = config.sms.unwrap();
        assert_eq!((sms.host.as_str(), sms.port, sms.path.as_str()), ("10.20.0.8", 8080, "/api/sms/send"));
        assert!(!format!("{sms:?}").contains("s3cr3t"), "the token is redacted");
    }

    #[test]
    fn every_bad_value_names_its_key() {
        let cases = [
            ("window = \"bbc 01\"", "`window`"),
            ("role = \"citizen\"", "`role`"),
            ("role = 3", "invalid type"),
            ("listen = \"localhost\"", "`listen`"),
            ("http_listen = \"127.0.0.1\"", "`http_listen`"),
            ("peers = [\"10.0.0.1:7420\", \"nope\"]", "`peers`"),
            ("display_name = \"\"", "`display_name`"),
            ("data_dir = \"\"", "`data_dir`"),
            ("colour = \"red\"", "unknown field `colour`"),
            ("[store]\ncache_docs = 0", "`store.cache_docs`"),
            ("[store]\ncache_docs = 100000000", "`store.cache_docs`"),
            ("[store]\nqueue_requests = -1", "`store.queue_requests`"),
            ("[store]\ncompact_min_bytes = 99999999999", "`store.compact_min_bytes`"),
            ("[store]\nshards = 4", "unknown field `shards`"),
            ("window = ", "config file"),
            ("[sms]\nendpoint = \"https://sms.example/send\"", "`sms.endpoint`"),
            ("[sms]\nendpoint = \"ftp://10.0.0.1/x\"", "`sms.endpoint`"),
            ("[sms]\nendpoint = \"not a url\"", "`sms.endpoint`"),
            ("[sms]\nendpoint = \"http:///x\"", "`sms.endpoint`"),
            ("[sms]\nendpoint = \"http://10.0.0.1/x\"\ntoken = \"has space\"", "`sms.token`"),
            ("[sms]\ntoken = \"t\"", "missing field `endpoint`"),
            ("[materials]\nfetch_bytes_per_sec = 0", "`materials.fetch_bytes_per_sec`"),
            ("[materials]\nfetch_bytes_per_sec = 99999999999", "`materials.fetch_bytes_per_sec`"),
            ("[materials]\nfetch_bytes_per_sec = \"2M\"", "invalid type"),
            ("[materials]\nfetch_in_flight = 0", "`materials.fetch_in_flight`"),
            ("[materials]\nshare = 1", "unknown field `share`"),
            ("[sms]\nendpoint = \"http://10.0.0.1/x\"\nretries = 3", "unknown field `retries`"),
        ];
        for (text, expected) in cases {
            let error = parse(text).expect_err(text).to_string();
            assert!(error.contains(expected), "{text:?} gave {error:?}, expected it to mention {expected:?}");
        }
    }
}
