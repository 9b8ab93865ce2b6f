//! The node's identity: an ed25519 key in a file only its owner can read.
//!
//! The public key is the node id. The Automerge actor of a node is its public key plus a random incarnation suffix
//! ([`NodeIdentity::new_actor`]), so a reinstalled node never reuses the sequence numbers of its previous life.
//!
//! File format (text, one line after a comment): `zhaowo-node-key-v1 <64 hex digits of the secret key>`. The file is
//! created with mode 0600 via a temporary file and a rename, so a crash never leaves a half-written key under the
//! real name; a key file readable by group or others is refused.
//!
//! A key file may be protected by a passphrase (issue 13 §6): `zhaowo-node-key-v1-passphrase <argon2id parameters as
//! a PHC string, without a hash>` followed by an ASCII-armored age file holding the 32 secret bytes, encrypted to the
//! age X25519 identity that argon2id derives from the passphrase and the salt. Both layers are standard formats (the
//! PHC string of the argon2 reference, age); nothing of our own is in the encryption. See ARCHITECTURE.md *Personal
//! data* for why argon2id feeds an age identity rather than age's own scrypt passphrase stanza.

use automerge::ActorId;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::io::Write;
use std::path::{Path, PathBuf};

const KEY_FILE_TAG: &str = "zhaowo-node-key-v1";
const PROTECTED_TAG: &str = "zhaowo-node-key-v1-passphrase";
/// A passphrase shorter than this is refused: 12 characters, as for the hall's other long-lived secrets, since an
/// offline guesser of a stolen laptop's key file is slowed only by argon2id.
pub const PASSPHRASE_CHARS_MIN: usize = 12;
/// Longer passphrases are refused: argon2 hashes any length, a bound keeps a pasted file from being taken as one.
pub const PASSPHRASE_BYTES_MAX: usize = 1024;
/// argon2id memory (KiB), iterations and lanes for new key files: RFC 9106 §4's second recommended option (64 MiB,
/// t = 3, p = 4). About half a second on these machines, paid once per node start or CLI command.
pub const KDF_MEMORY_KIB: u32 = 64 * 1024;
pub const KDF_ITERATIONS: u32 = 3;
pub const KDF_LANES: u32 = 4;
/// Upper bounds on the parameters a key file may ask for (1 GiB, 16 passes, 16 lanes): a damaged file cannot make
/// the node allocate without limit.
pub const KDF_MEMORY_KIB_MAX: u32 = 1024 * 1024;
pub const KDF_ITERATIONS_MAX: u32 = 16;
pub const KDF_LANES_MAX: u32 = 16;
/// Bytes of argon2 salt (the PHC recommendation).
const KDF_SALT_BYTES: usize = 16;
/// Random bytes after the public key in an actor id: 128 bits make a repeated incarnation practically impossible.
pub const INCARNATION_BYTES: usize = 16;

/// Why the key file could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// Reading, writing or syncing the key file failed.
    #[error("{what} `{path}`")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// The key file is readable or writable by group or others.
    #[error("key file `{path}` has mode {mode:o}; it must be private to its owner (chmod 600)")]
    Permissions { path: PathBuf, mode: u32 },
    /// The key file does not hold a zhaowo key.
    #[error("key file `{path}` is malformed: {reason}")]
    Malformed { path: PathBuf, reason: String },
    /// The operating system gave no randomness.
    #[error("no randomness available from the operating system: {0}")]
    Random(String),
    /// The key file is protected by a passphrase and none was given.
    #[error("key file `{path}` is protected by a passphrase and none was given")]
    Locked { path: PathBuf },
    /// The passphrase given does not open the key file.
    #[error("the passphrase does not open key file `{path}`")]
    WrongPassphrase { path: PathBuf },
    /// A new passphrase is too short or too long.
    #[error("{0}")]
    WeakPassphrase(String),
}

/// A passphrase protecting key files: wiped from memory when dropped, never printed.
pub struct Passphrase(zeroize::Zeroizing<String>);

impl std::fmt::Debug for Passphrase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Passphrase([redacted])")
    }
}

