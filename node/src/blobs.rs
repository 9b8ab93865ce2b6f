//! The blob store (issue 16 §2): material files, sealed under their case key (`zhaowo_crdt::materials::seal_blob`),
//! one file each in the data directory under its content address (`materials/ab/abcd…`, the SHA-256 of the sealed
//! bytes). Files, not SQLite blobs: measured in `examples/blob_bench.rs` and recorded in `node/STORE.md`.
//!
//! The rules a reader can rely on:
//! - **Nothing partial is ever visible under a hash.** A file is written to `materials/tmp/`, fsynced, renamed into
//!   place and the directory fsynced ([`BlobStore::put`]); a transfer from a peer grows `tmp/<hash>.part` and is
//!   renamed only after the whole file hashed to its name ([`Partial::finish`]).
//! - **Every read verifies.** [`BlobStore::get`] hashes what it read; a file that does not match its name (a damaged
//!   disk) is deleted and reported as [`BlobError::Corrupt`], so the node fetches it again.
//! - **File first, then the event.** `attach` writes the files before the `MaterialAdded` event is committed; a crash
//!   between the two leaves files no case names, which [`BlobStore::sweep`] deletes once they are older than
//!   [`ORPHAN_GRACE`] (an upload in progress is never swept under its feet).
//! - **Bounded memory.** A transfer streams to disk; a read holds one file, at most
//!   `materials::SEALED_BLOB_BYTES_MAX` (a material is opened whole to decrypt it).

use sha2::Digest;
use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};
use zhaowo_crdt::materials::{SEALED_BLOB_BYTES_MAX, blob_hash, is_blob_hash};

/// The blob store's folder in the data directory.
pub const MATERIALS_DIR: &str = "materials";
/// How old a file no case names must be before the sweep deletes it: longer than any upload takes from its file to its
/// event, so the sweep never races an attach in progress.
pub const ORPHAN_GRACE: Duration = Duration::from_secs(3600);
/// A partial transfer not grown for this long is deleted by the sweep (its peer went away for good).
pub const PARTIAL_GRACE: Duration = Duration::from_secs(7 * 24 * 3600);

/// Why a blob could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// No file under that name.
    #[error("material file {0} is not on this node")]
    Missing(String),
    /// The file does not hash to its name: deleted, to be fetched again.
    #[error("material file {0} was damaged on disk and was deleted")]
    Corrupt(String),
    /// A transfer brought a file that does not hash to the name it was asked under.
    #[error("material file {expected} arrived with another hash")]
    HashMismatch { expected: String },
    /// A transfer brought more bytes than the event names, or a file over the limit.
    #[error("material file {hash} is larger than its {max} bytes")]
    Oversize { hash: String, max: u64 },
    /// Not a content address (64 lowercase hex digits).
    #[error("`{0}` is not a material file name")]
    BadName(String),
    #[error("material store: {0}")]
    Io(#[from] io::Error),
}

/// What a sweep deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    /// Files no case names (removed materials, purged cases, an attach that crashed before its event).
    pub orphans: usize,
    pub orphan_bytes: u64,
    /// Stale partial transfers and temporary files.
    pub partials: usize,
    /// Files kept.
    pub kept: usize,
}

/// What [`BlobStore::copy_into`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct CopyReport {
    pub copied: usize,
    pub bytes: u64,
    /// Already in the target.
    pub present: usize,
    /// Damaged here: not copied (and deleted here).
    pub damaged: usize,
}

/// The material files of one data directory.
#[derive(Debug, Clone)]
pub struct BlobStore {
    root: PathBuf,
}

