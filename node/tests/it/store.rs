//! Store tests at the node boundary: persistence across reopen, local and remote writes, compaction, migrations,
//! corruption, maintenance, and reads checked against a brute-force fold over every document.

use automerge::ActorId;
use std::collections::BTreeMap;
use std::path::Path;
use zhaowo_crdt::time::Date;
use zhaowo_crdt::{CaseDoc, CaseView};
use zhaowo_node::fixtures::CaseFactory;
use zhaowo_node::store::*;

fn actor(n: u8) -> ActorId {
    ActorId::from(vec![n; 16])
}

fn open(path: &Path) -> Store {
    Store::open(StoreOptions::recommended(path.to_path_buf(), actor(1))).expect("open store")
}

fn remote_of(case: &mut CaseDoc) -> RemoteChanges {
    let changes = case.automerge_mut().get_changes(&[]).iter().map(|change| change.raw_bytes().to_vec()).collect();
    RemoteChanges { case_id: case.case_id().as_str().to_owned(), changes }
}

#[tokio::test]
async fn registered_and_edited_cases_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.db");
    let mut factory = CaseFactory::new(7, actor(1), CaseFactory::start_2026());
    let mut expected = BTreeMap::new();
    {
        let store = open(&path);
        for _ in 0..20 {
            let case = factory.register();
            let ack = store.register(case).await.unwrap();
            for _ in 0..6 {
                let view = store.case_view(&ack.case_id).await.unwrap();
                let command = factory.next_command(&view);
                let _ = store.apply(&ack.case_id, factory.ctx(), factory.hall(), command).await;
            }
            expected.insert(ack.case_id.clone(), store.case_view(&ack.case_id).await.unwrap());
        }
        let counts = store.counts().await.unwrap();
        assert_eq!(counts.docs, 20);
        store.close();
    }
    let store = open(&path);
    for (case_id, view) in &expected {
        assert_eq!(&store.case_view(case_id).await.unwrap(), view);
    }
    let report = store.verify(None).await.unwrap();
    assert_eq!(report.docs, 20);
    assert!(report.problems.is_empty(), "{:?}", report.problems);
    assert_eq!(store.integrity_check().await.unwrap(), vec!["ok".to_owned()]);
}

#[tokio::test]
async fn a_refused_command_stores_nothing_and_a_duplicate_registration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("cases.db"));
    let mut factory = CaseFactory::new(3, actor(1), CaseFactory::start_2026());
    let mut case = factory.register();
    let copy = CaseDoc::load(&case.save(), actor(1)).unwrap();
    let ack = store.register(case).await.unwrap();
    let before = store.counts().await.unwrap();
    // Closing a just-registered case is refused by the case rules.
    let refused = store
        .apply(
            &ack.case_id,
            factory.ctx(),
            factory.hall(),
            zhaowo_crdt::Command::Close { reviewer: "x".into(), forced: false },
        )
        .await;
    assert!(matches!(refused, Err(WriteError::Command(_))), "{refused:?}");
    assert_eq!(store.counts().await.unwrap().local_seq, before.local_seq);
    assert!(matches!(store.register(copy).await, Err(WriteError::DuplicateCase(_))));
    assert!(matches!(store.case_view("01ARZ3NDEKTSV4RRFFQ69G5FAV").await, Err(ReadError::UnknownCase(_))));
}

#[tokio::test]
async fn remote_batches_are_idempotent_and_bump_the_counter_once_per_change() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("cases.db"));
    let mut factory = CaseFactory::new(11, actor(2), CaseFactory::start_2026());
    let mut batch = Vec::new();
    let mut total_changes = 0;
    for _ in 0..30 {
        let mut case = factory.register();
        factory.work(&mut case, 5);
        let remote = remote_of(&mut case);
        total_changes += remote.changes.len();
        batch.push(remote);
    }
    let report = store.apply_remote(batch.clone()).await.unwrap();
    assert_eq!(report.applied_changes, total_changes);
    assert_eq!(report.changed_docs, 30);
    assert!(report.rejected.is_empty(), "{:?}", report.rejected);
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.local_seq, total_changes as i64);
    let again = store.apply_remote(batch).await.unwrap();
    assert_eq!(again.applied_changes, 0);
    assert_eq!(again.duplicate_docs, 30);
    assert_eq!(store.counts().await.unwrap().local_seq, counts.local_seq, "a repeat stores nothing");
    let catalog = store.catalog_since(0, 100).await.unwrap();
    assert_eq!(catalog.len(), 30);
    assert!(catalog.windows(2).all(|pair| pair[0].local_seq < pair[1].local_seq));
    let report = store.verify(None).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test]
