//! The node's data directory: its key, config, hall configuration, roster and store, and the admin's operations on
//! them (setting up a hall, enrolling, joining, revoking).
//!
//! ```text
//! DIR/node.toml        the node's config (window, role, name, addresses, peers); see `config`
//! DIR/node.key         the node's ed25519 key (mode 0600); its public key is the node id
//! DIR/hall.key         the hall root key (admin node only, mode 0600): signs enrollments and revocations
//! DIR/hall.automerge   the hall document (windows, units, categories, routing, time limits, calendar, desk accounts)
//! DIR/hall.signatures  the signatures of its changes, 96 bytes each (hash, ed25519 signature by the author)
//! DIR/roster.records   the signed roster records this node knows
//! DIR/cases.db         the store
//! ```
//!
//! The hall document and the roster live in files, kept up to date by the running node's sync (`sync`), which
//! re-reads them when the admin's CLI writes them; every write goes to a temporary file first and is renamed into
//! place, so a crash leaves the old or the new file, never half of one. Saving the hall document merges what is on
//! disk first (sync may have written changes from peers since this `Home` read it) and signs this node's own changes,
//! so an admin's edit can travel to every node (peers accept only admin-signed hall changes, see `SignedHall`).

use crate::config::{Config, ConfigError};
use crate::identity::{IdentityError, NodeIdentity, Passphrase};
use crate::store::{OpenStoreError, Store, StoreOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use zhaowo_crdt::hall::{Hall, HallDoc, HallError, HallSignatures, SignedHall};
use zhaowo_crdt::model::Role;
use zhaowo_crdt::roster::{Enrollment, Record, Revocation, Roster, RosterError, SignedRecord};
use zhaowo_crdt::{Author, Ctx};

/// The roster file: `ROSTER_RECORDS_MAX` records of ~200 bytes.
pub const ROSTER_FILE_BYTES_MAX: u64 = 1024 * 1024;
/// The hall document file.
pub const HALL_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// The hall signatures file: one 96-byte entry per change, so ~43,000 admin edits, far beyond a hall's lifetime.
pub const HALL_SIGNATURES_FILE_BYTES_MAX: u64 = 4 * 1024 * 1024;
/// Bytes of one entry of the hall signatures file: the change hash, then the signature.
const HALL_SIGNATURE_ENTRY_BYTES: usize = 32 + 64;

/// Why the data directory could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    /// `init` on a directory that already holds a node, or a node's data (a store, a roster, a hall key or document)
    /// without its key: a new identity there would be outside the roster and rewrite the node's role.
    #[error("`{dir}` already holds a zhaowo node's data: {}", .found.join(", "))]
    AlreadyInitialized { dir: PathBuf, found: Vec<&'static str> },
    /// The directory holds no node yet.
    #[error("`{0}` holds no zhaowo node")]
    NotInitialized(PathBuf),
    /// The directory holds a node's data but its key file is gone (deleted, or not restored from a backup).
    #[error("`{dir}` holds a zhaowo node's data ({}) but no node.key", .found.join(", "))]
    KeyMissing { dir: PathBuf, found: Vec<&'static str> },
    #[error("cannot {what} `{path}`")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// A file is larger than its limit.
    #[error("`{path}` is {bytes} bytes, more than the limit of {max}")]
    TooLarge { path: PathBuf, bytes: u64, max: u64 },
    #[error(transparent)]
    Identity(#[from] IdentityError),
    #[error(transparent)]
    Store(#[from] OpenStoreError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Hall(#[from] HallError),
    #[error(transparent)]
    Roster(#[from] RosterError),
    /// An admin operation on a node that does not hold the hall root key.
    #[error("this node does not hold the hall root key (only the admin node that set up the hall does)")]
    NotAdmin,
    /// The node is not a member of a hall yet.
    #[error("this node has not joined a hall yet")]
    NoHall,
    /// A malformed enrollment file or argument.
    #[error("{0}")]
    Invalid(String),
}

/// Why the HTTP surfaces may take the hall of their `Home` as readable: a `Home` holding a hall document read it
/// (and validated it) when it opened, the document does not change under it, and `zhaowo run` serves only a node that
/// joined a hall. There is no default hall to fall back on.
pub const SERVED_HALL: &str = "the HTTP surfaces serve a node that joined a hall: its hall was read when it opened";

/// The files of a data directory that belong to a node (besides `node.key`): `init` refuses a directory holding any.
pub const NODE_FILES: &[&str] =
    &["node.key", "cases.db", "roster.records", "hall.key", "hall.automerge", "hall.signatures", "node.toml"];

/// What `init` creates.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Set up a new hall with this name (this node becomes its admin); `None` makes a node waiting to join.
    pub hall_name: Option<String>,
    pub window: String,
    pub role: Role,
    pub display_name: String,
    pub listen: SocketAddr,
    pub http_listen: SocketAddr,
}

pub use zhaowo_crdt::enrollment::EnrollmentFile;
use zhaowo_crdt::enrollment::{ENROLLMENT_FORMAT, EnrollmentError};

/// An opened data directory.
#[derive(Debug)]
pub struct Home {
    pub dir: PathBuf,
    pub config: Config,
    pub identity: NodeIdentity,
    hall_root: Option<NodeIdentity>,
    hall_doc: Option<HallDoc>,
    /// Signatures of the hall document's changes (this node's own, and those learned by sync).
    hall_signatures: HallSignatures,
    roster: Option<Roster>,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> HomeError {
    let path = path.to_path_buf();
    move |source| HomeError::Io { what, path, source }
}

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, HomeError> {
    let bytes = std::fs::metadata(path).map_err(io("read", path))?.len();
    if bytes > max {
        return Err(HomeError::TooLarge { path: path.to_path_buf(), bytes, max });
    }
    std::fs::read(path).map_err(io("read", path))
}

/// Writes a file atomically: a temporary file, fsync, rename, fsync of the directory.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), HomeError> {
    use std::io::Write;
    // Named after the whole file name and the process: `hall.automerge` and `hall.signatures` must not share one, nor
    // the node and the admin's CLI writing the same file at once.
    let name = path.file_name().map(|name| name.to_string_lossy().into_owned()).unwrap_or_default();
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let write = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let temporary = path.with_file_name(format!("{name}.{}.{write}.tmp", std::process::id()));
    let mut file = std::fs::File::create(&temporary).map_err(io("create", &temporary))?;
    file.write_all(bytes).map_err(io("write", &temporary))?;
    file.sync_all().map_err(io("sync", &temporary))?;
    std::fs::rename(&temporary, path).map_err(io("rename into", path))?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(io("sync", dir))?;
    }
    Ok(())
}

pub use zhaowo_crdt::ids::{hex_decode as unhex, hex_encode as hex};

/// Parses a node id (64 hex digits).
pub fn parse_node_id(text: &str) -> Result<[u8; 32], HomeError> {
    unhex(text.trim())
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| HomeError::Invalid(format!("`{text}` is not a node id (64 hex digits)")))
}

/// The config file as `init` and `peers add` write it: the `toml` serializer under a comment line.
fn config_toml(config: &Config) -> Result<String, HomeError> {
    let mut table = toml::Table::new();
    let mut put = |key: &str, value: toml::Value| {
        table.insert(key.to_owned(), value);
    };
    put("window", config.window.clone().into());
    put("role", config.role.code().into());
    put("display_name", config.display_name.clone().into());
    put("listen", config.listen.to_string().into());
    put("http_listen", config.http_listen.to_string().into());
    put("peers", toml::Value::Array(config.peers.iter().map(|peer| peer.to_string().into()).collect()));
    let body = toml::to_string(&table)
        .map_err(|error| HomeError::Invalid(format!("cannot write the config as TOML: {error}")))?;
    Ok(format!("# zhaowo node config: see `zhaowo --help`; every key is optional.\n{body}"))
}

/// Milliseconds since the Unix epoch: the only clock of the node's commands.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Fresh OS randomness for event ids and query codes.
pub fn entropy() -> Result<u128, HomeError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|error| HomeError::Identity(IdentityError::Random(error.to_string())))?;
    Ok(u128::from_le_bytes(bytes))
}

