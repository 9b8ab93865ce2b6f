//! The one run-time owner of the hall document and of the roster (issue 12 §3): everything else reads them through
//! `tokio::sync::watch` receivers and never opens the data directory for them.
//!
//! Writers are few and in memory: a sync step merges a peer's admin-signed hall changes into the document (on the
//! store thread, under [`Live::signed_hall`]'s lock), gossip and the admin's CLI add roster records, and the poller
//! merges what the CLI wrote to `hall.automerge`/`roster.records`. Each publishes a new snapshot and marks the files
//! dirty; one writer task writes them afterwards, holding no lock that the store thread or a TLS handshake takes (the
//! roster is read by the transport's [`Authorizer`] inside handshakes, the hall lock by the store thread's sync steps).
//! The writer always writes the latest state, so files are never written in the opposite order of their changes.
//!
//! ```text
//!  sync step (store thread) ─┐                           ┌─▶ watch::Receiver<Arc<HallView>>  desk sign-in, peers page
//!  gossip, CLI revocation ───┼─▶ Live (memory, publish) ─┼─▶ watch::Receiver<Arc<Roster>>    transport, sessions
//!  poller (CLI's files) ─────┘            │ dirty        └─▶ drivers: push hall / roster to peers
//!                                         ▼
//!                               writer task: hall.signatures, hall.automerge, roster.records (fsync, no lock held)
//! ```

use crate::home::{Home, HomeError};
use crate::identity::NodeIdentity;
use crate::transport::{Authorizer, NodeKey, Refusal};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use zhaowo_crdt::hall::{Hall, HallEdit, SignedHall};
use zhaowo_crdt::roster::{Record, Roster, SignedRecord};

/// The hall configuration as readers see it: what the desk signs in against and shows.
#[derive(Debug)]
pub struct HallView {
    /// The configuration (windows, units, accounts, …).
    pub hall: Hall,
    /// The hall document's edit history, oldest first (empty without a hall document).
    pub history: Vec<HallEdit>,
    /// Bumped on every published change (1 at start).
    pub version: u64,
}

/// Why the live state could not be set up from a data directory.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    /// The node has not joined a hall.
    #[error("this node has not joined a hall (no roster): run `zhaowo init` or `zhaowo join` first")]
    NoRoster,
    /// The hall document or the roster file cannot be read.
    #[error(transparent)]
    Home(#[from] HomeError),
    /// The hall document holds no readable configuration.
    #[error("the hall document holds no readable configuration: {0}")]
    Hall(#[from] zhaowo_crdt::hall::HallError),
    /// The node key cannot give an actor id.
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
}

/// What [`Live::add_records`] changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RecordsAdded {
    /// Records new to the roster.
    pub added: usize,
    /// Keys revoked by them.
    pub revoked: Vec<NodeKey>,
}

struct Inner {
    /// The data directory whose files mirror the state (`None`: memory only, tests).
    dir: Option<PathBuf>,
    /// Loads the hall files the CLI writes.
    actor: automerge::ActorId,
    /// The hall document and its signatures (`None`: this node does not sync the hall document).
    signed: Option<Arc<Mutex<SignedHall>>>,
    hall: watch::Sender<Arc<HallView>>,
    roster: watch::Sender<Arc<Roster>>,
    /// Bumped when the hall files are behind memory.
    hall_dirty: watch::Sender<u64>,
    /// Bumped when the roster file is behind memory.
    roster_dirty: watch::Sender<u64>,
}

/// A handle on the node's live hall document and roster (cheap to clone). See the module docs.
#[derive(Clone)]
pub struct Live {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").field("dir", &self.inner.dir).field("hall", &self.inner.signed.is_some()).finish()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Live {
    /// The state of a node's data directory: its roster and hall document (this node's own unsigned hall changes
    /// are signed, an admin node from before signed hall changes, and written by the writer task).
    pub fn open(home: &Home, identity: &NodeIdentity) -> Result<Live, LiveError> {
        let roster = home.roster().cloned().ok_or(LiveError::NoRoster)?;
        Live::from_dir(&home.dir, identity, roster, || {
            Ok(HallView { hall: home.hall()?, history: home.hall_history(), version: 1 })
        })
    }

    /// The state of a data directory with this roster; `no_document` gives the configuration when the directory holds
    /// no hall document.
    pub fn from_dir(
        dir: &Path,
        identity: &NodeIdentity,
        roster: Roster,
        no_document: impl FnOnce() -> Result<HallView, LiveError>,
    ) -> Result<Live, LiveError> {
        let actor = identity.new_actor()?;
        let signed = match Home::read_signed_hall(dir, actor.clone()) {
            Ok(signed) => signed,
            Err(error) => {
                // Today's behaviour, kept: a node whose hall file is damaged still serves and syncs cases.
                tracing::error!(%error, "cannot read the hall document: it is not synced");
                None
            }
        };
        let mut own_signed = 0;
        let view = match signed {
            Some(mut signed) => {
                let signer = identity.change_signer();
                own_signed = signed.sign_own(&signer.node_key, |hash| (signer.sign)(hash));
                let view = HallView { hall: signed.doc.hall()?, history: signed.doc.history(), version: 1 };
                (view, Some(signed))
            }
            None => (no_document()?, None),
        };
        let live = Live::new(Some(dir.to_path_buf()), actor, view.1, view.0, roster);
        if own_signed > 0 {
            live.inner.hall_dirty.send_modify(|version| *version += 1);
        }
        Ok(live)
    }