impl Passphrase {
    /// A passphrase to open an existing key file (any length up to [`PASSPHRASE_BYTES_MAX`]).
    pub fn given(text: String) -> Result<Passphrase, IdentityError> {
        let text = zeroize::Zeroizing::new(text);
        if text.len() > PASSPHRASE_BYTES_MAX {
            return Err(IdentityError::WeakPassphrase(format!(
                "the passphrase is longer than {PASSPHRASE_BYTES_MAX} bytes"
            )));
        }
        Ok(Passphrase(text))
    }

    /// A passphrase to protect a key file with: at least [`PASSPHRASE_CHARS_MIN`] characters.
    pub fn new(text: String) -> Result<Passphrase, IdentityError> {
        let passphrase = Passphrase::given(text)?;
        if passphrase.0.chars().count() < PASSPHRASE_CHARS_MIN {
            return Err(IdentityError::WeakPassphrase(format!(
                "a passphrase needs at least {PASSPHRASE_CHARS_MIN} characters"
            )));
        }
        Ok(passphrase)
    }
}

/// The argon2id parameters and salt of a protected key file, written as a PHC string without a hash
/// (`$argon2id$v=19$m=65536,t=3,p=4$<salt, base64 without padding>`).
struct Kdf {
    memory_kib: u32,
    iterations: u32,
    lanes: u32,
    salt: Vec<u8>,
}

impl Kdf {
    fn fresh() -> Result<Kdf, IdentityError> {
        Ok(Kdf {
            memory_kib: KDF_MEMORY_KIB,
            iterations: KDF_ITERATIONS,
            lanes: KDF_LANES,
            salt: random_bytes::<KDF_SALT_BYTES>()?.to_vec(),
        })
    }

    fn phc(&self) -> String {
        use base64::Engine;
        let salt = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&self.salt);
        format!("$argon2id$v=19$m={},t={},p={}${salt}", self.memory_kib, self.iterations, self.lanes)
    }

    /// Parses exactly the shape [`Kdf::phc`] writes, within the `KDF_*_MAX` bounds.
    fn parse(text: &str) -> Result<Kdf, String> {
        use base64::Engine;
        let parts: Vec<&str> = text.split('$').collect();
        let ["", "argon2id", "v=19", params, salt] = parts.as_slice() else {
            return Err("expected `$argon2id$v=19$m=…,t=…,p=…$<salt>`".to_owned());
        };
        let mut values = [None; 3];
        for pair in params.split(',') {
            let (name, value) = pair.split_once('=').ok_or("malformed argon2id parameters")?;
            let slot = ["m", "t", "p"].iter().position(|known| *known == name).ok_or("unknown argon2id parameter")?;
            let value: u32 = value.parse().map_err(|_| "argon2id parameters must be numbers")?;
            if values[slot].replace(value).is_some() {
                return Err("repeated argon2id parameter".to_owned());
            }
        }
        let [Some(memory_kib), Some(iterations), Some(lanes)] = values else {
            return Err("argon2id parameters m, t and p are all needed".to_owned());
        };
        if memory_kib > KDF_MEMORY_KIB_MAX || iterations > KDF_ITERATIONS_MAX || lanes > KDF_LANES_MAX {
            return Err(format!(
                "argon2id parameters above the limits (m ≤ {KDF_MEMORY_KIB_MAX}, t ≤ {KDF_ITERATIONS_MAX}, p ≤ \
                 {KDF_LANES_MAX})"
            ));
        }
        let salt = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(salt)
            .map_err(|_| "the argon2id salt is not base64".to_owned())?;
        Ok(Kdf { memory_kib, iterations, lanes, salt })
    }

    /// The age X25519 identity the passphrase opens.
    fn identity(&self, passphrase: &Passphrase) -> Result<age::x25519::Identity, String> {
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.lanes, Some(32))
            .map_err(|error| format!("argon2id parameters: {error}"))?;
        let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
        let mut derived = zeroize::Zeroizing::new([0u8; 32]);
        argon
            .hash_password_into(passphrase.0.as_bytes(), &self.salt, derived.as_mut())
            .map_err(|error| format!("argon2id: {error}"))?;
        age_identity(&derived).ok_or_else(|| "cannot form an age identity".to_owned())
    }
}