async fn garbage_from_a_peer_is_rejected_by_document_and_the_rest_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("cases.db"));
    let mut factory = CaseFactory::new(5, actor(2), CaseFactory::start_2026());
    let mut case = factory.register();
    let good = remote_of(&mut case);
    let mut bad = remote_of(&mut factory.register());
    let half = bad.changes[0].len() / 2;
    bad.changes[0].truncate(half);
    let not_an_id = RemoteChanges { case_id: "../etc/passwd".into(), changes: vec![vec![1, 2, 3]] };
    let report = store.apply_remote(vec![bad.clone(), good.clone(), not_an_id]).await.unwrap();
    assert_eq!(report.changed_docs, 1);
    assert_eq!(report.rejected.len(), 2, "{:?}", report.rejected);
    assert_eq!(report.rejected[0].case_id, bad.case_id);
    assert!(store.case_view(&good.case_id).await.is_ok());
}

#[tokio::test]
async fn compaction_replaces_change_rows_with_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.db");
    let mut options = StoreOptions::recommended(path.clone(), actor(1));
    options.compact_min_bytes = 0;
    let store = Store::open(options).unwrap();
    let mut factory = CaseFactory::new(13, actor(1), CaseFactory::start_2026());
    let ack = store.register(factory.register()).await.unwrap();
    for _ in 0..30 {
        let view = store.case_view(&ack.case_id).await.unwrap();
        let command = factory.next_command(&view);
        let _ = store.apply(&ack.case_id, factory.ctx(), factory.hall(), command).await;
    }
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.snapshots, 1, "{counts:?}");
    assert!(counts.change_rows < 30, "compaction deletes change rows: {counts:?}");
    let view = store.case_view(&ack.case_id).await.unwrap();
    store.close();
    let store = open(&path);
    assert_eq!(store.case_view(&ack.case_id).await.unwrap(), view);
    let report = store.verify(None).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

/// A second process (the CLI while `zhaowo run` holds the store) writes a case the first one has cached: the first
/// must neither serve the stale copy nor compact it over the other's change rows.
#[tokio::test]
async fn a_case_written_by_another_process_is_not_served_or_compacted_stale() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.db");
    let options = |n: u8| {
        let mut options = StoreOptions::recommended(path.clone(), actor(n));
        options.compact_min_bytes = 0; // every write compacts: the worst case for a stale copy
        options
    };
    let running = Store::open(options(1)).unwrap();
    let mut factory = CaseFactory::new(17, actor(1), CaseFactory::start_2026());
    let ack = running.register(factory.register()).await.unwrap();
    let note = |text: &str| zhaowo_crdt::Command::AddNote { text: text.into() };
    running.apply(&ack.case_id, factory.ctx(), factory.hall(), note("节点写的第一条")).await.unwrap();
    let cli = Store::open(options(2)).unwrap();
    cli.apply(&ack.case_id, factory.ctx(), factory.hall(), note("命令行写的")).await.unwrap();
    cli.close();
    let notes = |view: &CaseView| view.notes.clone();
    let seen = running.case_view(&ack.case_id).await.unwrap();
    assert!(
        notes(&seen).contains(&"命令行写的".to_owned()),
        "the running store served a stale copy: {:?}",
        notes(&seen)
    );
    running.apply(&ack.case_id, factory.ctx(), factory.hall(), note("节点写的第二条")).await.unwrap();
    running.close();
    let reopened = open(&path);
    let view = reopened.case_view(&ack.case_id).await.unwrap();
    assert_eq!(notes(&view).len(), 3, "a note was lost: {:?}", notes(&view));
    let report = reopened.verify(None).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test]
async fn a_newer_schema_and_a_foreign_file_are_refused_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.db");
    open(&path).close();
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION_LATEST + 1)).unwrap();
    }
    let error = Store::open(StoreOptions::recommended(path.clone(), actor(1))).unwrap_err();
    assert!(matches!(error, OpenStoreError::NewerSchema { found, .. } if found == SCHEMA_VERSION_LATEST + 1));
    let text = error.to_string();
    eprintln!("newer schema: {text}");
    assert!(text.contains("newer than this zhaowo understands") && text.contains("upgrade"), "{text}");

    let foreign = dir.path().join("other.db");
    rusqlite::Connection::open(&foreign).unwrap().execute_batch("CREATE TABLE t (x)").unwrap();
    let error = Store::open(StoreOptions::recommended(foreign, actor(1))).unwrap_err();
    eprintln!("foreign: {error}");
    assert!(matches!(error, OpenStoreError::NotAStore { .. }), "{error}");

    let text_file = dir.path().join("notes.txt");
    std::fs::write(&text_file, "this is not a database, just some text that is long enough to have a header").unwrap();
    let error = Store::open(StoreOptions::recommended(text_file, actor(1))).unwrap_err();
    eprintln!("text file: {error}");
    assert!(matches!(error, OpenStoreError::NotAStore { .. }), "{error}");
}

