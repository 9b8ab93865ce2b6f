//! Cases that arrive other than by sync, verified and merged in one place (issue 12 §3): a bundle file of signed
//! changes ([`bundle`]), another node's store file ([`store_file`]), a plain Automerge document ([`automerge_doc`]).
//! The CLI only reads arguments and prints the [`ImportReport`].
//!
//! Trust is the same as sync's: with a roster, every change must carry a member's signature (a forged or unsigned
//! change refuses the whole import before anything is stored; a revoked member's late change skips that case, as
//! sync skips it). A plain Automerge file carries no signatures: its new changes are stored unsigned and stay on this
//! node (peers refuse unsigned changes).
//!
//! A bundle file is encrypted (issue 13 §4): the `age` format (the `age` crate, X25519 recipients), to every hall PC
//! of the roster (window, 督查科, admin), each recipient's X25519 key being its enrolled Ed25519 key in Montgomery form
//! (`identity::x25519_public`). Inside is the signed bundle of `zhaowo_crdt::bundle`, with the case keys the exporter
//! holds. A laptop, a lost USB stick's finder or another hall reads nothing; a node that is not a recipient gets
//! [`ImportError::NotARecipient`].

use crate::store::{ApplyRemoteError, CATALOG_PAGE_MAX, ReadError, RemoteChanges, Store, StoreOptions};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use zhaowo_crdt::CaseDoc;
use zhaowo_crdt::bundle::{self, BUNDLE_BYTES_MAX, Bundle, BundleDoc, BundleError};
use zhaowo_crdt::roster::Roster;
use zhaowo_crdt::wire::ChangeSignature;

/// A document file is at most this large: a case with the maximum events saves to a few hundred KB.
pub const DOC_FILE_BYTES_MAX: u64 = 16 * 1024 * 1024;

/// What an import brought: cases new to this node, cases that gained changes, conflicts that appeared.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    /// Registration numbers of cases new to this node.
    pub added: Vec<String>,
    /// Registration numbers of cases that gained changes.
    pub changed: Vec<String>,
    /// Cases that were already as imported.
    pub unchanged: usize,
    /// Conflicts that appeared: (registration number, conflict id).
    pub new_conflicts: Vec<(String, String)>,
    /// Cases skipped because a revoked member changed them after its revocation (case id, why).
    pub refused: Vec<(String, String)>,
    /// Case keys the bundle carried that this node took (it may hold them and lacked them).
    pub keys_taken: usize,
    /// Changes stored without a member's signature (a plain Automerge file): kept on this node, never relayed.
    pub unsigned: usize,
    /// Material files the bundle carried that this node stored (a case it may read names them), and their bytes.
    pub materials_taken: usize,
    pub material_bytes: u64,
    /// Material files left out: no case here names them, or this node may not read the case (a laptop).
    pub materials_skipped: usize,
}

/// One case's changes to merge, with the signatures that came with them.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub case_id: String,
    pub changes: Vec<Vec<u8>>,
    pub signatures: Vec<ChangeSignature>,
}