/// 32 fresh bytes from the OS random source for one command's sealing (`Ctx::secret`); an error when it fails.
pub fn secret() -> Result<[u8; 32], HomeError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|error| HomeError::Identity(IdentityError::Random(error.to_string())))?;
    Ok(bytes)
}

impl Home {
    fn path(dir: &Path, name: &str) -> PathBuf {
        dir.join(name)
    }

    /// Creates a node in `dir` (and, with a hall name, the hall: root key, hall document from the neutral template
    /// [`Hall::template`], the node's own enrollment). Refuses a directory that
    /// holds any node file ([`NODE_FILES`]).
    pub fn init(dir: &Path, options: InitOptions, now_ms: i64) -> Result<Home, HomeError> {
        Home::init_from(dir, options, None, None, now_ms)
    }

    /// [`Home::init`] with the key files (`node.key`, and `hall.key` of a new hall) protected by `passphrase` from
    /// the first byte written (issue 13 §6).
    pub fn init_protected(
        dir: &Path,
        options: InitOptions,
        passphrase: &Passphrase,
        now_ms: i64,
    ) -> Result<Home, HomeError> {
        Home::init_from(dir, options, None, Some(passphrase), now_ms)
    }

    /// [`Home::init`] starting the hall from `hall` instead of the neutral template (the demo's Jiang'an hall, tests);
    /// the node's window is added to it if missing.
    pub fn init_with_hall(dir: &Path, options: InitOptions, hall: Hall, now_ms: i64) -> Result<Home, HomeError> {
        Home::init_from(dir, options, Some(hall), None, now_ms)
    }