#[tokio::test]
async fn migrating_from_version_1_rebuilds_the_projections() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.db");
    let mut factory = CaseFactory::new(17, actor(1), CaseFactory::start_2026());
    let mut ids = Vec::new();
    {
        let mut options = StoreOptions::recommended(path.clone(), actor(1));
        options.schema_version_target = 1;
        let store = Store::open(options).unwrap();
        for _ in 0..10 {
            ids.push(store.register(factory.register()).await.unwrap().case_id);
        }
        assert_eq!(store.schema_version().await.unwrap(), 1);
        assert!(matches!(store.search("房产证", 10).await, Err(ReadError::NoProjections)));
    }
    let store = open(&path);
    assert_eq!(store.schema_version().await.unwrap(), SCHEMA_VERSION_LATEST);
    let page = store.register_page(RegisterQuery { limit: 50, ..RegisterQuery::default() }).await.unwrap();
    assert_eq!(page.rows.len(), 10);
    let report = store.verify(None).await.unwrap();
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test]
async fn a_corrupted_blob_is_reported_by_case_and_the_rest_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("cases.db"));
    let mut factory = CaseFactory::new(19, actor(1), CaseFactory::start_2026());
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(store.register(factory.register()).await.unwrap().case_id);
    }
    let victim = &ids[2];
    // A registration (sealed values do not compress) outgrows the compaction threshold at once: the case may be a
    // snapshot without change rows, so both are damaged.
    store.execute_raw(&format!("UPDATE changes SET bytes = CAST(substr(bytes, 1, 40) || x'00ff00ff' || substr(bytes, 45) AS BLOB) WHERE doc_id = '{victim}'")).await.unwrap();
    store.execute_raw(&format!("UPDATE docs SET snapshot = CAST(substr(snapshot, 1, 40) || x'00ff00ff' || substr(snapshot, 45) AS BLOB) WHERE doc_id = '{victim}' AND length(snapshot) > 0")).await.unwrap();
    let error = store.case_view(victim).await.unwrap_err();
    eprintln!("corrupt change row: {error}");
    assert!(matches!(&error, ReadError::Corrupt(corrupt) if &corrupt.case_id == victim), "{error}");
    for other in ids.iter().filter(|id| *id != victim) {
        store.case_view(other).await.expect("the other cases keep serving");
    }
    let page = store.register_page(RegisterQuery { limit: 10, ..RegisterQuery::default() }).await.unwrap();
    assert_eq!(page.rows.len(), 5);
    let report = store.verify(None).await.unwrap();
    for problem in &report.problems {
        eprintln!("verify: {problem}");
    }
    assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
    assert_eq!(&report.problems[0].case_id, victim);
    assert!(matches!(report.problems[0].kind, ProblemKind::Unreadable(_)));
    // A stale projection is found too, and reindex repairs it.
    store.execute_raw(&format!("UPDATE cases SET status = 'CLOSED' WHERE doc_id = '{}'", ids[0])).await.unwrap();
    let report = store.verify(None).await.unwrap();
    assert!(
        report.problems.iter().any(|p| p.case_id == ids[0] && p.kind == ProblemKind::StaleProjection),
        "{:?}",
        report.problems
    );
    let reindexed = store.reindex().await.unwrap();
    assert_eq!(reindexed.cases, 4);
    assert_eq!(reindexed.problems.len(), 1);
    let report = store.verify(None).await.unwrap();
    assert_eq!(report.problems.len(), 1, "only the damaged blob remains: {:?}", report.problems);
}

#[tokio::test]
async fn a_damaged_snapshot_is_reported_by_case_even_when_automerge_accepts_the_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = StoreOptions::recommended(dir.path().join("cases.db"), actor(1));
    options.compact_min_bytes = 0;
    let store = Store::open(options).unwrap();
    let mut factory = CaseFactory::new(29, actor(1), CaseFactory::start_2026());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut case = factory.register();
        factory.work(&mut case, 4);
        ids.push(case.case_id().as_str().to_owned());
        store.apply_remote(vec![remote_of(&mut case)]).await.unwrap();
    }
    assert_eq!(store.counts().await.unwrap().snapshots, 3);
    // A different valid document under the first case's id: automerge loads it, the recorded heads expose it.
    let mut impostor = factory.register();
    let impostor_bytes = impostor.save();
    let hex: String = impostor_bytes.iter().map(|byte| format!("{byte:02x}")).collect();
    store.execute_raw(&format!("UPDATE docs SET snapshot = x'{hex}' WHERE doc_id = '{}'", ids[0])).await.unwrap();
    // Plain garbage under the second.
    store
        .execute_raw(&format!("UPDATE docs SET snapshot = x'00112233445566778899' WHERE doc_id = '{}'", ids[1]))
        .await
        .unwrap();
    for victim in &ids[..2] {
        let error = store.case_view(victim).await.unwrap_err();
        eprintln!("damaged snapshot: {error}");
        assert!(matches!(&error, ReadError::Corrupt(corrupt) if &corrupt.case_id == victim), "{error}");
    }
    store.case_view(&ids[2]).await.expect("the undamaged case keeps serving");
    let report = store.verify(None).await.unwrap();
    let damaged: std::collections::BTreeSet<&str> =
        report.problems.iter().map(|problem| problem.case_id.as_str()).collect();
    assert_eq!(report.problems.len(), 2, "{:?}", report.problems);
    assert_eq!(damaged, [ids[0].as_str(), ids[1].as_str()].into_iter().collect(), "{:?}", report.problems);
}