/// The age identity of a raw X25519 secret (age's own textual form, parsed by age).
pub(crate) fn age_identity(secret: &[u8; 32]) -> Option<age::x25519::Identity> {
    use bech32::ToBase32;
    let encoded = zeroize::Zeroizing::new(
        bech32::encode("age-secret-key-", secret.to_base32(), bech32::Variant::Bech32).ok()?.to_uppercase(),
    );
    encoded.parse().ok()
}

/// The node's signing key.
pub struct NodeIdentity {
    key: SigningKey,
}

impl std::fmt::Debug for NodeIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the secret.
        f.debug_struct("NodeIdentity").field("node_id", &self.node_id()).finish()
    }
}

fn random_bytes<const N: usize>() -> Result<[u8; N], IdentityError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|error| IdentityError::Random(error.to_string()))?;
    Ok(bytes)
}

use zhaowo_crdt::ids::{hex_decode as unhex, hex_encode as hex};

impl NodeIdentity {
    /// A fresh random key (not saved).
    pub fn generate() -> Result<NodeIdentity, IdentityError> {
        Ok(NodeIdentity { key: SigningKey::from_bytes(&random_bytes::<32>()?) })
    }

    /// Loads the key at `path`, creating it (mode 0600) when the file does not exist.
    pub fn load_or_create(path: &Path) -> Result<NodeIdentity, IdentityError> {
        match std::fs::metadata(path) {
            Ok(_) => NodeIdentity::load(path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                let identity = NodeIdentity::generate()?;
                identity.save_new(path)?;
                Ok(identity)
            }
            Err(source) => Err(IdentityError::Io { what: "cannot read key file", path: path.to_path_buf(), source }),
        }
    }

    /// Loads an unprotected key file (a protected one is [`IdentityError::Locked`]).
    pub fn load(path: &Path) -> Result<NodeIdentity, IdentityError> {
        NodeIdentity::load_with(path, None)
    }