impl BlobStore {
    /// Opens (creating) the blob store at `root` (`<data dir>/materials`), owner-only on Unix.
    pub fn open(root: &Path) -> io::Result<BlobStore> {
        fs::create_dir_all(root.join("tmp"))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(root, fs::Permissions::from_mode(0o700))?;
        }
        Ok(BlobStore { root: root.to_owned() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, hash: &str) -> Result<PathBuf, BlobError> {
        if !is_blob_hash(hash) {
            return Err(BlobError::BadName(hash.to_owned()));
        }
        Ok(self.root.join(&hash[..2]).join(hash))
    }

    fn partial_path(&self, hash: &str) -> PathBuf {
        self.root.join("tmp").join(format!("{hash}.part"))
    }

    /// Whether the file is here (complete: partial files live elsewhere).
    pub fn has(&self, hash: &str) -> bool {
        self.path(hash).is_ok_and(|path| path.is_file())
    }

    /// The size of a stored file.
    pub fn size(&self, hash: &str) -> Option<u64> {
        self.path(hash).ok().and_then(|path| fs::metadata(path).ok()).map(|meta| meta.len())
    }

    /// Stores sealed bytes durably under their hash (temp file, fsync, rename, directory fsync) and returns the hash.
    /// Storing a file that is already here changes nothing.
    pub fn put(&self, sealed: &[u8]) -> Result<String, BlobError> {
        let hash = blob_hash(sealed);
        if sealed.len() > SEALED_BLOB_BYTES_MAX {
            return Err(BlobError::Oversize { hash, max: SEALED_BLOB_BYTES_MAX as u64 });
        }
        if self.has(&hash) {
            return Ok(hash);
        }
        let temp = self.root.join("tmp").join(format!("{hash}.{}.put", std::process::id()));
        let mut file = File::create(&temp)?;
        file.write_all(sealed)?;
        file.sync_all()?;
        drop(file);
        self.install(&temp, &hash)?;
        Ok(hash)
    }

    /// Renames a complete, verified temporary file into place and makes the rename durable.
    fn install(&self, temp: &Path, hash: &str) -> Result<(), BlobError> {
        let target = self.path(hash)?;
        let dir = target.parent().expect("a blob path has a parent");
        fs::create_dir_all(dir)?;
        fs::rename(temp, &target)?;
        File::open(dir)?.sync_all()?;
        Ok(())
    }

    /// Reads a file and checks it against its name. A damaged file is deleted ([`BlobError::Corrupt`]).
    pub fn get(&self, hash: &str) -> Result<Vec<u8>, BlobError> {
        let path = self.path(hash)?;
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(BlobError::Missing(hash.to_owned())),
            Err(error) => return Err(error.into()),
        };
        let mut bytes = Vec::new();
        (&mut file).take(SEALED_BLOB_BYTES_MAX as u64 + 1).read_to_end(&mut bytes)?;
        if bytes.len() > SEALED_BLOB_BYTES_MAX || blob_hash(&bytes) != hash {
            drop(file);
            fs::remove_file(&path)?;
            tracing::warn!(hash, "a material file did not match its hash and was deleted");
            return Err(BlobError::Corrupt(hash.to_owned()));
        }
        Ok(bytes)
    }

    /// Where the file `hash` lives (the transfer server streams it from there after [`BlobStore::verify`]).
    pub fn file_path(&self, hash: &str) -> Result<PathBuf, BlobError> {
        self.path(hash)
    }