#[tokio::test]
async fn backup_and_restore_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.db");
    let backup = dir.path().join("backup.db");
    let mut factory = CaseFactory::new(23, actor(1), CaseFactory::start_2026());
    let store = open(&path);
    let kept = store.register(factory.register()).await.unwrap().case_id;
    store.backup(&backup).await.unwrap();
    assert!(matches!(store.backup(&backup).await, Err(MaintenanceError::BackupExists(_))));
    let later = store.register(factory.register()).await.unwrap().case_id;
    store.close();
    Store::restore(&backup, &path).unwrap();
    let store = open(&path);
    assert!(store.case_view(&kept).await.is_ok());
    assert!(matches!(store.case_view(&later).await, Err(ReadError::UnknownCase(_))));
    assert!(store.verify(None).await.unwrap().problems.is_empty());
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, b"junk").unwrap();
    let error = Store::restore(&junk, &path).unwrap_err();
    eprintln!("restore junk: {error}");
    assert!(matches!(error, MaintenanceError::BadBackup { .. }));
}

/// The register page, search, overdue list and statistics equal a brute-force fold over every document.
fn check_reads_against_fold(seed: u64, n_cases: usize) {
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut options = StoreOptions::recommended(dir.path().join("cases.db"), actor(1));
        options.cache_docs_max = 8;
        // Both search plans: sort the matches, or walk the register index when there are many.
        options.search_sort_matches_max = if seed.is_multiple_of(2) { 0 } else { SEARCH_SORT_MATCHES_MAX };
        let store = Store::open(options).unwrap();
        let mut factory = CaseFactory::new(seed, actor(1), CaseFactory::start_2026());
        let mut views: Vec<CaseView> = Vec::new();
        let mut batch = Vec::new();
        for i in 0..n_cases {
            let mut case = factory.register();
            let steps = factory.below(8) as usize;
            factory.work(&mut case, steps);
            if factory.below(24) == 0 {
                let days = factory.below(10) as i64;
                factory.advance_ms(86_400_000 * days);
            }
            if i % 2 == 0 {
                store.register(case).await.unwrap();
            } else {
                batch.push(remote_of(&mut case));
            }
        }
        store.apply_remote(batch).await.unwrap();
        let page =
            store.register_page(RegisterQuery { limit: PAGE_ROWS_MAX, ..RegisterQuery::default() }).await.unwrap();
        for row in &page.rows {
            views.push(store.case_view(&row.case_id).await.unwrap());
        }
        assert_eq!(views.len(), n_cases);
        let rows: Vec<CaseRow> = views.iter().map(CaseRow::of).collect();
        let newest_first = |mut rows: Vec<CaseRow>| {
            rows.sort_by(|a, b| (b.registered_at_ms, &b.case_id).cmp(&(a.registered_at_ms, &a.case_id)));
            rows
        };
        let now_ms = factory.now_ms();
        let mut g = CaseFactory::new(seed ^ 0x5eed, actor(9), 0);
        for _ in 0..12 {
            let mut query = RegisterQuery { limit: 1 + g.below(7) as usize, ..RegisterQuery::default() };
            let sample = &rows[g.below(rows.len() as u64) as usize];
            if g.below(2) == 0 {
                query.status = zhaowo_crdt::model::Status::parse(&sample.status);
            }
            if g.below(2) == 0 {
                query.category = Some(sample.category.clone());
            }
            if g.below(3) == 0 {
                query.nature = zhaowo_crdt::model::Nature::parse(&sample.nature);
            }
            if g.below(3) == 0 {
                query.lead_unit = sample.lead_unit.clone();
            }
            if g.below(3) == 0 {
                query.registered_from_ms = Some(sample.registered_at_ms - 3 * 86_400_000);
                query.registered_to_ms = Some(sample.registered_at_ms + 86_400_000);
            }
            if g.below(3) == 0 {
                query.overdue_at_ms = Some(now_ms);
            }
            let expected = newest_first(
                rows.iter()
                    .filter(|row| query.status.is_none_or(|status| row.status == status.code()))
                    .filter(|row| query.category.as_ref().is_none_or(|category| &row.category == category))
                    .filter(|row| query.nature.is_none_or(|nature| row.nature == nature.code()))
                    .filter(|row| query.lead_unit.is_none() || row.lead_unit == query.lead_unit)
                    .filter(|row| query.registered_from_ms.is_none_or(|from| row.registered_at_ms >= from))
                    .filter(|row| query.registered_to_ms.is_none_or(|to| row.registered_at_ms < to))
                    .filter(|row| query.overdue_at_ms.is_none_or(|now| row.overdue(now)))
                    .cloned()
                    .collect(),
            );
            let mut got = Vec::new();
            let mut pages = 0;
            loop {
                let page = store.register_page(query.clone()).await.unwrap();
                pages += 1;
                got.extend(page.rows);
                match page.next {
                    Some(cursor) => query.after = Some(cursor),
                    None => break,
                }
                assert!(pages <= n_cases + 1, "paging does not end");
            }
            assert_eq!(got, expected, "register page differs from the fold for {query:?}");
        }
        // Overdue list, with the view's own definition.
        let expected: Vec<String> = {
            let mut overdue: Vec<(i64, String)> = views
                .iter()
                .filter(|view| view.overdue(now_ms))
                .map(|view| (view.effective_due_ms(now_ms), view.case_id.as_str().to_owned()))
                .collect();
            overdue.sort();
            overdue.into_iter().map(|(_, id)| id).collect()
        };
        let got: Vec<String> =
            store.overdue(now_ms, PAGE_ROWS_MAX).await.unwrap().into_iter().map(|row| row.case_id).collect();
        assert_eq!(got, expected, "overdue list differs from the fold");
        // Search: every term must occur in summary, detail, notes or replies.
        let queries = [
            "房产证",
            "户口",
            "后湖街道 材料",
            "call",
            "系统无法提交",
            "补充",
            "绝对不存在的词",
            "编号 7",
            "房产证 补充",
            "%",
            "政策",
        ];
        for text in queries {
            let texts: Vec<(SearchText, CaseRow)> =
                views.iter().map(|view| (SearchText::of(view), CaseRow::of(view))).collect();
            let expected = newest_first(
                texts.iter().filter(|(text_of, _)| text_of.matches(text)).map(|(_, row)| row.clone()).collect(),
            );
            let got = store.search(text, PAGE_ROWS_MAX).await.unwrap();
            assert_eq!(got, expected, "search {text:?} differs from the fold");
        }
        // Statistics for periods.
        for (from, to) in [((2026, 1, 1), (2026, 12, 31)), ((2026, 1, 5), (2026, 1, 9)), ((2026, 2, 1), (2026, 3, 31))]
        {
            let from = Date::new(from.0, from.1, from.2).unwrap();
            let to = Date::new(to.0, to.1, to.2).unwrap();
            let mut counts = StatsCounts::default();
            for row in rows.iter().filter(|row| {
                let day = Date::of_ms(row.registered_at_ms);
                day >= from && day <= to
            }) {
                let c = row.stats();
                counts.registered += c.registered;
                counts.closed += c.closed;
                counts.closed_on_time += c.closed_on_time;
                counts.responded += c.responded;
                counts.responded_on_time += c.responded_on_time;
                counts.rated += c.rated;
                counts.rating_sum += c.rating_sum;
                counts.satisfied += c.satisfied;
            }
            let got = store.statistics(from, to).await.unwrap();
            assert_eq!(got.counts, counts, "statistics {from:?}..{to:?}");
            // The 督查科's figures (issue 15 §6): the store's grouped sums equal the facts of the fold's views.
            use zhaowo_crdt::kpi::{CaseFacts, GroupBy, Tally};
            let in_period: Vec<&CaseView> =
                views.iter().filter(|view| (from..=to).contains(&Date::of_ms(view.registered_at_ms))).collect();
            for group in [None].into_iter().chain(GroupBy::ALL.iter().copied().map(Some)) {
                let mut expected: BTreeMap<String, Tally> = BTreeMap::new();
                for view in &in_period {
                    let keys = group.map_or_else(|| vec!["全部".to_owned()], |group| group.keys(view));
                    for key in keys {
                        *expected.entry(key).or_default() += &CaseFacts::of(view);
                    }
                }
                let got: BTreeMap<String, Tally> =
                    store.kpi_tallies(from, to, group).await.unwrap().into_iter().collect();
                assert_eq!(got, expected, "KPI tallies by {:?} {from:?}..{to:?}", group.map(GroupBy::code));
            }
        }
        let report = store.verify(None).await.unwrap();
        assert!(report.problems.is_empty(), "{:?}", report.problems);
    });
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig { cases: 16, ..Default::default() })]
    #[test]
    fn reads_match_a_brute_force_fold(seed in 1u64.., n_cases in 1usize..60) {
        check_reads_against_fold(seed, n_cases);
    }
}