/// Why an import stored nothing (or stopped at a case).
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file cannot be read.
    #[error("failed to read `{}`", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is over its limit; nothing was read.
    #[error("`{}` is {size} bytes, over the limit of {max}", .path.display())]
    TooLarge { path: PathBuf, size: u64, max: u64 },
    /// The file is not a bundle, or a damaged one.
    #[error("`{}`: {source}; nothing was stored", .path.display())]
    NotABundle {
        path: PathBuf,
        #[source]
        source: BundleError,
    },
    /// This node is not among the bundle's recipients (bundles are encrypted to the hall's PCs).
    #[error(
        "`{}` is not encrypted to this node: bundles are readable only by the hall's PCs (window, 督查科, admin) enrolled when it was exported; nothing was stored",
        .path.display()
    )]
    NotARecipient { path: PathBuf },
    /// The bundle was made in another hall.
    #[error("`{}` belongs to another hall; nothing was stored", .path.display())]
    OtherHall { path: PathBuf },
    /// A change is forged, unsigned or not a member's.
    #[error("refused, nothing was stored: {0} (every change must be signed by a member)")]
    Unverified(#[source] BundleError),
    /// The store refused one case's changes.
    #[error("case {case_id} was refused: {reason}")]
    CaseRefused { case_id: String, reason: String },
    /// The path is neither a data directory nor a database file.
    #[error("`{}` is neither a node's data directory nor a database file", .path.display())]
    NoStore { path: PathBuf },
    /// The path is this node's own store.
    #[error("that is this node's own store")]
    OwnStore,
    /// The database file is not a zhaowo store.
    #[error("`{}` is not a zhaowo store: {reason}", .path.display())]
    NotAStore { path: PathBuf, reason: String },
    /// The file is not an Automerge document (or Automerge panicked on it).
    #[error("`{}` is not a readable Automerge document", .path.display())]
    NotAutomerge { path: PathBuf },
    /// The document is not a case.
    #[error("`{}` is not a case document: {reason}", .path.display())]
    NotACase { path: PathBuf, reason: String },
    /// Reading this node's store (or the other one) failed.
    #[error("failed to read the store")]
    StoreRead(#[source] ReadError),
    /// Storing the case keys a bundle carried failed (its changes were stored).
    #[error("failed to store the case keys of the bundle")]
    StoreKeys(#[source] crate::store::WriteError),
    /// Writing a material file failed (the cases and keys were stored; importing again completes it).
    #[error("failed to store a material file: {0}")]
    Materials(String),
    /// Storing one case's changes failed.
    #[error("failed to store the changes of {case_id}")]
    StoreWrite {
        case_id: String,
        #[source]
        source: ApplyRemoteError,
    },
}

impl ImportError {
    /// Whether this is refused input (the CLI's exit 1) rather than an unreadable file or a failing store (exit 2).
    pub fn is_refusal(&self) -> bool {
        !matches!(
            self,
            ImportError::Read { .. }
                | ImportError::NotABundle { .. }
                | ImportError::StoreRead(_)
                | ImportError::StoreKeys(_)
                | ImportError::Materials(_)
                | ImportError::StoreWrite { .. }
        )
    }
}

fn read(path: &Path) -> impl FnOnce(std::io::Error) -> ImportError + '_ {
    move |source| ImportError::Read { path: path.to_path_buf(), source }
}

fn read_capped(path: &Path, max: u64) -> Result<Vec<u8>, ImportError> {
    let size = std::fs::metadata(path).map_err(read(path))?.len();
    if size > max {
        return Err(ImportError::TooLarge { path: path.to_path_buf(), size, max });
    }
    std::fs::read(path).map_err(read(path))
}

/// The first line of every age file, hence of every bundle file.
pub const AGE_HEADER: &[u8] = b"age-encryption.org/v1\n";

/// The hall PCs a bundle is encrypted to: the active enrollments of the window, 督查科 and admin roles.
pub fn bundle_recipients(roster: &Roster) -> Vec<[u8; 32]> {
    roster
        .active()
        .filter(|enrollment| enrollment.role.is_staff())
        .filter_map(|enrollment| crate::identity::x25519_public(&enrollment.node_key))
        .collect()
}

fn age_recipient(public: &[u8; 32]) -> Option<age::x25519::Recipient> {
    use bech32::ToBase32;
    bech32::encode("age", public.to_base32(), bech32::Variant::Bech32).ok()?.parse().ok()
}

/// Encrypts a bundle's bytes to `recipients` (X25519 public keys, see [`bundle_recipients`]) in the age format.
pub fn encrypt_bundle(inner: &[u8], recipients: &[[u8; 32]]) -> Result<Vec<u8>, String> {
    use std::io::Write;
    let recipients: Vec<age::x25519::Recipient> = recipients.iter().filter_map(age_recipient).collect();
    if recipients.is_empty() {
        return Err("the roster holds no hall PC to encrypt the bundle to".to_owned());
    }
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
        .map_err(|error| error.to_string())?;
    let mut out = Vec::with_capacity(inner.len() + 1024);
    let mut writer = encryptor.wrap_output(&mut out).map_err(|error| error.to_string())?;
    writer.write_all(inner).map_err(|error| error.to_string())?;
    writer.finish().map_err(|error| error.to_string())?;
    Ok(out)
}

/// Why an encrypted bundle could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenBundleError {
    /// No recipient stanza is this node's.
    NotARecipient,
    /// Not an age file, or a damaged one.
    Damaged(String),
}

/// Decrypts a bundle file with this node's X25519 secret; the plaintext is capped at [`BUNDLE_BYTES_MAX`].
pub fn decrypt_bundle(bytes: &[u8], x25519_secret: &[u8; 32]) -> Result<Vec<u8>, OpenBundleError> {
    use std::io::Read;
    let identity = crate::identity::age_identity(x25519_secret)
        .ok_or_else(|| OpenBundleError::Damaged("bad node key".to_owned()))?;
    let decryptor = age::Decryptor::new_buffered(bytes).map_err(|error| OpenBundleError::Damaged(error.to_string()))?;
    let reader = decryptor.decrypt(std::iter::once(&identity as &dyn age::Identity)).map_err(|error| match error {
        age::DecryptError::NoMatchingKeys => OpenBundleError::NotARecipient,
        other => OpenBundleError::Damaged(other.to_string()),
    })?;
    let mut inner = Vec::new();
    reader
        .take(BUNDLE_BYTES_MAX as u64 + 1)
        .read_to_end(&mut inner)
        .map_err(|error| OpenBundleError::Damaged(error.to_string()))?;
    Ok(inner)
}