    /// Whether the key file at `path` is protected by a passphrase.
    pub fn is_protected(path: &Path) -> Result<bool, IdentityError> {
        let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Io {
            what: "cannot read key file",
            path: path.to_path_buf(),
            source,
        })?;
        Ok(text.lines().map(str::trim).any(|line| line.starts_with(PROTECTED_TAG)))
    }

    /// Loads the key at `path`, opening it with `passphrase` when the file is protected (a passphrase given for an
    /// unprotected file is not needed and not checked).
    pub fn load_with(path: &Path, passphrase: Option<&Passphrase>) -> Result<NodeIdentity, IdentityError> {
        let io = |what| move |source| IdentityError::Io { what, path: path.to_path_buf(), source };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io("cannot read key file"))?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::Permissions { path: path.to_path_buf(), mode });
            }
        }
        let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(io("cannot read key file"))?);
        let malformed = |reason: &str| IdentityError::Malformed { path: path.to_path_buf(), reason: reason.to_owned() };
        let mut lines = text.lines().map(str::trim).skip_while(|line| line.is_empty() || line.starts_with('#'));
        let line = lines.next().ok_or_else(|| malformed("no key line"))?;
        let (tag, rest) = line.split_once(' ').ok_or_else(|| malformed("expected `zhaowo-node-key-v1 <hex>`"))?;
        let secret: zeroize::Zeroizing<[u8; 32]> = match tag {
            KEY_FILE_TAG => zeroize::Zeroizing::new(
                unhex(rest.trim())
                    .and_then(|bytes| bytes.try_into().ok())
                    .ok_or_else(|| malformed("the secret must be 64 hex digits"))?,
            ),
            PROTECTED_TAG => {
                let kdf = Kdf::parse(rest.trim()).map_err(|reason| malformed(&reason))?;
                let passphrase = passphrase.ok_or_else(|| IdentityError::Locked { path: path.to_path_buf() })?;
                let identity = kdf.identity(passphrase).map_err(|reason| malformed(&reason))?;
                let armored: String = lines.map(|line| format!("{line}\n")).collect();
                open_protected(armored.as_bytes(), &identity).map_err(|error| match error {
                    None => IdentityError::WrongPassphrase { path: path.to_path_buf() },
                    Some(reason) => malformed(&reason),
                })?
            }
            _ => return Err(malformed(&format!("unknown key format `{tag}`"))),
        };
        Ok(NodeIdentity { key: SigningKey::from_bytes(&secret) })
    }

    /// Writes the key to a new file at `path` (mode 0600); refuses to overwrite an existing file.
    pub fn save_new(&self, path: &Path) -> Result<(), IdentityError> {
        self.write_file(path, None, false)
    }

    /// [`NodeIdentity::save_new`], protected by `passphrase` when one is given.
    pub fn save_new_with(&self, path: &Path, passphrase: Option<&Passphrase>) -> Result<(), IdentityError> {
        self.write_file(path, passphrase, false)
    }

    /// Rewrites the existing key file at `path` with or without a passphrase (`zhaowo key passphrase`): the new file
    /// replaces the old one by a rename, so a crash leaves one or the other.
    pub fn rewrite(&self, path: &Path, passphrase: Option<&Passphrase>) -> Result<(), IdentityError> {
        self.write_file(path, passphrase, true)
    }

    /// The file's text: the secret in hex, or the armored age file the passphrase opens.
    fn file_text(
        &self,
        path: &Path,
        passphrase: Option<&Passphrase>,
    ) -> Result<zeroize::Zeroizing<String>, IdentityError> {
        let Some(passphrase) = passphrase else {
            return Ok(zeroize::Zeroizing::new(format!(
                "# zhaowo node key (ed25519). Secret: never copy it off this machine.\n{KEY_FILE_TAG} {}\n",
                hex(&self.key.to_bytes())
            )));
        };
        let kdf = Kdf::fresh()?;
        let failed = |reason: String| IdentityError::Malformed { path: path.to_path_buf(), reason };
        let recipient = kdf.identity(passphrase).map_err(failed)?.to_public();
        let encrypt = || -> std::io::Result<Vec<u8>> {
            let encryptor = age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .map_err(std::io::Error::other)?;
            let mut out = Vec::new();
            let armor = age::armor::ArmoredWriter::wrap_output(&mut out, age::armor::Format::AsciiArmor)?;
            let mut writer = encryptor.wrap_output(armor)?;
            writer.write_all(self.key.as_bytes())?;
            writer.finish()?.finish()?;
            Ok(out)
        };
        let armored = encrypt().map_err(|error| failed(format!("cannot encrypt the key: {error}")))?;
        Ok(zeroize::Zeroizing::new(format!(
            "# zhaowo node key (ed25519), protected by a passphrase (argon2id, then age). Secret: never copy it off \
             this machine.\n{PROTECTED_TAG} {}\n{}",
            kdf.phc(),
            String::from_utf8_lossy(&armored)
        )))
    }

    fn write_file(&self, path: &Path, passphrase: Option<&Passphrase>, replace: bool) -> Result<(), IdentityError> {
        let text = self.file_text(path, passphrase)?;
        let io = |what, at: &Path| {
            let at = at.to_path_buf();
            move |source| IdentityError::Io { what, path: at, source }
        };
        let mut temporary = path.as_os_str().to_owned();
        temporary.push(".tmp");
        let temporary = PathBuf::from(temporary);
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&temporary).map_err(io("cannot create key file", &temporary))?;
        file.write_all(text.as_bytes()).map_err(io("cannot write key file", &temporary))?;
        file.sync_all().map_err(io("cannot sync key file", &temporary))?;
        drop(file);
        if path.exists() != replace {
            drop(std::fs::remove_file(&temporary));
            let (what, kind) = match replace {
                false => ("refusing to overwrite key file", std::io::ErrorKind::AlreadyExists),
                true => ("no key file to rewrite", std::io::ErrorKind::NotFound),
            };
            return Err(IdentityError::Io { what, path: path.to_path_buf(), source: std::io::Error::from(kind) });
        }
        std::fs::rename(&temporary, path).map_err(io("cannot move key file into place", path))?;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|dir| dir.sync_all()).map_err(io("cannot sync directory", dir))?;
        }
        Ok(())
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    /// The node's X25519 secret for age-encrypted bundles: the Ed25519 key's own scalar (RFC 7748 clamps it), so the
    /// public half is the enrolled key in Montgomery form ([`x25519_public`]) and the root's enrollment signature covers
    /// it. See ARCHITECTURE.md *Personal data* for why one key pair serves both.
    pub fn x25519_secret(&self) -> [u8; 32] {
        self.key.to_scalar_bytes()
    }

    /// The key that wraps this node's case keys in its store (`case_keys`, issue 13 §6): SHA-256 over a label and the
    /// node's secret key, so a copy of `cases.db` without `node.key` (a backup, a stolen file) opens no case, and a
    /// passphrase on `node.key` protects the case keys too. The secret is 32 uniformly random bytes, so one hash with a
    /// domain label is a sound key derivation.
    pub fn case_key_wrap(&self) -> zeroize::Zeroizing<[u8; 32]> {
        use sha2::Digest;
        let mut hasher = sha2::Sha256::new();
        hasher.update(b"zhaowo case-key wrap v1\0");
        hasher.update(self.key.as_bytes());
        zeroize::Zeroizing::new(hasher.finalize().into())
    }

    /// The node id: the public key in hex.
    pub fn node_id(&self) -> String {
        hex(self.verifying_key().as_bytes())
    }

    /// A new actor id for this node: its public key plus a random incarnation suffix.
    pub fn new_actor(&self) -> Result<ActorId, IdentityError> {
        let mut bytes = self.verifying_key().as_bytes().to_vec();
        bytes.extend_from_slice(&random_bytes::<INCARNATION_BYTES>()?);
        Ok(ActorId::from(bytes))
    }

    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }

    /// Signs the changes this node authors (the store stores the signature with each change; sync relays it).
    pub fn change_signer(&self) -> crate::store::ChangeSigner {
        let key = std::sync::Arc::new(self.key.clone());
        crate::store::ChangeSigner {
            node_key: self.verifying_key().to_bytes(),
            sign: std::sync::Arc::new(move |hash| zhaowo_crdt::signing::sign_change(&key, hash)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_is_created_private_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let created = NodeIdentity::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
        let loaded = NodeIdentity::load_or_create(&path).unwrap();
        assert_eq!(created.node_id(), loaded.node_id());
        assert_eq!(created.sign(b"case"), loaded.sign(b"case"));
        let actor = loaded.new_actor().unwrap();
        assert_eq!(actor.to_bytes().len(), 32 + INCARNATION_BYTES);
        assert_ne!(actor, loaded.new_actor().unwrap(), "every incarnation is new");
        assert!(!format!("{loaded:?}").contains(&hex(&loaded.key.to_bytes())), "Debug never prints the secret");
        assert!(created.save_new(&path).is_err(), "never overwrites a key");
    }

    #[test]
    fn bad_key_files_are_refused_with_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        NodeIdentity::load_or_create(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
            let error = NodeIdentity::load(&path).unwrap_err();
            assert!(error.to_string().contains("chmod 600"), "{error}");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::fs::write(&path, "zhaowo-node-key-v1 abcd\n").unwrap();
        let error = NodeIdentity::load(&path).unwrap_err();
        assert!(error.to_string().contains("64 hex digits"), "{error}");
        std::fs::write(&path, "ssh-ed25519 AAAA\n").unwrap();
        let error = NodeIdentity::load(&path).unwrap_err();
        assert!(error.to_string().contains("unknown key format"), "{error}");
    }

    /// Issue 13 §6: a key file protected by a passphrase holds no readable secret, opens only with its passphrase, and
    /// refuses a flipped byte, a weak passphrase and another protected file's body (a replayed envelope).
    #[test]
    fn a_passphrase_protects_a_key_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("node.key");
        let identity = NodeIdentity::generate().unwrap();
        let passphrase = Passphrase::new("江岸区办不成事窗口2026".to_owned()).unwrap();
        assert!(Passphrase::new("short".to_owned()).unwrap_err().to_string().contains("at least 12"));
        assert!(Passphrase::given("x".repeat(PASSPHRASE_BYTES_MAX + 1)).is_err());
        assert_eq!(format!("{passphrase:?}"), "Passphrase([redacted])");
        let started = std::time::Instant::now();
        identity.save_new_with(&path, Some(&passphrase)).unwrap();
        let kdf_ms = started.elapsed().as_millis();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&hex(&identity.key.to_bytes())), "the secret is in clear");
        assert!(
            text.contains("$argon2id$v=19$m=65536,t=3,p=4$") && text.contains("BEGIN AGE ENCRYPTED FILE"),
            "{text}"
        );
        assert!(NodeIdentity::is_protected(&path).unwrap());
        assert!(matches!(NodeIdentity::load(&path), Err(IdentityError::Locked { .. })));
        let wrong = Passphrase::given("江岸区办不成事窗口2025".to_owned()).unwrap();
        assert!(matches!(NodeIdentity::load_with(&path, Some(&wrong)), Err(IdentityError::WrongPassphrase { .. })));
        let loaded = NodeIdentity::load_with(&path, Some(&passphrase)).unwrap();
        assert_eq!(loaded.node_id(), identity.node_id());
        assert_eq!(*loaded.case_key_wrap(), *identity.case_key_wrap());
        // A flipped byte in the armored body, and in the salt.
        let flip = |from: &str, to: &str| {
            std::fs::write(&path, text.replacen(from, to, 1)).unwrap();
            NodeIdentity::load_with(&path, Some(&passphrase)).map(|_| ())
        };
        let body_line = text.lines().nth(3).unwrap();
        let mut flipped = body_line.to_owned().into_bytes();
        flipped[10] = if flipped[10] == b'A' { b'B' } else { b'A' };
        assert!(flip(body_line, std::str::from_utf8(&flipped).unwrap()).is_err(), "a flipped byte was accepted");
        assert!(flip("m=65536,t=3,p=4$", "m=65536,t=3,p=4$AAAA").is_err(), "another salt was accepted");
        assert!(flip("m=65536", "m=4194304").unwrap_err().to_string().contains("limits"));
        // Another key's protected body under this file's header (same passphrase, its own salt): refused.
        let other = dir.path().join("other.key");
        NodeIdentity::generate().unwrap().save_new_with(&other, Some(&passphrase)).unwrap();
        let other_text = std::fs::read_to_string(&other).unwrap();
        let header: Vec<&str> = text.lines().take(2).collect();
        let body: Vec<&str> = other_text.lines().skip(2).collect();
        std::fs::write(&path, format!("{}\n{}\n", header.join("\n"), body.join("\n"))).unwrap();
        assert!(NodeIdentity::load_with(&path, Some(&passphrase)).is_err(), "a replayed body was accepted");
        // Rewriting removes the passphrase again; a rewrite needs an existing file.
        std::fs::write(&path, &text).unwrap();
        loaded.rewrite(&path, None).unwrap();
        assert!(!NodeIdentity::is_protected(&path).unwrap());
        assert_eq!(NodeIdentity::load(&path).unwrap().node_id(), identity.node_id());
        assert!(loaded.rewrite(&dir.path().join("missing.key"), None).is_err());
        println!(
            "protected key file: argon2id m=64MiB t=3 p=4 took {kdf_ms} ms to write; refused: wrong passphrase, flipped byte, other salt, parameters over the limit, replayed body"
        );
    }
}