#[test]
fn both_search_plans_match_the_fold() {
    // An even seed walks the register index for every search, an odd one sorts the matches.
    check_reads_against_fold(2, 40);
    check_reads_against_fold(3, 40);
}

/// Issue 12 §2: the store allocates 登记编号 in the registering transaction. Two handles on one file (as the CLI
/// and `zhaowo run` are) register at once from several tasks each: every number is distinct and they run 1..=n.
/// A pre-numbered registration of a number already held is refused; a case arriving from a peer with a held number
/// is kept beside it, listed as repeated by the store and by `verify`, and the next allocation goes past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_allocates_registration_numbers_and_never_repeats_one() {
    const TASKS_PER_HANDLE: u64 = 4;
    const CASES_PER_TASK: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.db");
    let handles = [std::sync::Arc::new(open(&path)), std::sync::Arc::new(open(&path))];
    let mut tasks = Vec::new();
    for (h, store) in handles.iter().enumerate() {
        for t in 0..TASKS_PER_HANDLE {
            let store = store.clone();
            let mut factory = CaseFactory::new(100 + h as u64 * 10 + t, actor(1), CaseFactory::start_2026());
            tasks.push(tokio::spawn(async move {
                let mut numbers = Vec::new();
                for _ in 0..CASES_PER_TASK {
                    numbers.push(factory.register_into(&store).await.expect("registered").reg_no);
                }
                numbers
            }));
        }
    }
    let mut numbers = Vec::new();
    for task in tasks {
        numbers.extend(task.await.unwrap());
    }
    let total = numbers.len();
    let mut seqs: Vec<u32> = numbers.iter().map(|reg_no| reg_no.seq).collect();
    seqs.sort();
    seqs.dedup();
    println!("register allocation handles=2 tasks=8 registered={total} distinct={}", seqs.len());
    assert_eq!(seqs, (1..=total as u32).collect::<Vec<_>>(), "every number once, none skipped");
    let store = &handles[0];
    for reg_no in &numbers[..3] {
        let case_id = store.case_id_by_reg_no(reg_no).await.unwrap().expect("found by number");
        assert_eq!(store.case_view(&case_id).await.unwrap().reg_no, *reg_no);
    }
    // A pre-numbered registration of a held number (another factory of the same window starts at 1).
    let mut other = CaseFactory::new(999, actor(1), CaseFactory::start_2026());
    let mut clash = other.register();
    let refused = store.register(CaseDoc::load(&clash.save(), actor(2)).unwrap()).await;
    assert!(matches!(refused, Err(WriteError::RegNoTaken { .. })), "{refused:?}");
    assert!(store.repeated_numbers().await.unwrap().is_empty());
    // The same case from a peer: stored beside the local holder, reported, never a sync failure.
    let report = store.apply_remote(vec![remote_of(&mut clash)]).await.unwrap();
    assert_eq!(report.changed_docs, 1);
    let repeated = store.repeated_numbers().await.unwrap();
    assert_eq!(repeated.len(), 1);
    assert_eq!(repeated[0].case_ids.len(), 2);
    let verify = store.verify(None).await.unwrap();
    assert!(verify.problems.iter().any(|p| matches!(p.kind, ProblemKind::RepeatedNumber { .. })), "{verify:?}");
    // The local holder keeps the number for lookups; the next allocation is past every held number.
    let local = store.case_id_by_reg_no(&clash.view().reg_no).await.unwrap().unwrap();
    assert_ne!(local, clash.case_id().as_str());
    let mut factory = CaseFactory::new(5, actor(1), CaseFactory::start_2026());
    assert_eq!(factory.register_into(store).await.unwrap().reg_no.seq, total as u32 + 1);
    println!("register repeated from a peer: kept=2 reported_by_verify=1 next_seq={}", total + 1);
}