    /// Checks a stored file against its name in one streaming pass (bounded memory) and returns its size. A damaged
    /// file is deleted ([`BlobError::Corrupt`]).
    pub fn verify(&self, hash: &str) -> Result<u64, BlobError> {
        let path = self.path(hash)?;
        let mut file = match File::open(&path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Err(BlobError::Missing(hash.to_owned())),
            Err(error) => return Err(error.into()),
        };
        let mut hasher = sha2::Sha256::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut size = 0u64;
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            size += read as u64;
        }
        if hex::encode(hasher.finalize()) != hash {
            drop(file);
            fs::remove_file(&path)?;
            tracing::warn!(hash, "a material file did not match its hash and was deleted");
            return Err(BlobError::Corrupt(hash.to_owned()));
        }
        Ok(size)
    }

    /// Deletes a file (a removed material, a purged case). Missing is fine.
    pub fn remove(&self, hash: &str) -> Result<bool, BlobError> {
        match fs::remove_file(self.path(hash)?) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error.into()),
        }
    }

    /// Every complete file here: name and size.
    pub fn list(&self) -> io::Result<Vec<(String, u64)>> {
        let mut files = Vec::new();
        for shard in fs::read_dir(&self.root)? {
            let shard = shard?;
            let name = shard.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.len() != 2 || !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                if let Some(hash) = entry.file_name().to_str().filter(|hash| is_blob_hash(hash)) {
                    files.push((hash.to_owned(), entry.metadata()?.len()));
                }
            }
        }
        files.sort();
        Ok(files)
    }

    /// Copies every file here that `target` lacks, each read and checked against its name on the way (a backup, a
    /// restore). A damaged file is skipped (and deleted here, see [`BlobStore::get`]). Returns the files and bytes
    /// copied, and the damaged files skipped.
    pub fn copy_into(&self, target: &BlobStore) -> Result<CopyReport, BlobError> {
        let mut report = CopyReport::default();
        for (hash, _) in self.list()? {
            if target.has(&hash) {
                report.present += 1;
                continue;
            }
            match self.get(&hash) {
                Ok(bytes) => {
                    target.put(&bytes)?;
                    report.copied += 1;
                    report.bytes += bytes.len() as u64;
                }
                Err(BlobError::Corrupt(_)) => report.damaged += 1,
                Err(BlobError::Missing(_)) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(report)
    }

    /// Begins (or resumes) a transfer of file `hash` of `expected` bytes: the bytes already received are kept in
    /// `tmp/<hash>.part` and hashed again, so the peer is asked only for the rest ([`Partial::offset`]).
    pub fn begin(&self, hash: &str, expected: u64) -> Result<Partial, BlobError> {
        self.path(hash)?;
        if expected > SEALED_BLOB_BYTES_MAX as u64 {
            return Err(BlobError::Oversize { hash: hash.to_owned(), max: SEALED_BLOB_BYTES_MAX as u64 });
        }
        let path = self.partial_path(hash);
        let mut file = OpenOptions::new().create(true).read(true).append(true).open(&path)?;
        let mut hasher = sha2::Sha256::new();
        let mut offset = 0u64;
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(&buffer[..read]);
            offset += read as u64;
        }
        if offset > expected {
            // A partial file longer than the file it should become: start again.
            file.set_len(0)?;
            hasher = sha2::Sha256::new();
            offset = 0;
        }
        Ok(Partial { store: self.clone(), hash: hash.to_owned(), expected, offset, file, hasher, path })
    }

    /// Deletes files no case names (`wanted` holds every hash some case names) older than `grace`, and partial or
    /// temporary files untouched for [`PARTIAL_GRACE`].
    pub fn sweep(&self, wanted: &HashSet<String>, grace: Duration) -> io::Result<SweepReport> {
        let now = SystemTime::now();
        let older_than = |meta: &fs::Metadata, age: Duration| {
            meta.modified().ok().and_then(|at| now.duration_since(at).ok()).is_some_and(|elapsed| elapsed >= age)
        };
        let mut report = SweepReport::default();
        for (hash, bytes) in self.list()? {
            if wanted.contains(&hash) {
                report.kept += 1;
                continue;
            }
            let Ok(path) = self.path(&hash) else { continue };
            let Ok(meta) = fs::metadata(&path) else { continue };
            if older_than(&meta, grace) {
                fs::remove_file(&path)?;
                report.orphans += 1;
                report.orphan_bytes += bytes;
            } else {
                report.kept += 1;
            }
        }
        for entry in fs::read_dir(self.root.join("tmp"))? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            let stale_partial = name.ends_with(".part")
                && (older_than(&meta, PARTIAL_GRACE) || !wanted.contains(name.trim_end_matches(".part")));
            let stale_put = name.ends_with(".put") && older_than(&meta, grace);
            if meta.is_file() && (stale_partial && older_than(&meta, grace.min(PARTIAL_GRACE)) || stale_put) {
                fs::remove_file(entry.path())?;
                report.partials += 1;
            }
        }
        Ok(report)
    }
}

/// A transfer in progress: bytes are appended as they arrive (bounded memory), hashed on the way, and the file is
/// installed under its name only when it is complete and its hash matches.
pub struct Partial {
    store: BlobStore,
    hash: String,
    expected: u64,
    offset: u64,
    file: File,
    hasher: sha2::Sha256,
    path: PathBuf,
}

impl std::fmt::Debug for Partial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Partial")
            .field("hash", &self.hash)
            .field("offset", &self.offset)
            .field("expected", &self.expected)
            .finish()
    }
}