    /// Memory only: a roster, the default hall, no hall document sync, no files (tests and tools).
    pub fn in_memory(roster: Roster) -> Live {
        let view = HallView { hall: Hall::jiangan_default(), history: Vec::new(), version: 1 };
        Live::new(None, automerge::ActorId::random(), None, view, roster)
    }

    fn new(
        dir: Option<PathBuf>,
        actor: automerge::ActorId,
        signed: Option<SignedHall>,
        view: HallView,
        roster: Roster,
    ) -> Live {
        Live {
            inner: Arc::new(Inner {
                dir,
                actor,
                signed: signed.map(|signed| Arc::new(Mutex::new(signed))),
                hall: watch::channel(Arc::new(view)).0,
                roster: watch::channel(Arc::new(roster)).0,
                hall_dirty: watch::channel(0).0,
                roster_dirty: watch::channel(0).0,
            }),
        }
    }

    /// The hall configuration now.
    pub fn hall(&self) -> Arc<HallView> {
        self.inner.hall.borrow().clone()
    }

    /// A receiver of every new hall configuration.
    pub fn watch_hall(&self) -> watch::Receiver<Arc<HallView>> {
        self.inner.hall.subscribe()
    }

    /// The roster now (its own records plus what peers gossiped and the CLI wrote).
    pub fn roster(&self) -> Arc<Roster> {
        self.inner.roster.borrow().clone()
    }

    /// A receiver of every roster that gained records.
    pub fn watch_roster(&self) -> watch::Receiver<Arc<Roster>> {
        self.inner.roster.subscribe()
    }

    /// The data directory the state is mirrored to, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.inner.dir.as_deref()
    }

    /// The hall document, for sync steps (the store thread locks it for one step; nothing does I/O under it).
    pub(crate) fn signed_hall(&self) -> Option<Arc<Mutex<SignedHall>>> {
        self.inner.signed.clone()
    }

    /// A sync step grew the hall document: publish it and have the writer write its files.
    pub(crate) fn hall_grew(&self) {
        self.publish_hall();
        self.inner.hall_dirty.send_modify(|version| *version += 1);
    }

    fn publish_hall(&self) {
        let Some(signed) = &self.inner.signed else { return };
        let version = self.inner.hall.borrow().version + 1;
        let view = view_of(&lock(signed), version);
        match view {
            Some(view) => {
                self.inner.hall.send_replace(Arc::new(view));
            }
            // Sync refuses a change leaving the configuration unreadable; a file written so stays unpublished.
            None => tracing::error!("the hall document holds no readable configuration: keeping the previous one"),
        }
    }

    /// Adds verified roster records (gossip, a revocation issued here, the CLI's file); publishes the roster when it
    /// gained any and has the writer write the file.
    pub fn add_records(&self, records: Vec<SignedRecord>) -> RecordsAdded {
        let mut outcome = RecordsAdded::default();
        self.inner.roster.send_if_modified(|roster| {
            let mut next: Option<Roster> = None;
            for record in records {
                let target = next.get_or_insert_with(|| (**roster).clone());
                if let Ok(true) = target.insert(record.clone()) {
                    outcome.added += 1;
                    if let Record::Revocation(revocation) = &record.record {
                        outcome.revoked.push(revocation.node_key);
                    }
                }
            }
            match next {
                Some(next) if outcome.added > 0 => {
                    *roster = Arc::new(next);
                    true
                }
                _ => false,
            }
        });
        if outcome.added > 0 {
            self.inner.roster_dirty.send_modify(|version| *version += 1);
            tracing::info!(added = outcome.added, "roster records learned");
        }
        outcome
    }

    /// Starts the writer task (and, with a data directory, the poller of the CLI's files every `poll`). They stop
    /// when `stop` turns true; the writer writes what is pending first.
    pub fn spawn_tasks(&self, poll: Duration, stop: watch::Receiver<bool>) -> Vec<tokio::task::JoinHandle<()>> {
        let Some(dir) = self.inner.dir.clone() else { return Vec::new() };
        vec![
            tokio::spawn(writer_loop(self.clone(), dir.clone(), stop.clone())),
            tokio::spawn(poll_loop(self.clone(), dir, poll, stop)),
        ]
    }

    /// Merges the hall files into the document when they changed on disk (the admin's CLI added an account): what is
    /// new is published; what memory holds beyond the files (changes a peer sent while the CLI wrote an older copy)
    /// is written back by the writer.
    fn merge_hall_files(&self, dir: &Path) {
        let Some(signed) = &self.inner.signed else { return };
        let mut on_disk = match Home::read_signed_hall(dir, self.inner.actor.clone()) {
            Ok(Some(on_disk)) => on_disk,
            Ok(None) => return,
            Err(error) => {
                tracing::warn!(%error, "cannot read the hall document");
                return;
            }
        };
        let mut disk_heads = on_disk.heads();
        disk_heads.sort();
        let disk_signatures = on_disk.signatures.len();
        let (grew, behind) = {
            let mut hall = lock(signed);
            let grew = match hall.merge_local(&mut on_disk) {
                Ok(grew) => grew,
                Err(error) => {
                    tracing::warn!(%error, "cannot merge the hall document");
                    return;
                }
            };
            let mut heads = hall.heads();
            heads.sort();
            (grew, heads != disk_heads || hall.signatures.len() != disk_signatures)
        };
        if grew {
            tracing::info!("hall document changed on disk");
            self.publish_hall();
        }
        if behind {
            self.inner.hall_dirty.send_modify(|version| *version += 1);
        }
    }
}