/// Issue 12 §3: counts by status, overdue counts and the list of cases with open conflicts come from the store's
/// projections, and match a fold over every case.
#[tokio::test]
async fn counts_and_the_conflict_list_come_from_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("cases.db"));
    let mut factory = CaseFactory::new(11, actor(1), CaseFactory::start_2026());
    let mut ids = Vec::new();
    for _ in 0..30 {
        let ack = factory.register_into(&store).await.unwrap().ack;
        for _ in 0..4 {
            let view = store.case_view(&ack.case_id).await.unwrap();
            let command = factory.next_command(&view);
            let _ = store.apply(&ack.case_id, factory.ctx(), factory.hall(), command).await;
        }
        ids.push(ack.case_id);
    }
    // Two offline copies of one case edit the same field; the merge leaves a field conflict open.
    let target = ids[3].clone();
    let changes = store.changes_since(&target, Vec::new()).await.unwrap();
    let mut offline = automerge::AutoCommit::new();
    for change in &changes {
        offline.load_incremental(change).unwrap();
    }
    let mut offline = CaseDoc::from_automerge(offline.with_actor(actor(9))).unwrap();
    let summary = |text: &str| zhaowo_crdt::Command::EditField {
        field: zhaowo_crdt::model::EditableField::Summary,
        value: text.to_owned(),
    };
    let ctx = factory.ctx();
    let _ = offline.apply(&ctx, &factory.hall(), summary("离线修改的摘要"));
    store.apply(&target, factory.ctx(), factory.hall(), summary("窗口修改的摘要")).await.unwrap();
    store.apply_remote(vec![remote_of(&mut offline)]).await.unwrap();

    let mut by_status: BTreeMap<String, u64> = BTreeMap::new();
    let mut conflicted = BTreeMap::new();
    for id in &ids {
        let view = store.case_view(id).await.unwrap();
        *by_status.entry(view.status.code().to_owned()).or_default() += 1;
        if !view.conflicts.is_empty() {
            conflicted.insert(id.clone(), view.conflicts.len() as u64);
        }
    }
    let counts = store.status_counts().await.unwrap();
    for (status, count) in &counts {
        assert_eq!(by_status.get(status).copied().unwrap_or(0), *count, "{status}");
    }
    let list = store.conflicts(CONFLICTS_LISTED_MAX).await.unwrap();
    let listed: BTreeMap<String, u64> = list.rows.iter().map(|(row, n)| (row.case_id.clone(), *n)).collect();
    assert_eq!(listed, conflicted);
    assert!(listed.contains_key(&target), "the merged field conflict is listed");
    let far_future = factory.now_ms() + 400 * 86_400_000;
    let overdue = store.overdue(far_future, PAGE_ROWS_MAX).await.unwrap().len() as u64;
    assert_eq!(store.overdue_count(far_future).await.unwrap(), overdue);
    assert!(store.verify(None).await.unwrap().problems.is_empty());
    println!(
        "store counts cases=30 statuses={} conflicted_cases={} open_conflicts={} overdue_later={overdue}",
        counts.values().filter(|&&n| n > 0).count(),
        list.cases,
        list.conflicts
    );
}