impl Partial {
    /// Bytes already here: ask the peer for the rest from this offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    pub fn expected(&self) -> u64 {
        self.expected
    }

    pub fn hash(&self) -> &str {
        &self.hash
    }

    /// Appends bytes from the peer. More than the event named is refused and the partial file deleted.
    pub fn write(&mut self, bytes: &[u8]) -> Result<(), BlobError> {
        if self.offset + bytes.len() as u64 > self.expected {
            self.discard();
            return Err(BlobError::Oversize { hash: self.hash.clone(), max: self.expected });
        }
        self.file.write_all(bytes)?;
        self.hasher.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Whether every expected byte arrived.
    pub fn complete(&self) -> bool {
        self.offset == self.expected
    }

    /// Keeps what arrived for a later resume (a cut connection): made durable so a crash keeps it too.
    pub fn suspend(self) -> Result<u64, BlobError> {
        self.file.sync_all()?;
        Ok(self.offset)
    }

    /// Checks the whole file against its name and installs it. A mismatch deletes the partial file.
    pub fn finish(self) -> Result<(), BlobError> {
        let digest = hex::encode(self.hasher.clone().finalize());
        if !self.complete() || digest != self.hash {
            self.discard();
            return Err(BlobError::HashMismatch { expected: self.hash });
        }
        self.file.sync_all()?;
        drop(self.file);
        self.store.install(&self.path, &self.hash)
    }

    /// Gives the transfer up and deletes what arrived (bytes from a peer that misbehaved are never resumed from).
    pub fn abandon(self) {
        self.discard();
    }

    fn discard(&self) {
        let _ = self.file.set_len(0);
        let _ = fs::remove_file(&self.path);
    }
}

// ---------------------------------------------------------------------------------------------------------------
// Attaching and reading materials: the one way the desk, the citizen page and the CLI do it.

/// A file as a person uploaded it (the bytes as they came; [`attach`] checks and cleans them).
pub struct Upload {
    pub name: String,
    pub bytes: Vec<u8>,
    pub public: bool,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload").field("bytes", &self.bytes.len()).field("public", &self.public).finish_non_exhaustive()
    }
}

/// Why a material was not attached or read. Nothing was stored.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    /// The file itself: type, size, damage.
    #[error(transparent)]
    File(#[from] zhaowo_crdt::materials::MaterialError),
    /// The case refused (role, state, limits, no key).
    #[error(transparent)]
    Write(#[from] crate::store::WriteError),
    #[error(transparent)]
    Read(#[from] crate::store::ReadError),
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The node does not hold the case key (a laptop without a visit).
    #[error("this node does not hold the key of the case")]
    NoKey,
}

impl std::fmt::Debug for Opened {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Opened").field("material", &self.material.id).field("bytes", &self.bytes.len()).finish()
    }
}

impl AttachError {
    /// The sentence a clerk or a citizen reads.
    pub fn zh(&self) -> String {
        match self {
            AttachError::File(error) => error.zh(),
            AttachError::Write(crate::store::WriteError::Command(error)) => error.zh(),
            AttachError::Write(_) | AttachError::Read(_) => "保存失败，请稍后重试".to_owned(),
            AttachError::Blob(BlobError::Missing(_)) => "该材料尚未同步到本机，请稍后再试".to_owned(),
            AttachError::Blob(BlobError::Corrupt(_)) => "该材料在本机的文件已损坏，正在重新获取".to_owned(),
            AttachError::Blob(_) => "材料文件读写失败，请联系管理员".to_owned(),
            AttachError::NoKey => "本机无权查看此案件的材料".to_owned(),
        }
    }
}

/// Attaches a material: checks the file by its content and strips its metadata (`materials::clean`), seals it and
/// its thumbnail under the case key on the store thread, writes both files durably, then commits the
/// `MaterialAdded` event (file first, then event). Returns after COMMIT. A refusal after the files were written
/// deletes them again.
pub async fn attach(
    store: &crate::store::Store,
    blobs: &BlobStore,
    case_id: &str,
    ctx: zhaowo_crdt::Ctx,
    hall: std::sync::Arc<zhaowo_crdt::Hall>,
    upload: Upload,
    thumbnail: Option<Vec<u8>>,
) -> Result<crate::store::Acknowledged, AttachError> {
    let Upload { name, bytes, public } = upload;
    let (kind, cleaned) = tokio::task::spawn_blocking(move || zhaowo_crdt::materials::clean(&bytes))
        .await
        .map_err(|_| BlobError::Io(io::Error::other("the cleaning task failed")))??;
    let blobs = blobs.clone();
    let failure = std::sync::Arc::new(std::sync::Mutex::new(None::<BlobError>));
    let failed = failure.clone();
    let result = store
        .edit(
            case_id,
            Box::new(move |case: &mut zhaowo_crdt::CaseDoc| {
                let sealed = case.seal_material(&ctx.secret, kind, &cleaned, thumbnail.as_deref())?;
                let mut written = Vec::new();
                let files = std::iter::once(&sealed.blob).chain(sealed.thumbnail.as_ref().map(|(thumb, _)| thumb));
                for file in files {
                    match blobs.put(file) {
                        Ok(hash) => written.push(hash),
                        Err(error) => {
                            written.iter().for_each(|hash: &String| drop(blobs.remove(hash)));
                            *failed.lock().expect("not poisoned") = Some(error);
                            return Err(zhaowo_crdt::CommandError::Document(
                                "the material file was not written".into(),
                            ));
                        }
                    }
                }
                let command = zhaowo_crdt::Command::AddMaterial {
                    hash: sealed.hash.clone(),
                    bytes: sealed.blob.len() as u64,
                    media: kind,
                    name,
                    public,
                    thumbnail: sealed.thumbnail.as_ref().map(|(thumb, hash)| (hash.clone(), thumb.len() as u64)),
                };
                let applied = case.apply(&ctx, &hall, command);
                if applied.is_err() {
                    written.iter().for_each(|hash| drop(blobs.remove(hash)));
                }
                applied
            }),
        )
        .await;
    if let Some(error) = failure.lock().expect("not poisoned").take() {
        return Err(error.into());
    }
    Ok(result?)
}

/// What [`check_all`] found: the files cases name, which of them this node holds (each read and verified against its
/// name), which it still lacks (sync fetches them), and which were damaged on disk (deleted, so they are fetched
/// again).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MaterialsCheck {
    pub named: usize,
    pub named_bytes: u64,
    pub held: usize,
    pub missing: usize,
    pub damaged: Vec<String>,
}

