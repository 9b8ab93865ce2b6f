//! Materials on the case file (issue 16) at the store boundary: attach (clean, seal, file first, then the event),
//! download recorded like a reveal, limits refused with nothing stored, removal and purge release the files.

use automerge::ActorId;
use std::collections::HashSet;
use std::time::Duration;
use zhaowo_crdt::materials::{CASE_MATERIALS_MAX, MaterialType};
use zhaowo_crdt::{Command, CommandError, EventKind};
use zhaowo_node::blobs::{self, AttachError, BlobStore, Upload};
use zhaowo_node::fixtures::CaseFactory;
use zhaowo_node::store::*;

const GPS_JPEG: &[u8] = include_bytes!("../../../crdt/fuzz/seeds/material_file/gps-photo.jpg");
const PNG: &[u8] = include_bytes!("../../../crdt/fuzz/seeds/material_file/text.png");

fn upload(name: &str, bytes: &[u8]) -> Upload {
    Upload { name: name.to_owned(), bytes: bytes.to_vec(), public: false }
}

/// A store and its blob store in a temp dir, with one registered case (held with its key).
async fn one_case(actor: u8, seed: u64) -> (tempfile::TempDir, Store, BlobStore, CaseFactory, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.db");
    let store = Store::open(StoreOptions::recommended(path, ActorId::from(vec![actor; 16]))).unwrap();
    let blobs = BlobStore::open(&dir.path().join(blobs::MATERIALS_DIR)).unwrap();
    let mut factory = CaseFactory::new(seed, ActorId::from(vec![actor; 16]), CaseFactory::start_2026());
    let case_id = store.register(factory.register()).await.unwrap().case_id;
    (dir, store, blobs, factory, case_id)
}

#[tokio::test]
async fn a_material_is_cleaned_sealed_stored_before_its_event_and_read_back_with_a_record() {
    let (_dir, store, blobs, mut factory, case_id) = one_case(1, 5).await;

    // A phone photo with GPS in its EXIF: stored sealed, without the EXIF, under the hash of the sealed bytes.
    let thumb = b"\xFF\xD8\xFF thumbnail bytes".to_vec();
    let ack = blobs::attach(
        &store,
        &blobs,
        &case_id,
        factory.ctx(),
        factory.hall(),
        upload("张三身份证.jpg", GPS_JPEG),
        Some(thumb.clone()),
    )
    .await
    .unwrap();
    let view = store.case_view(&case_id).await.unwrap();
    let material = view.material(ack.event_id.as_ref().unwrap().as_str()).unwrap().clone();
    assert_eq!(
        (material.media, material.name.as_str(), material.public),
        (MaterialType::Jpeg, "张三身份证.jpg", false)
    );
    let files = blobs.list().unwrap();
    assert_eq!(files.len(), 2, "the material and its thumbnail");
    let sealed = std::fs::read(blobs.root().join(&material.hash[..2]).join(&material.hash)).unwrap();
    let (_, cleaned) = zhaowo_crdt::materials::clean(GPS_JPEG).unwrap();
    assert!(cleaned.len() < GPS_JPEG.len());
    let window = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(!window(&sealed, &cleaned[cleaned.len() - 64..]), "the image bytes are not in the file in clear");
    assert!(!window(&sealed, b"Exif") && !window(&sealed, b"GPS"));
    // The file name is private: sealed in the document.
    let doc_bytes = format!("{:?}", store.changes_since(&case_id, vec![]).await.unwrap());
    assert!(!doc_bytes.contains("张三"), "the file name is sealed in the document");
    let refs = store.blob_refs("", 100).await.unwrap();
    assert_eq!(refs.len(), 2);
    assert!(refs.iter().all(|r| r.doc_id == case_id && r.keyed));

    // A download is recorded (查看材料) and gives back the cleaned bytes; the thumbnail opens without a record.
    let opened = blobs::download(&store, &blobs, &case_id, factory.ctx(), &material.id).await.unwrap();
    assert_eq!(opened.bytes, cleaned);
    assert!(!window(&opened.bytes, b"Exif"), "no EXIF (GPS) in what comes out");
    let view = store.case_view(&case_id).await.unwrap();
    assert_eq!(view.material(material.id.as_str()).unwrap().views, 1);
    let (events, _) = store.case_view(&case_id).await.map(|v| (v.timeline, 0)).unwrap();
    assert!(events.iter().any(|entry| entry.label == "查看材料"));
    let thumb_hash = material.thumb.clone().unwrap();
    let opened_thumb =
        blobs::open_file(&store, &blobs, &case_id, &thumb_hash, zhaowo_crdt::materials::BlobRole::Thumbnail)
            .await
            .unwrap();
    assert_eq!(opened_thumb, thumb);
    // The thumbnail's file does not open as the material (the role is bound in).
    assert!(
        blobs::open_file(&store, &blobs, &case_id, &thumb_hash, zhaowo_crdt::materials::BlobRole::Material)
            .await
            .is_err()
    );

    // Refusals change nothing: not a material type, an empty file, a damaged PNG.
    let before = (store.counts().await.unwrap().local_seq, blobs.list().unwrap().len());
    for (name, bytes) in [("a.exe", b"MZ\x90\x00".to_vec()), ("empty.jpg", Vec::new()), ("bad.png", PNG[..40].to_vec())]
    {
        let refused =
            blobs::attach(&store, &blobs, &case_id, factory.ctx(), factory.hall(), upload(name, &bytes), None).await;
        assert!(matches!(refused, Err(AttachError::File(_))), "{name}: {refused:?}");
        assert!(!refused.unwrap_err().zh().is_empty());
    }
    assert_eq!((store.counts().await.unwrap().local_seq, blobs.list().unwrap().len()), before);
}