    fn init_from(
        dir: &Path,
        options: InitOptions,
        start: Option<Hall>,
        passphrase: Option<&Passphrase>,
        now_ms: i64,
    ) -> Result<Home, HomeError> {
        let found = Home::node_files(dir);
        if !found.is_empty() {
            return Err(HomeError::AlreadyInitialized { dir: dir.to_path_buf(), found });
        }
        if !zhaowo_crdt::ids::is_valid_code(&options.window) {
            return Err(HomeError::Invalid(format!(
                "`{}` is not a window code: use 1-16 ASCII letters, digits or `_`",
                options.window
            )));
        }
        std::fs::create_dir_all(dir).map_err(io("create", dir))?;
        let identity = NodeIdentity::generate()?;
        identity.save_new_with(&Home::path(dir, "node.key"), passphrase)?;
        let config = Config {
            data_dir: dir.to_path_buf(),
            window: options.window.clone(),
            role: options.role,
            display_name: options.display_name.clone(),
            listen: options.listen,
            http_listen: options.http_listen,
            peers: Vec::new(),
            ..Config::recommended()
        };
        write_atomic(&Home::path(dir, "node.toml"), config_toml(&config)?.as_bytes())?;
        let mut home = Home {
            dir: dir.to_path_buf(),
            config,
            identity,
            hall_root: None,
            hall_doc: None,
            hall_signatures: HallSignatures::new(),
            roster: None,
        };
        if let Some(name) = options.hall_name {
            let root = NodeIdentity::generate()?;
            root.save_new_with(&Home::path(dir, "hall.key"), passphrase)?;
            let hall = match start {
                Some(mut hall) => {
                    hall.name = name;
                    if !hall.windows.contains_key(&options.window) {
                        let window =
                            zhaowo_crdt::hall::Window { name: options.display_name.clone(), floor: String::new() };
                        hall.windows.insert(options.window.clone(), window);
                    }
                    hall
                }
                // A neutral template the admin edits (`zhaowo hall export` / `hall import`).
                None => Hall::template(&name, &options.window, &options.display_name),
            };
            let actor = home.identity.new_actor()?;
            home.hall_doc = Some(HallDoc::create(actor, Role::Admin, &options.display_name, now_ms, &hall)?);
            home.roster = Some(Roster::new(root.verifying_key().to_bytes()));
            home.hall_root = Some(root);
            let own_key = home.identity.verifying_key().to_bytes();
            home.sign_and_add(Record::Enrollment(Enrollment {
                hall: [0; 32],
                node_key: own_key,
                window: options.window,
                role: options.role,
                display_name: options.display_name,
                issued_ms: now_ms,
            }))?;
            home.save_hall()?;
        }
        Ok(home)
    }