/// Reads every file the cases name and checks it against its name (`zhaowo verify`).
pub async fn check_all(store: &crate::store::Store, blobs: &BlobStore) -> Result<MaterialsCheck, AttachError> {
    let mut check = MaterialsCheck::default();
    let mut after = String::new();
    loop {
        let page = store.blob_refs(&after, 1000).await?;
        let Some(last) = page.last() else { break };
        after = last.hash.clone();
        for named in page {
            check.named += 1;
            check.named_bytes += named.bytes;
            let (files, hash) = (blobs.clone(), named.hash.clone());
            let read = tokio::task::spawn_blocking(move || files.get(&hash).map(|bytes| bytes.len()))
                .await
                .map_err(|_| BlobError::Io(io::Error::other("the checking task failed")))?;
            match read {
                Ok(_) => check.held += 1,
                Err(BlobError::Missing(_)) => check.missing += 1,
                Err(BlobError::Corrupt(hash)) => check.damaged.push(hash),
                Err(other) => return Err(other.into()),
            }
        }
    }
    Ok(check)
}

/// A material opened for a download: what the case says of it and its bytes in clear (never `Debug`-printed).
pub struct Opened {
    pub material: zhaowo_crdt::view::Material,
    pub bytes: Vec<u8>,
}

/// Opens a material for a download by staff: records the download (查看材料, like a reveal) and only then reads and
/// decrypts the file. A file not on this node yet is [`BlobError::Missing`] and nothing is recorded.
pub async fn download(
    store: &crate::store::Store,
    blobs: &BlobStore,
    case_id: &str,
    ctx: zhaowo_crdt::Ctx,
    material: &zhaowo_crdt::EventId,
) -> Result<Opened, AttachError> {
    let view = store.case_view(case_id).await?;
    let found = view.material(material.as_str()).ok_or_else(|| {
        crate::store::WriteError::Command(zhaowo_crdt::CommandError::UnknownMaterial(material.to_string()))
    })?;
    if !blobs.has(&found.hash) {
        return Err(BlobError::Missing(found.hash.clone()).into());
    }
    let id = material.clone();
    let recorded = std::sync::Arc::new(std::sync::Mutex::new(None));
    let slot = recorded.clone();
    store
        .edit(
            case_id,
            Box::new(move |case: &mut zhaowo_crdt::CaseDoc| {
                let (material, event) = case.view_material_event(&ctx, &id)?;
                *slot.lock().expect("not poisoned") = Some(material);
                Ok(event)
            }),
        )
        .await?;
    let material = recorded.lock().expect("not poisoned").take().expect("set by the edit that succeeded");
    let bytes = open_file(store, blobs, case_id, &material.hash, zhaowo_crdt::materials::BlobRole::Material).await?;
    Ok(Opened { material, bytes })
}