/// Reads, decrypts and decodes a bundle file (at most [`BUNDLE_BYTES_MAX`]); verifies nothing yet.
pub fn read_bundle(path: &Path, identity: &crate::identity::NodeIdentity) -> Result<Bundle, ImportError> {
    let bytes = read_capped(path, BUNDLE_BYTES_MAX as u64 + 64 * 1024)?;
    let not_a_bundle = |source| ImportError::NotABundle { path: path.to_path_buf(), source };
    if !bytes.starts_with(AGE_HEADER) {
        // A plaintext bundle (older zhaowo) or not a bundle at all: either way nothing to read here.
        return Err(not_a_bundle(BundleError::NotABundle));
    }
    let inner = match decrypt_bundle(&bytes, &identity.x25519_secret()) {
        Ok(inner) => inner,
        Err(OpenBundleError::NotARecipient) => return Err(ImportError::NotARecipient { path: path.to_path_buf() }),
        Err(OpenBundleError::Damaged(reason)) => return Err(not_a_bundle(BundleError::Damaged(reason))),
    };
    bundle::decode(&inner).map_err(not_a_bundle)
}

/// Merges a decoded bundle: it must be of this roster's hall, and every change signed by a member. Its material files
/// (each already checked against its name by `bundle::decode`) are stored after the documents and keys, only those a
/// case this node may read names, with the size the case names.
pub async fn bundle(
    store: &Store,
    blobs: &crate::blobs::BlobStore,
    roster: &Roster,
    path: &Path,
    bundle: Bundle,
) -> Result<ImportReport, ImportError> {
    if bundle.hall != *roster.hall() {
        return Err(ImportError::OtherHall { path: path.to_path_buf() });
    }
    let materials = bundle.materials;
    let keys = bundle.keys;
    let cases = bundle
        .docs
        .into_iter()
        .map(|doc| Incoming { case_id: doc.doc_id, changes: doc.changes, signatures: doc.signatures })
        .collect();
    let mut report = merge(store, Some(roster), cases).await?;
    // After the documents: a key is taken only for a case stored here that it opens and this node may read.
    report.keys_taken = store.receive_keys(keys).await.map_err(ImportError::StoreKeys)?;
    for material in materials {
        let named = store.blob_ref(&material.hash).await.map_err(ImportError::StoreRead)?;
        match named {
            Some(named) if named.keyed && named.bytes == material.bytes.len() as u64 => {
                if !blobs.has(&material.hash) {
                    blobs.put(&material.bytes).map_err(|error| ImportError::Materials(error.to_string()))?;
                    report.materials_taken += 1;
                    report.material_bytes += material.bytes.len() as u64;
                }
            }
            _ => report.materials_skipped += 1,
        }
    }
    Ok(report)
}

/// Merges every case of another node's store file (or data directory), read-only on the other side: a copy of the
/// file and its write-ahead log is opened, never the original. `own_store` is this node's database file.
pub async fn store_file(
    store: &Store,
    own_store: &Path,
    roster: &Roster,
    path: &Path,
    scratch: &Path,
) -> Result<ImportReport, ImportError> {
    let source = if path.is_dir() { path.join("cases.db") } else { path.to_path_buf() };
    if !source.is_file() {
        return Err(ImportError::NoStore { path: path.to_path_buf() });
    }
    if std::fs::canonicalize(&source).ok() == std::fs::canonicalize(own_store).ok() {
        return Err(ImportError::OwnStore);
    }
    std::fs::create_dir_all(scratch).map_err(read(scratch))?;
    let copy = scratch.join("cases.db");
    let cases = async {
        std::fs::copy(&source, &copy).map_err(read(&source))?;
        let wal = source.with_extension("db-wal");
        if wal.is_file() {
            std::fs::copy(&wal, scratch.join("cases.db-wal")).map_err(read(&wal))?;
        }
        let other = Store::open(StoreOptions::recommended(copy.clone(), automerge::ActorId::from(vec![0; 16])))
            .map_err(|error| ImportError::NotAStore { path: source.clone(), reason: error.to_string() })?;
        let mut cases = Vec::new();
        let mut after = 0;
        loop {
            let page = other.catalog_since(after, CATALOG_PAGE_MAX).await.map_err(ImportError::StoreRead)?;
            let Some(last) = page.last() else { break };
            after = last.local_seq;
            for entry in page {
                let changes = other.changes_since(&entry.case_id, Vec::new()).await.map_err(ImportError::StoreRead)?;
                let signatures = other.signatures(&entry.case_id).await.map_err(ImportError::StoreRead)?;
                cases.push(Incoming { case_id: entry.case_id, changes, signatures });
            }
        }
        other.close();
        Ok::<_, ImportError>(cases)
    }
    .await;
    drop(std::fs::remove_dir_all(scratch));
    merge(store, Some(roster), cases?).await
}