fn view_of(signed: &SignedHall, version: u64) -> Option<HallView> {
    Some(HallView { hall: signed.doc.hall().ok()?, history: signed.doc.history(), version })
}

impl Authorizer for Live {
    fn is_authorized(&self, node_key: &NodeKey) -> bool {
        self.inner.roster.borrow().authorized(node_key).is_some()
    }

    fn refusal(&self, node_key: &NodeKey) -> Refusal {
        if self.inner.roster.borrow().is_revoked(node_key) { Refusal::Revoked } else { Refusal::NotEnrolled }
    }
}

/// Size and modification time of the hall files: a change means the CLI (or the writer) wrote them.
fn hall_files_stamp(dir: &Path) -> Vec<Option<(u64, std::time::SystemTime)>> {
    ["hall.automerge", "hall.signatures"]
        .iter()
        .map(|name| std::fs::metadata(dir.join(name)).ok().and_then(|m| Some((m.len(), m.modified().ok()?))))
        .collect()
}

/// Writes the files whenever memory moved ahead of them; the latest state each time, on a blocking thread, with no
/// lock held while writing. Writes what is pending once more when asked to stop.
async fn writer_loop(live: Live, dir: PathBuf, mut stop: watch::Receiver<bool>) {
    let mut hall_dirty = live.inner.hall_dirty.subscribe();
    let mut roster_dirty = live.inner.roster_dirty.subscribe();
    // A bump made before we subscribed (own hall changes signed at start) is pending too.
    let mut hall_pending = *hall_dirty.borrow_and_update() > 0;
    let mut roster_pending = false;
    let mut stopping = false;
    loop {
        if hall_pending && let Some(signed) = &live.inner.signed {
            let files = Home::hall_files(&mut lock(signed));
            let dir = dir.clone();
            match tokio::task::spawn_blocking(move || Home::write_hall_files(&dir, &files)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "cannot write the hall document"),
                Err(error) => tracing::error!(%error, "the hall writer failed"),
            }
        }
        if roster_pending {
            let roster = live.roster();
            let dir = dir.clone();
            match tokio::task::spawn_blocking(move || Home::write_roster(&dir, &roster)).await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "cannot write the roster file"),
                Err(error) => tracing::error!(%error, "the roster writer failed"),
            }
        }
        if stopping {
            return;
        }
        (hall_pending, roster_pending) = (false, false);
        tokio::select! {
            changed = hall_dirty.changed() => hall_pending = changed.is_ok(),
            changed = roster_dirty.changed() => roster_pending = changed.is_ok(),
            // Stop asked (or its sender gone): one last round for whatever is pending.
            _ = stop.changed() => stopping = true,
        }
        // Both may be pending after a burst: take both at once.
        hall_pending |= hall_dirty.has_changed().unwrap_or(false);
        roster_pending |= roster_dirty.has_changed().unwrap_or(false);
        hall_dirty.mark_unchanged();
        roster_dirty.mark_unchanged();
    }
}

/// Picks up what the admin's CLI (another process) wrote: the hall files when their stamp moved, the roster file
/// when its digest differs from memory's.
async fn poll_loop(live: Live, dir: PathBuf, poll: Duration, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(poll);
    let mut hall_stamp = hall_files_stamp(&dir);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        if live.inner.signed.is_some() {
            let stamp = hall_files_stamp(&dir);
            if stamp != hall_stamp {
                // Also after the writer's own write: merging what we wrote is a no-op, and comparing stamps of our
                // own writes would race with a CLI write landing just after one.
                hall_stamp = stamp;
                let (merging, merge_dir) = (live.clone(), dir.clone());
                drop(tokio::task::spawn_blocking(move || merging.merge_hall_files(&merge_dir)).await);
            }
        }
        let read_dir = dir.clone();
        match tokio::task::spawn_blocking(move || Home::read_roster_file(&read_dir)).await {
            Ok(Ok(Some(file))) => {
                if file.digest() != live.roster().digest() {
                    let added = live.add_records(file.records().to_vec());
                    if added.added == 0 {
                        // The file lacks what memory holds (gossip the CLI's write did not include): write it back.
                        live.inner.roster_dirty.send_modify(|version| *version += 1);
                    }
                }
            }
            Ok(Ok(None)) => {}
            Ok(Err(error)) => tracing::warn!(%error, "cannot read the roster file"),
            Err(_) => {}
        }
    }
}