#[tokio::test]
async fn limits_removal_and_purge_release_the_files() {
    let (_dir, store, blobs, mut factory, case_id) = one_case(2, 6).await;
    let mut ids = Vec::new();
    for n in 0..CASE_MATERIALS_MAX {
        let ack = blobs::attach(
            &store,
            &blobs,
            &case_id,
            factory.ctx(),
            factory.hall(),
            upload(&format!("第{n}页.png"), PNG),
            None,
        )
        .await
        .unwrap();
        ids.push(ack.event_id.unwrap());
    }
    let full =
        blobs::attach(&store, &blobs, &case_id, factory.ctx(), factory.hall(), upload("多余.png", PNG), None).await;
    assert!(
        matches!(full, Err(AttachError::Write(WriteError::Command(CommandError::MaterialsFull { count, .. }))) if count == CASE_MATERIALS_MAX),
        "{full:?}"
    );
    assert_eq!(blobs.list().unwrap().len(), CASE_MATERIALS_MAX, "the refused file was deleted again");
    println!(
        "materials: {CASE_MATERIALS_MAX} attached, the next refused, {} files on disk",
        blobs.list().unwrap().len()
    );

    // A removal takes the file out of what the case names; the sweep deletes it.
    let removed = ids[0].clone();
    store
        .apply(
            &case_id,
            factory.ctx(),
            factory.hall(),
            Command::RemoveMaterial { material: removed.clone(), reason: "重复上传".into() },
        )
        .await
        .unwrap();
    let wanted: HashSet<String> = store.blob_refs("", 1000).await.unwrap().into_iter().map(|r| r.hash).collect();
    assert_eq!(wanted.len(), CASE_MATERIALS_MAX - 1);
    assert_eq!(blobs.sweep(&wanted, Duration::ZERO).unwrap().orphans, 1);
    let again = store
        .apply(
            &case_id,
            factory.ctx(),
            factory.hall(),
            Command::RemoveMaterial { material: removed, reason: "再删".into() },
        )
        .await;
    assert!(matches!(again, Err(WriteError::Command(CommandError::UnknownMaterial(_)))), "{again:?}");

    // Publication shows a material on the public view; a purge takes every file out (the key is gone).
    store
        .apply(
            &case_id,
            factory.ctx(),
            factory.hall(),
            Command::PublishMaterial { material: ids[1].clone(), public: true },
        )
        .await
        .unwrap();
    assert_eq!(store.case_view(&case_id).await.unwrap().public().materials.len(), 1);
    let mut purger = factory.ctx();
    purger.author.role = zhaowo_crdt::model::Role::Supervision;
    store.apply(&case_id, purger, factory.hall(), Command::PurgePersonalData).await.unwrap();
    assert!(store.blob_refs("", 1000).await.unwrap().is_empty());
    assert!(store.case_view(&case_id).await.unwrap().public().materials.is_empty());
    let report = blobs.sweep(&HashSet::new(), Duration::ZERO).unwrap();
    assert_eq!(report.orphans, CASE_MATERIALS_MAX - 1);
    let view = store.case_view(&case_id).await.unwrap();
    assert!(
        view.timeline
            .iter()
            .filter(|e| e.label
                == EventKind::MaterialAdded {
                    hash: String::new(),
                    bytes: 0,
                    media: MaterialType::Png,
                    name: String::new(),
                    public: false,
                    thumb: None,
                    thumb_bytes: 0
                }
                .label())
            .count()
            == CASE_MATERIALS_MAX
    );
}