/// Reads and decrypts one file of a case (a thumbnail for the desk, a published material for the citizen page)
/// without recording anything: callers decide who may see it.
pub async fn open_file(
    store: &crate::store::Store,
    blobs: &BlobStore,
    case_id: &str,
    hash: &str,
    role: zhaowo_crdt::materials::BlobRole,
) -> Result<Vec<u8>, AttachError> {
    let key = store.case_key(case_id).await?.ok_or(AttachError::NoKey)?;
    let (blobs, hash, case_id) = (blobs.clone(), hash.to_owned(), case_id.to_owned());
    tokio::task::spawn_blocking(move || {
        let sealed = blobs.get(&hash)?;
        zhaowo_crdt::materials::open_blob(&key, &case_id, role, &sealed).map_err(|_| AttachError::NoKey)
    })
    .await
    .map_err(|_| BlobError::Io(io::Error::other("the reading task failed")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_verified_resumed_and_swept() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(&dir.path().join(MATERIALS_DIR)).unwrap();
        let bytes: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let hash = store.put(&bytes).unwrap();
        assert_eq!(hash, blob_hash(&bytes));
        assert_eq!(store.get(&hash).unwrap(), bytes);
        assert_eq!(store.list().unwrap(), vec![(hash.clone(), bytes.len() as u64)]);

        // Damage on disk: detected, deleted, reported.
        let path = store.path(&hash).unwrap();
        let mut damaged = bytes.clone();
        damaged[1000] ^= 1;
        fs::write(&path, &damaged).unwrap();
        assert!(matches!(store.get(&hash), Err(BlobError::Corrupt(_))));
        assert!(!store.has(&hash));

        // A transfer cut after 70,000 bytes resumes from there and installs only a matching file.
        let mut partial = store.begin(&hash, bytes.len() as u64).unwrap();
        assert_eq!(partial.offset(), 0);
        partial.write(&bytes[..70_000]).unwrap();
        assert_eq!(partial.suspend().unwrap(), 70_000);
        assert!(!store.has(&hash), "nothing visible before the file is complete");
        let mut partial = store.begin(&hash, bytes.len() as u64).unwrap();
        assert_eq!(partial.offset(), 70_000);
        partial.write(&bytes[70_000..]).unwrap();
        partial.finish().unwrap();
        assert_eq!(store.get(&hash).unwrap(), bytes);

        // Wrong bytes, or more than announced: refused, nothing stored, the partial file gone.
        let other = store.root().join("x");
        fs::write(&other, b"").unwrap();
        let fake = blob_hash(b"something else");
        let mut partial = store.begin(&fake, bytes.len() as u64).unwrap();
        partial.write(&bytes).unwrap();
        assert!(matches!(partial.finish(), Err(BlobError::HashMismatch { .. })));
        assert!(!store.has(&fake) && !store.partial_path(&fake).exists());
        let mut partial = store.begin(&fake, 10).unwrap();
        assert!(matches!(partial.write(&[0; 11]), Err(BlobError::Oversize { .. })));
        assert!(!store.partial_path(&fake).exists());
        assert!(matches!(store.begin("../../etc/passwd", 1), Err(BlobError::BadName(_))));

        // The sweep keeps wanted files and recent orphans, deletes old orphans.
        let orphan = store.put(b"orphan").unwrap();
        let wanted: HashSet<String> = [hash.clone()].into();
        let report = store.sweep(&wanted, ORPHAN_GRACE).unwrap();
        assert_eq!((report.orphans, report.kept), (0, 2), "a fresh orphan may be an upload in progress");
        let report = store.sweep(&wanted, Duration::ZERO).unwrap();
        assert_eq!((report.orphans, report.orphan_bytes, report.kept), (1, 6, 1));
        assert!(store.has(&hash) && !store.has(&orphan));
    }
}