/// Decrypts the armored age file of a protected key: `Err(None)` when the identity is not its recipient (a wrong
/// passphrase), `Err(Some(reason))` for a damaged file.
fn open_protected(
    armored: &[u8],
    identity: &age::x25519::Identity,
) -> Result<zeroize::Zeroizing<[u8; 32]>, Option<String>> {
    use std::io::Read;
    let decryptor = age::Decryptor::new_buffered(age::armor::ArmoredReader::new(armored))
        .map_err(|error| Some(format!("the protected key is damaged: {error}")))?;
    let reader = decryptor.decrypt(std::iter::once(identity as &dyn age::Identity)).map_err(|error| match error {
        age::DecryptError::NoMatchingKeys => None,
        other => Some(format!("the protected key is damaged: {other}")),
    })?;
    let mut secret = zeroize::Zeroizing::new(Vec::with_capacity(33));
    reader.take(33).read_to_end(&mut secret).map_err(|error| Some(format!("the protected key is damaged: {error}")))?;
    let secret: [u8; 32] =
        secret.as_slice().try_into().map_err(|_| Some("the protected key is not 32 bytes".to_owned()))?;
    Ok(zeroize::Zeroizing::new(secret))
}

/// The X25519 public key of an enrolled node (its Ed25519 key in Montgomery form), for encrypting bundles to it;
/// `None` for bytes that are not an Ed25519 public key.
pub fn x25519_public(node_key: &[u8; 32]) -> Option<[u8; 32]> {
    VerifyingKey::from_bytes(node_key).ok().map(|key| key.to_montgomery().to_bytes())
}
