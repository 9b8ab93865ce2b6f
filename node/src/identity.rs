//! The node's identity: an ed25519 key in a file only its owner can read.
//!
//! The public key is the node id. The Automerge actor of a node is its public key plus a random incarnation suffix
//! ([`NodeIdentity::new_actor`]), so a reinstalled node never reuses the sequence numbers of its previous life.
//!
//! File format (text, one line after a comment): `zhaowo-node-key-v1 <64 hex digits of the secret key>`. The file is
//! created with mode 0600 via a temporary file and a rename, so a crash never leaves a half-written key under the
//! real name; a key file readable by group or others is refused.

use automerge::ActorId;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use std::io::Write;
use std::path::{Path, PathBuf};

const KEY_FILE_TAG: &str = "zhaowo-node-key-v1";
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

    pub fn load(path: &Path) -> Result<NodeIdentity, IdentityError> {
        let io = |what| move |source| IdentityError::Io { what, path: path.to_path_buf(), source };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).map_err(io("cannot read key file"))?.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::Permissions { path: path.to_path_buf(), mode });
            }
        }
        let text = std::fs::read_to_string(path).map_err(io("cannot read key file"))?;
        let malformed = |reason: &str| IdentityError::Malformed { path: path.to_path_buf(), reason: reason.to_owned() };
        let line = text
            .lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .ok_or_else(|| malformed("no key line"))?;
        let (tag, secret) = line.split_once(' ').ok_or_else(|| malformed("expected `zhaowo-node-key-v1 <hex>`"))?;
        if tag != KEY_FILE_TAG {
            return Err(malformed(&format!("unknown key format `{tag}`")));
        }
        let secret: [u8; 32] = unhex(secret.trim())
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or_else(|| malformed("the secret must be 64 hex digits"))?;
        Ok(NodeIdentity { key: SigningKey::from_bytes(&secret) })
    }

    /// Writes the key to a new file at `path` (mode 0600); refuses to overwrite an existing file.
    pub fn save_new(&self, path: &Path) -> Result<(), IdentityError> {
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
        let text = format!(
            "# zhaowo node key (ed25519). Secret: never copy it off this machine.\n{KEY_FILE_TAG} {}\n",
            hex(&self.key.to_bytes())
        );
        file.write_all(text.as_bytes()).map_err(io("cannot write key file", &temporary))?;
        file.sync_all().map_err(io("cannot sync key file", &temporary))?;
        drop(file);
        if path.exists() {
            drop(std::fs::remove_file(&temporary));
            return Err(IdentityError::Io {
                what: "refusing to overwrite key file",
                path: path.to_path_buf(),
                source: std::io::Error::from(std::io::ErrorKind::AlreadyExists),
            });
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
}

/// The X25519 public key of an enrolled node (its Ed25519 key in Montgomery form), for encrypting bundles to it;
/// `None` for bytes that are not an Ed25519 public key.
pub fn x25519_public(node_key: &[u8; 32]) -> Option<[u8; 32]> {
    VerifyingKey::from_bytes(node_key).ok().map(|key| key.to_montgomery().to_bytes())
}