/// Issue 12 §3: 并案 and 解除并案 write both documents in one transaction; a refused 并案 changes neither.
#[tokio::test]
async fn mark_duplicate_and_unmerge_write_both_cases_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("cases.db"));
    let mut factory = CaseFactory::new(12, actor(1), CaseFactory::start_2026());
    let master = factory.register_into(&store).await.unwrap().ack.case_id;
    let duplicate = factory.register_into(&store).await.unwrap().ack.case_id;
    let seq_before = store.counts().await.unwrap().local_seq;
    let refused = store.mark_duplicate(&duplicate, &duplicate, factory.ctx()).await;
    assert!(matches!(refused, Err(WriteError::Command(_))), "{refused:?}");
    assert_eq!(store.counts().await.unwrap().local_seq, seq_before, "a refused 并案 stores nothing");
    let acks = store.mark_duplicate(&duplicate, &master, factory.ctx()).await.unwrap();
    assert!(acks.second.is_some());
    let (dup_view, master_view) = (store.case_view(&duplicate).await.unwrap(), store.case_view(&master).await.unwrap());
    assert_eq!(dup_view.duplicate_of.as_ref().map(|id| id.as_str()), Some(master.as_str()));
    assert!(master_view.duplicates.iter().any(|id| id.as_str() == duplicate));
    // Reversed now would make a cycle: refused, nothing stored.
    let seq = store.counts().await.unwrap().local_seq;
    assert!(store.mark_duplicate(&master, &duplicate, factory.ctx()).await.is_err());
    assert_eq!(store.counts().await.unwrap().local_seq, seq);
    // 解除并案 is the 督查科's.
    let mut supervision = factory.ctx();
    supervision.author.role = zhaowo_crdt::model::Role::Supervision;
    let acks = store.unmerge(&duplicate, &master, supervision, factory.hall()).await.unwrap();
    assert!(acks.second.is_some());
    assert!(store.case_view(&duplicate).await.unwrap().duplicate_of.is_none());
    assert!(store.case_view(&master).await.unwrap().duplicates.is_empty());
    println!("并案 and 解除并案: 2 documents per transaction, refusals stored nothing");
}

/// Issue 14 §1: a damaged document makes `reindex` list what it skipped (the CLI exits 1 on it), and `verify`
/// quarantines it so sync does not send it.
#[tokio::test]
async fn reindex_lists_a_damaged_document_and_verify_quarantines_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir.path().join("cases.db"));
    let mut factory = CaseFactory::new(13, actor(1), CaseFactory::start_2026());
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(factory.register_into(&store).await.unwrap().ack.case_id);
    }
    let damaged = ids[5].clone();
    store
        .execute_raw(&format!(
            "UPDATE changes SET bytes = CAST(substr(bytes, 1, 20) || \
                 CASE WHEN substr(bytes, 21, 1) = x'00' THEN x'01' ELSE x'00' END || substr(bytes, 22) AS BLOB) \
             WHERE doc_id = '{damaged}'"
        ))
        .await
        .unwrap();
    // The registration may be stored as a snapshot only (sealed values outgrow the compaction threshold).
    store
        .execute_raw(&format!(
            "UPDATE docs SET snapshot = CAST(substr(snapshot, 1, 20) || \
                 CASE WHEN substr(snapshot, 21, 1) = x'00' THEN x'01' ELSE x'00' END || substr(snapshot, 22) AS BLOB) \
             WHERE doc_id = '{damaged}' AND length(snapshot) > 0"
        ))
        .await
        .unwrap();
    let report = store.reindex().await.unwrap();
    assert_eq!(report.cases, 11);
    assert_eq!(report.problems.iter().map(|p| p.case_id.clone()).collect::<Vec<_>>(), vec![damaged.clone()]);
    let verify = store.verify(None).await.unwrap();
    assert!(verify.problems.iter().any(|p| p.case_id == damaged), "{verify:?}");
    let quarantined = store.quarantined().await.unwrap();
    assert_eq!(quarantined.docs.iter().map(|q| q.case_id.clone()).collect::<Vec<_>>(), vec![damaged]);
    println!(
        "damaged document: reindexed={} skipped={} verify_problems={} quarantined={}",
        report.cases,
        report.problems.len(),
        verify.problems.len(),
        quarantined.count
    );
}