    /// The node files present in `dir` (see [`NODE_FILES`]).
    pub fn node_files(dir: &Path) -> Vec<&'static str> {
        NODE_FILES.iter().copied().filter(|name| Home::path(dir, name).exists()).collect()
    }

    /// Opens an existing data directory whose key files are not protected by a passphrase.
    pub fn open(dir: &Path) -> Result<Home, HomeError> {
        Home::open_with(dir, None)
    }

    /// Whether this data directory's `node.key` is protected by a passphrase.
    pub fn is_protected(dir: &Path) -> Result<bool, HomeError> {
        Ok(NodeIdentity::is_protected(&Home::path(dir, "node.key"))?)
    }

    /// Protects the key files (`node.key`, and `hall.key` on the admin node) with `passphrase`, or removes the
    /// protection with `None` (`zhaowo key passphrase`). Each file is replaced by a rename.
    pub fn set_passphrase(&self, passphrase: Option<&Passphrase>) -> Result<(), HomeError> {
        self.identity.rewrite(&Home::path(&self.dir, "node.key"), passphrase)?;
        if let Some(root) = &self.hall_root {
            root.rewrite(&Home::path(&self.dir, "hall.key"), passphrase)?;
        }
        Ok(())
    }

    /// Opens an existing data directory, opening protected key files with `passphrase`.
    pub fn open_with(dir: &Path, passphrase: Option<&Passphrase>) -> Result<Home, HomeError> {
        let config_path = Home::path(dir, "node.toml");
        if !Home::path(dir, "node.key").exists() {
            let found = Home::node_files(dir);
            if found.is_empty() {
                return Err(HomeError::NotInitialized(dir.to_path_buf()));
            }
            return Err(HomeError::KeyMissing { dir: dir.to_path_buf(), found });
        }
        let mut config = Config::load(&config_path)?;
        config.data_dir = dir.to_path_buf();
        let identity = NodeIdentity::load_with(&Home::path(dir, "node.key"), passphrase)?;
        let root_path = Home::path(dir, "hall.key");
        let hall_root = if root_path.exists() { Some(NodeIdentity::load_with(&root_path, passphrase)?) } else { None };
        let mut home = Home {
            dir: dir.to_path_buf(),
            config,
            identity,
            hall_root,
            hall_doc: None,
            hall_signatures: HallSignatures::new(),
            roster: None,
        };
        let hall_path = Home::path(dir, "hall.automerge");
        if hall_path.exists() {
            let actor = home.identity.new_actor()?;
            home.hall_doc = Some(HallDoc::load(&read_capped(&hall_path, HALL_FILE_BYTES_MAX)?, actor)?);
            home.hall_signatures = Home::read_hall_signatures(dir)?;
        }
        let roster_path = Home::path(dir, "roster.records");
        if roster_path.exists() {
            home.roster = Some(Home::read_roster(&read_capped(&roster_path, ROSTER_FILE_BYTES_MAX)?)?);
        }
        Ok(home)
    }

    /// Roster file: the hall key (32 bytes), then records as (u32 big-endian length, bytes).
    fn read_roster(bytes: &[u8]) -> Result<Roster, HomeError> {
        let bad = || HomeError::Invalid("the roster file is damaged".into());
        let hall: [u8; 32] = bytes.get(..32).ok_or_else(bad)?.try_into().map_err(|_| bad())?;
        let mut roster = Roster::new(hall);
        let mut rest = &bytes[32..];
        while !rest.is_empty() {
            let len = u32::from_be_bytes(rest.get(..4).ok_or_else(bad)?.try_into().map_err(|_| bad())?) as usize;
            let record = rest.get(4..4 + len).ok_or_else(bad)?;
            roster.insert(SignedRecord::from_bytes(record)?)?;
            rest = &rest[4 + len..];
        }
        Ok(roster)
    }

    /// Writes the config file (atomically), e.g. after `zhaowo peers add`.
    pub fn save_config(&self) -> Result<(), HomeError> {
        write_atomic(&Home::path(&self.dir, "node.toml"), config_toml(&self.config)?.as_bytes())
    }

    /// Writes the hall document (merged with the one on disk, this node's changes signed), the roster and the config.
    fn save_hall(&mut self) -> Result<(), HomeError> {
        self.save_hall_merging(true)
    }

    fn save_hall_merging(&mut self, merge_disk: bool) -> Result<(), HomeError> {
        if let Some(doc) = self.hall_doc.take() {
            let mut signed = SignedHall::new(doc, std::mem::take(&mut self.hall_signatures));
            let written = self.write_own_hall(&mut signed, merge_disk);
            self.hall_doc = Some(signed.doc);
            self.hall_signatures = signed.signatures;
            written?;
        }
        if let Some(roster) = &self.roster {
            Home::write_roster(&self.dir, roster)?;
        }
        write_atomic(&Home::path(&self.dir, "node.toml"), config_toml(&self.config)?.as_bytes())
    }

    fn write_own_hall(&self, signed: &mut SignedHall, merge_disk: bool) -> Result<(), HomeError> {
        if merge_disk {
            // What sync wrote since this `Home` read the file. A damaged file is an error, not overwritten: it may hold
            // changes from peers that exist nowhere else on this node (move it away to start over from ours).
            let actor = self.identity.new_actor()?;
            if let Some(mut on_disk) = Home::read_signed_hall(&self.dir, actor)? {
                signed.merge_local(&mut on_disk)?;
            }
        }
        let signer = self.identity.change_signer();
        signed.sign_own(&signer.node_key, |hash| (signer.sign)(hash));
        Home::write_signed_hall(&self.dir, signed)
    }

    /// Reads the hall document and its signatures from a data directory, if it holds one (the sync runtime's copy).
    pub fn read_signed_hall(dir: &Path, actor: automerge::ActorId) -> Result<Option<SignedHall>, HomeError> {
        let path = Home::path(dir, "hall.automerge");
        if !path.exists() {
            return Ok(None);
        }
        let doc = HallDoc::load(&read_capped(&path, HALL_FILE_BYTES_MAX)?, actor)?;
        Ok(Some(SignedHall::new(doc, Home::read_hall_signatures(dir)?)))
    }

    fn read_hall_signatures(dir: &Path) -> Result<HallSignatures, HomeError> {
        let path = Home::path(dir, "hall.signatures");
        if !path.exists() {
            // A hall from before signed hall changes: its changes are trusted where they already are.
            return Ok(HallSignatures::new());
        }
        let bytes = read_capped(&path, HALL_SIGNATURES_FILE_BYTES_MAX)?;
        if bytes.len() % HALL_SIGNATURE_ENTRY_BYTES != 0 {
            return Err(HomeError::Invalid("the hall signatures file is damaged".into()));
        }
        Ok(bytes
            .chunks_exact(HALL_SIGNATURE_ENTRY_BYTES)
            .map(|entry| {
                let (hash, signature) = entry.split_at(32);
                (hash.try_into().expect("32 bytes"), signature.try_into().expect("64 bytes"))
            })
            .collect())
    }

    /// Writes the hall document and its signatures (atomically each; the signatures first, so a crash in between
    /// leaves signatures for changes the file lacks, never changes we cannot relay).
    pub fn write_signed_hall(dir: &Path, signed: &mut SignedHall) -> Result<(), HomeError> {
        Home::write_hall_files(dir, &Home::hall_files(signed))
    }

    /// The bytes of the hall files, `(hall.signatures, hall.automerge)`: taken under the running node's hall lock
    /// (in memory), written by [`Home::write_hall_files`] after it is released.
    pub fn hall_files(signed: &mut SignedHall) -> (Vec<u8>, Vec<u8>) {
        let mut signatures = Vec::with_capacity(signed.signatures.len() * HALL_SIGNATURE_ENTRY_BYTES);
        for (hash, signature) in &signed.signatures {
            signatures.extend_from_slice(hash);
            signatures.extend_from_slice(signature);
        }
        (signatures, signed.doc.automerge_mut().save())
    }

    /// Writes the bytes of [`Home::hall_files`] (atomically each, signatures first).
    pub fn write_hall_files(dir: &Path, (signatures, doc): &(Vec<u8>, Vec<u8>)) -> Result<(), HomeError> {
        write_atomic(&Home::path(dir, "hall.signatures"), signatures)?;
        write_atomic(&Home::path(dir, "hall.automerge"), doc)
    }

    /// Writes the roster file (atomically): the hall key, then each record with a length prefix.
    pub fn write_roster(dir: &Path, roster: &Roster) -> Result<(), HomeError> {
        let mut bytes = roster.hall().to_vec();
        for record in roster.records() {
            let encoded = record.to_bytes();
            bytes.extend((encoded.len() as u32).to_be_bytes());
            bytes.extend(encoded);
        }
        write_atomic(&Home::path(dir, "roster.records"), &bytes)
    }

    /// Reads the roster file of a data directory, if there is one (a running node re-reads it to pick up what the
    /// admin's CLI revoked or enrolled meanwhile).
    pub fn read_roster_file(dir: &Path) -> Result<Option<Roster>, HomeError> {
        let path = Home::path(dir, "roster.records");
        if !path.exists() {
            return Ok(None);
        }
        Ok(Some(Home::read_roster(&read_capped(&path, ROSTER_FILE_BYTES_MAX)?)?))
    }

    fn sign_and_add(&mut self, mut record: Record) -> Result<SignedRecord, HomeError> {
        let root = self.hall_root.as_ref().ok_or(HomeError::NotAdmin)?;
        let hall = root.verifying_key().to_bytes();
        match &mut record {
            Record::Enrollment(e) => e.hall = hall,
            Record::Revocation(r) => r.hall = hall,
        }
        let signed = record.sign_with(|bytes| root.sign(bytes));
        self.roster.as_mut().ok_or(HomeError::NoHall)?.insert(signed.clone())?;
        Ok(signed)
    }

    /// The hall configuration; [`HomeError::NoHall`] until this node has joined a hall (never a default hall).
    pub fn hall(&self) -> Result<Hall, HomeError> {
        match &self.hall_doc {
            Some(doc) => Ok(doc.hall()?),
            None => Err(HomeError::NoHall),
        }
    }

    /// Replaces the hall configuration with `hall` as one signed change of the hall document (admin node only): the
    /// desk accounts are kept (they are not part of an imported file). Peers take it by sync.
    pub fn import_hall(&mut self, mut hall: Hall, what: &str, now_ms: i64) -> Result<(), HomeError> {
        if !self.is_admin() || self.config.role != Role::Admin {
            return Err(HomeError::NotAdmin);
        }
        let by = self.config.display_name.clone();
        let doc = self.hall_doc.as_mut().ok_or(HomeError::NoHall)?;
        let current = doc.hall()?;
        hall.accounts = current.accounts;
        doc.update(Role::Admin, &by, now_ms, &hall, what)?;
        self.save_hall()
    }

    /// Whether this node's key is an active member of the roster it holds (`None` before it joined a hall). A node
    /// key outside the roster (a key replaced by `init` on an existing directory, a revoked node) cannot sync.
    pub fn key_in_roster(&self) -> Option<bool> {
        let key = self.identity.verifying_key().to_bytes();
        self.roster.as_ref().map(|roster| roster.active().any(|member| member.node_key == key))
    }

    pub fn roster(&self) -> Option<&Roster> {
        self.roster.as_ref()
    }

    /// The hall document's edit history as this node holds it (what sync has brought so far), oldest first.
    pub fn hall_history(&self) -> Vec<zhaowo_crdt::hall::HallEdit> {
        self.hall_doc.as_ref().map(HallDoc::history).unwrap_or_default()
    }

    pub fn is_admin(&self) -> bool {
        self.hall_root.is_some()
    }

    /// Issues an enrollment for another node (admin only) and returns the file to hand to it.
    pub fn enroll(
        &mut self,
        node_id: &str,
        window: &str,
        role: Role,
        display_name: &str,
        now_ms: i64,
    ) -> Result<EnrollmentFile, HomeError> {
        let node_key = parse_node_id(node_id)?;
        let signed = self.sign_and_add(Record::Enrollment(Enrollment {
            hall: [0; 32],
            node_key,
            window: window.to_owned(),
            role,
            display_name: display_name.to_owned(),
            issued_ms: now_ms,
        }))?;
        // The new window must exist in the hall configuration to register cases under it.
        if let Some(doc) = &mut self.hall_doc {
            let mut hall = doc.hall()?;
            if !hall.windows.contains_key(window) {
                hall.windows.insert(
                    window.to_owned(),
                    zhaowo_crdt::hall::Window { name: display_name.to_owned(), floor: String::new() },
                );
                doc.update(Role::Admin, &self.config.display_name, now_ms, &hall, &format!("新增窗口 {window}"))?;
            }
        }
        self.save_hall()?;
        let roster = self.roster.as_ref().ok_or(HomeError::NoHall)?;
        let hall_doc = self.hall_doc.as_mut().ok_or(HomeError::NoHall)?;
        Ok(EnrollmentFile {
            format: ENROLLMENT_FORMAT.to_owned(),
            hall: hex(roster.hall()),
            hall_name: hall_doc.hall()?.name,
            record: hex(&signed.to_bytes()),
            roster: roster.records().iter().map(|r| hex(&r.to_bytes())).collect(),
            hall_doc: hex(&hall_doc.automerge_mut().save()),
            peers: vec![self.config.listen],
        })
    }

    /// Installs an enrollment file on this node: the hall, its roster, the node's window and role, a first peer.
    pub fn join(&mut self, bytes: &[u8]) -> Result<Enrollment, HomeError> {
        let decoded = zhaowo_crdt::enrollment::decode(bytes).map_err(|error| match error {
            EnrollmentError::Roster(error) => HomeError::Roster(error),
            other => HomeError::Invalid(other.to_string()),
        })?;
        let (enrollment, roster) = (decoded.enrollment, decoded.roster);
        if enrollment.node_key != self.identity.verifying_key().to_bytes() {
            return Err(HomeError::Invalid(format!(
                "the enrollment is for node {}, this node is {}",
                hex(&enrollment.node_key),
                self.identity.node_id()
            )));
        }
        let actor = self.identity.new_actor()?;
        let hall_doc = HallDoc::load(&decoded.hall_doc, actor)?;
        self.config.window = enrollment.window.clone();
        self.config.role = enrollment.role;
        self.config.display_name = enrollment.display_name.clone();
        for peer in decoded.peers {
            if !self.config.peers.contains(&peer) {
                self.config.peers.push(peer);
            }
        }
        self.roster = Some(roster);
        // The hall document of the enrollment file is the trusted base (it came from the admin with the root-signed
        // roster); it replaces whatever hall this directory held before, so nothing is merged from disk.
        self.hall_doc = Some(hall_doc);
        self.hall_signatures = HallSignatures::new();
        self.save_hall_merging(false)?;
        Ok(enrollment)
    }

    /// Revokes a node (admin only).
    pub fn revoke(&mut self, node_id: &str, reason: &str, now_ms: i64) -> Result<(), HomeError> {
        let node_key = parse_node_id(node_id)?;
        if node_key == self.identity.verifying_key().to_bytes() {
            return Err(HomeError::Invalid("an admin node cannot revoke itself".into()));
        }
        self.sign_and_add(Record::Revocation(Revocation {
            hall: [0; 32],
            node_key,
            revoked_ms: now_ms,
            reason: reason.to_owned(),
        }))?;
        self.save_hall()
    }

    /// Creates or replaces a web desk account in the hall document (admin only), so the staff member can sign in at any
    /// window once the hall document has synced. The password is stored as an argon2id hash, never in clear.
    pub fn set_account(
        &mut self,
        username: &str,
        display_name: &str,
        role: Role,
        password: &str,
        now_ms: i64,
    ) -> Result<(), HomeError> {
        if !self.is_admin() {
            return Err(HomeError::NotAdmin);
        }
        crate::http::auth::check_new_account(username, display_name, role, password).map_err(HomeError::Invalid)?;
        let password_hash = crate::http::auth::hash_password(password).map_err(HomeError::Invalid)?;
        let by = self.config.display_name.clone();
        let doc = self.hall_doc.as_mut().ok_or(HomeError::NoHall)?;
        let mut hall = doc.hall()?;
        let account = zhaowo_crdt::hall::StaffAccount {
            display_name: display_name.to_owned(),
            role,
            password_hash,
            disabled: false,
        };
        let what = if hall.accounts.insert(username.to_owned(), account).is_some() { "修改" } else { "新增" };
        doc.update(Role::Admin, &by, now_ms, &hall, &format!("{what}工作人员账号 {username}"))?;
        self.save_hall()
    }

    /// Who acts on this node: its node id, the staff member, its role and window.
    pub fn author(&self, staff: &str) -> Author {
        Author {
            node: self.identity.node_id(),
            staff: staff.to_owned(),
            role: self.config.role,
            window: self.config.window.clone(),
        }
    }

    /// The context of one command: the clock, fresh entropy and the author.
    pub fn ctx(&self, staff: &str) -> Result<Ctx, HomeError> {
        Ok(Ctx { now_ms: now_ms(), entropy: entropy()?, secret: secret()?, author: self.author(staff) })
    }

    /// The node's blob store (material files, issue 16): `materials/` in the data directory.
    pub fn blobs(&self) -> Result<crate::blobs::BlobStore, HomeError> {
        let path = self.dir.join(crate::blobs::MATERIALS_DIR);
        crate::blobs::BlobStore::open(&path).map_err(io("open the material files", &path))
    }

    /// Opens the store with a fresh actor (a new incarnation every time the node starts).
    pub fn open_store(&self) -> Result<Store, HomeError> {
        let actor = self.identity.new_actor()?;
        let mut options = StoreOptions::recommended(self.config.store_path(), actor);
        options.cache_docs_max = self.config.store_cache_docs;
        options.queue_requests_max = self.config.store_queue_requests;
        options.compact_min_bytes = self.config.store_compact_min_bytes;
        options.signer = Some(self.identity.change_signer());
        options.key_role = self.config.role;
        options.key_wrap = Some(crate::store::KeyWrap::new(&self.identity.case_key_wrap()));
        Ok(Store::open(options)?)
    }
}