/// Merges a plain Automerge document of a case (at most [`DOC_FILE_BYTES_MAX`]). It carries no signatures: changes
/// this node already holds keep theirs; new ones are stored unsigned and stay on this node.
pub async fn automerge_doc(store: &Store, path: &Path) -> Result<ImportReport, ImportError> {
    let bytes = read_capped(path, DOC_FILE_BYTES_MAX)?;
    // Outside bytes: Automerge has panicked on crafted documents, so the load is isolated.
    let loaded = std::panic::catch_unwind(|| CaseDoc::load(&bytes, automerge::ActorId::from(vec![0; 16])))
        .map_err(|_| ImportError::NotAutomerge { path: path.to_path_buf() })?;
    let mut case =
        loaded.map_err(|error| ImportError::NotACase { path: path.to_path_buf(), reason: error.to_string() })?;
    let case_id = case.case_id().to_string();
    let changes: Vec<Vec<u8>> = case.automerge_mut().get_changes(&[]).iter().map(|c| c.raw_bytes().to_vec()).collect();
    let known = store.signatures(&case_id).await.unwrap_or_default();
    merge(store, None, vec![Incoming { case_id, changes, signatures: known }]).await
}

/// Applies the changes of several cases and reports what they did to this node. With `roster`, every change must be
/// signed by a member (a forged or unsigned change refuses everything before anything is stored); without it (a plain
/// Automerge file) the changes are stored unsigned and stay on this node.
pub async fn merge(store: &Store, roster: Option<&Roster>, cases: Vec<Incoming>) -> Result<ImportReport, ImportError> {
    let mut report = ImportReport::default();
    let mut accepted: Vec<Incoming> = Vec::new();
    match roster {
        Some(roster) => {
            // A change the source holds without a signature may be one this node holds signed (its own, or relayed
            // to it): lend those signatures before verifying.
            let mut cases = cases;
            for case in &mut cases {
                let known: BTreeSet<[u8; 32]> = case.signatures.iter().map(|s| s.hash).collect();
                if let Ok(ours) = store.signatures(&case.case_id).await {
                    case.signatures.extend(ours.into_iter().filter(|s| !known.contains(&s.hash)));
                }
            }
            let bundle = Bundle {
                hall: *roster.hall(),
                from: [0; 32],
                created_ms: 0,
                keys: Vec::new(),
                materials: Vec::new(),
                docs: cases
                    .into_iter()
                    .map(|case| BundleDoc { doc_id: case.case_id, changes: case.changes, signatures: case.signatures })
                    .collect(),
            };
            let verified = bundle::verify(&bundle, roster).map_err(ImportError::Unverified)?;
            report.refused = verified.refused;
            let mut docs: Vec<Option<BundleDoc>> = bundle.docs.into_iter().map(Some).collect();
            for index in verified.accepted {
                if let Some(doc) = docs.get_mut(index).and_then(Option::take) {
                    accepted.push(Incoming { case_id: doc.doc_id, changes: doc.changes, signatures: doc.signatures });
                }
            }
        }
        None => {
            for case in &cases {
                let signed: BTreeSet<[u8; 32]> = case.signatures.iter().map(|s| s.hash).collect();
                report.unsigned += case
                    .changes
                    .iter()
                    .filter(|bytes| {
                        automerge::Change::try_from(bytes.as_slice()).map_or(true, |c| !signed.contains(&c.hash().0))
                    })
                    .count();
            }
            accepted = cases;
        }
    }
    for case in accepted {
        let case_id = case.case_id;
        let before = store.case_view(&case_id).await.ok();
        let batch = vec![RemoteChanges { case_id: case_id.clone(), changes: case.changes }];
        let applied = store
            .apply_signed(batch, case.signatures)
            .await
            .map_err(|source| ImportError::StoreWrite { case_id: case_id.clone(), source })?;
        if let Some(rejected) = applied.rejected.first() {
            return Err(ImportError::CaseRefused {
                case_id: rejected.case_id.clone(),
                reason: rejected.reason.clone(),
            });
        }
        let after = store.case_view(&case_id).await.map_err(ImportError::StoreRead)?;
        let old_conflicts: BTreeSet<String> =
            before.iter().flat_map(|b| b.conflicts.iter().map(|c| c.id.clone())).collect();
        for conflict in after.conflicts.iter().filter(|c| !old_conflicts.contains(&c.id)) {
            report.new_conflicts.push((after.reg_no.to_string(), conflict.id.clone()));
        }
        match before {
            None => report.added.push(after.reg_no.to_string()),
            Some(before) if before != after => report.changed.push(after.reg_no.to_string()),
            Some(_) => report.unchanged += 1,
        }
    }
    Ok(report)
}