/// The bundle fuzz target's seeds stay readable by this version (issue 13 §4): the inner seed decodes, and the age seed
/// decrypts with the fixed key the target uses (the X25519 scalar of the Ed25519 key `[0x42; 32]`) and decodes to the
/// same bundle. `ZHAOWO_WRITE_SEEDS=1` writes the age seed afresh from the inner one.
#[test]
fn the_bundle_fuzz_seeds_open_and_decode() {
    let seeds = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crdt/fuzz/seeds/bundle_file");
    let inner = std::fs::read(seeds.join("one-case-three-changes.bundle")).unwrap();
    let bundle = zhaowo_crdt::bundle::decode(&inner).unwrap();
    let key = ed25519_dalek::SigningKey::from_bytes(&[0x42; 32]);
    let recipient = zhaowo_node::identity::x25519_public(&key.verifying_key().to_bytes()).unwrap();
    let sealed = seeds.join("one-case-three-changes.age");
    if std::env::var_os("ZHAOWO_WRITE_SEEDS").is_some() {
        std::fs::write(&sealed, zhaowo_node::import::encrypt_bundle(&inner, &[recipient]).unwrap()).unwrap();
    }
    let bytes = std::fs::read(&sealed).unwrap();
    assert!(bytes.starts_with(zhaowo_node::import::AGE_HEADER));
    let opened = zhaowo_node::import::decrypt_bundle(&bytes, &key.to_scalar_bytes()).unwrap();
    assert_eq!(zhaowo_crdt::bundle::decode(&opened).unwrap(), bundle);
    let stranger = ed25519_dalek::SigningKey::from_bytes(&[0x43; 32]).to_scalar_bytes();
    assert_eq!(
        zhaowo_node::import::decrypt_bundle(&bytes, &stranger),
        Err(zhaowo_node::import::OpenBundleError::NotARecipient)
    );
}

/// Issue 13 §6: case keys are wrapped at rest under the node key. A store written without a node key (a tool) has its
/// clear rows wrapped when a node opens it; the same file opened under another node key (a backup restored into a
/// newly enrolled node) drops the rows it cannot open, so the node asks its peers for them again instead of believing
/// it holds them.
#[tokio::test]
async fn case_keys_are_wrapped_at_rest_and_another_node_key_drops_them() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cases.db");
    let mut factory = CaseFactory::new(31, actor(1), CaseFactory::start_2026());
    let open_with = |wrap: Option<[u8; 32]>| {
        let mut options = StoreOptions::recommended(path.clone(), actor(1));
        options.key_wrap = wrap.map(|key| KeyWrap::new(&key));
        Store::open(options).expect("open store")
    };
    let rows = || -> Vec<(String, Vec<u8>)> {
        let db = rusqlite::Connection::open(&path).unwrap();
        let mut statement = db.prepare("SELECT doc_id, key FROM case_keys ORDER BY doc_id").unwrap();
        statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    let store = open_with(None);
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(store.register(factory.register()).await.unwrap().case_id);
    }
    let detail = store.case_view(&ids[0]).await.unwrap().detail;
    store.close();
    let clear = rows();
    assert!(clear.iter().all(|(_, key)| key.len() == 32), "a tool's store holds clear rows");

    let store = open_with(Some([7; 32]));
    let wrapped = rows();
    assert_eq!(wrapped.len(), 3);
    assert!(wrapped.iter().all(|(_, key)| key.len() != 32), "the node wrapped the clear rows at open");
    let clear_keys: Vec<&Vec<u8>> = clear.iter().map(|(_, key)| key).collect();
    let file = std::fs::read(&path).unwrap();
    let in_file = clear_keys.iter().filter(|key| file.windows(32).any(|window| window == key.as_slice())).count();
    assert_eq!(in_file, 0, "a clear key is still in the database file (secure_delete)");
    let view = store.case_view(&ids[0]).await.unwrap();
    assert!(!view.personal.sealed && view.detail == detail, "the node reads its cases through wrapped keys");
    assert_eq!(store.case_key_count().await.unwrap(), 3);
    store.close();

    let store = open_with(Some([8; 32]));
    assert_eq!(store.case_key_count().await.unwrap(), 0, "rows of another node key were kept");
    assert!(store.case_view(&ids[0]).await.unwrap().personal.sealed, "a case opened without its key");
    store.close();
    println!(
        "keys at rest (store): 3 clear rows wrapped at open, 0/3 clear keys left in the file, 3/3 readable; under \
         another node key: 3 dropped, cases sealed"
    );
}
