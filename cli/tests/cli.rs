//! The `zhaowo` binary, run for real: exit code, stdout and stderr of the success and error paths of every command
//! that exists today.
//!
//! (These tests live beside the binary rather than in `tests/`, because Cargo only hands a package's own tests the
//! path of its binaries: `CARGO_BIN_EXE_zhaowo`.)

#![allow(clippy::print_stdout)]

use std::path::Path;
use std::process::Output;

fn zhaowo(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_zhaowo"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("ZHAOWO_DIR")
        .env_remove("ZHAOWO_STAFF")
        .output()
        .expect("the zhaowo binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Runs a command that must succeed and returns its stdout.
fn ok(dir: &Path, args: &[&str]) -> String {
    let output = zhaowo(dir, args);
    assert_eq!(output.status.code(), Some(0), "zhaowo {args:?} failed:\n{}", stderr(&output));
    stdout(&output)
}

/// Runs a command that must fail with `code` and returns its stderr.
fn fails(dir: &Path, args: &[&str], code: i32) -> String {
    let output = zhaowo(dir, args);
    assert_eq!(
        output.status.code(),
        Some(code),
        "zhaowo {args:?}: stdout {} stderr {}",
        stdout(&output),
        stderr(&output)
    );
    assert!(!stderr(&output).contains("panicked"), "zhaowo {args:?} panicked: {}", stderr(&output));
    stderr(&output)
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|error| panic!("not JSON ({error}): {text}"))
}

fn read_workbook(path: &Path) -> Vec<Vec<String>> {
    use calamine::Reader;
    let mut workbook: calamine::Xlsx<_> = calamine::open_workbook(path).expect("the export opens as a workbook");
    let range = workbook.worksheet_range("登记簿").expect("a 登记簿 sheet");
    range.rows().map(|row| row.iter().map(|cell| cell.to_string()).collect()).collect()
}

fn new_hall(dir: &Path) -> String {
    let out =
        ok(dir, &["init", "--hall", "江岸区政务服务中心", "--window", "BBC01", "--name", "办不成事窗口", "--json"]);
    json(&out)["node_id"].as_str().unwrap().to_owned()
}

fn register(dir: &Path) -> (String, String) {
    let out = ok(
        dir,
        &[
            "case",
            "new",
            "--nature",
            "求助",
            "--category",
            "BDC",
            "--summary",
            "老房登记为一套，实为两套",
            "--detail",
            "李先生名下房改房登记有误",
            "--name",
            "李建国",
            "--phone",
            "13812341234",
            "--callback-ok",
            "--json",
        ],
    );
    let value = json(&out);
    (value["reg_no"].as_str().unwrap().to_owned(), value["query_code"].as_str().unwrap().to_owned())
}

#[test]
fn help_and_version_document_the_exit_status() {
    let dir = tempfile::tempdir().unwrap();
    let help = ok(dir.path(), &["--help"]);
    assert!(help.contains("EXIT STATUS") && help.contains("case") && help.contains("init"));
    assert!(ok(dir.path(), &["--version"]).starts_with("zhaowo "));
    let error = fails(dir.path(), &["no-such-command"], 2);
    assert!(error.contains("unrecognized subcommand"));
}

#[test]
fn qr_codes_of_window_pages() {
    let dir = tempfile::tempdir().unwrap();
    new_hall(dir.path());
    let terminal = ok(dir.path(), &["qr", "--window", "BBC01", "--base", "http://192.168.1.10:7422"]);
    assert!(terminal.contains('█') && terminal.contains("http://192.168.1.10:7422/r/BBC01"));
    let svg = dir.path().join("bbc01.svg");
    ok(dir.path(), &["qr", "--window", "BBC01", "--out", svg.to_str().unwrap()]);
    assert!(std::fs::read_to_string(&svg).unwrap().starts_with("<?xml"));
    assert!(fails(dir.path(), &["qr", "--window", "NOPE"], 1).contains("no window `NOPE`"));
    let png = dir.path().join("bbc01.png");
    ok(dir.path(), &["qr", "--window", "BBC01", "--out", png.to_str().unwrap()]);
    let bytes = std::fs::read(&png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    assert!(width >= 200 && width % 8 == 0, "a square code of whole 8-px modules, got {width} px");
    assert!(
        bytes.ends_with(&[0, 0, 0, 0, b'I', b'E', b'N', b'D', 0xae, 0x42, 0x60, 0x82]),
        "an IEND chunk with its CRC"
    );
    assert!(fails(dir.path(), &["qr", "--window", "BBC01", "--out", "x.gif"], 1).contains("write a .svg or .png"));
    assert!(fails(dir.path(), &["qr", "--window", "BBC01", "--base", "ftp://x"], 1).contains("not an http"));
}

#[test]
fn init_creates_a_hall_once_and_status_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    let node_id = new_hall(dir.path());
    assert_eq!(node_id.len(), 64);
    let error = fails(dir.path(), &["init", "--window", "BBC01"], 2);
    assert!(
        error.contains("error: failed to create a node")
            && error.contains("already holds a zhaowo node")
            && error.contains("hint:")
    );
    let status = json(&ok(dir.path(), &["status", "--json"]));
    assert_eq!(status["node_id"], node_id);
    assert_eq!(status["admin"], true);
    assert_eq!(status["members"].as_array().unwrap().len(), 1);
    let key_mode = std::fs::metadata(dir.path().join("node.key"))
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777);
    assert_eq!(key_mode.unwrap(), 0o600);
    let error = fails(&dir.path().join("missing"), &["status"], 2);
    assert!(error.contains("holds no zhaowo node") && error.contains("hint: create one"));
    let error = fails(dir.path(), &["init", "--window", "bad code!"], 2);
    assert!(error.contains("already holds") || error.contains("window code"));
}

#[test]
fn a_case_goes_through_its_life_from_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    new_hall(dir.path());
    let (reg_no, code) = register(dir.path());
    assert_eq!(reg_no, format!("BBC01-{}-0001", &reg_no[6..10]));
    assert_eq!(code.len(), 8);
    let list = ok(dir.path(), &["case", "list"]);
    assert!(list.contains(&reg_no) && list.contains("已登记"), "{list}");
    let found = json(&ok(dir.path(), &["case", "list", "--search", "房改房", "--json"]));
    assert_eq!(found.as_array().unwrap().len(), 1);
    for args in [
        vec!["case", "dispatch", &reg_no],
        vec!["case", "sign", &reg_no, "--assignee", "王工"],
        vec!["case", "consult", &reg_no, "--units", "BDC,FG,GA", "--minutes", "三方会诊", "--site-visit"],
        vec!["case", "note", &reg_no, "已联系原房改单位"],
        vec!["case", "reply", &reg_no, "正在办理"],
        vec!["case", "resolve", &reg_no, "--result", "已办成", "--reply", "两本证书已办好"],
    ] {
        ok(dir.path(), &args);
    }
    // Closing needs a callback first: an expected failure, exit 1, nothing changed.
    let error = fails(dir.path(), &["case", "close", &reg_no, "--reviewer", "陈科长"], 1);
    assert!(error.contains("refused: close needs a callback first"), "{error}");
    ok(dir.path(), &["case", "callback", &reg_no, "--outcome", "已解决", "--rating", "5"]);
    let closed = json(&ok(dir.path(), &["case", "close", &reg_no, "--reviewer", "陈科长", "--json"]));
    assert_eq!(closed["status"], "CLOSED");
    let view = json(&ok(dir.path(), &["case", "show", &reg_no, "--json"]));
    assert_eq!(view["status"], "CLOSED");
    assert_eq!(view["personal"]["phone"], "138****1234");
    assert_eq!(view["timeline"].as_array().unwrap().len(), 9);
    let text = ok(dir.path(), &["case", "show", &reg_no]);
    assert!(text.contains("会诊") && text.contains("已办结") && !text.contains("13812341234"));
    let stats = json(&ok(dir.path(), &["stats", "--json"]));
    assert_eq!((stats["registered"].as_i64(), stats["closed"].as_i64()), (Some(1), Some(1)));
    let conflicts = zhaowo(dir.path(), &["conflicts", "list"]);
    assert_eq!(conflicts.status.code(), Some(0));
    assert!(stderr(&conflicts).contains("0 open conflicts"));
}

#[test]
fn bad_arguments_and_unknown_cases_fail_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // The node that sets up a hall must be an admin (peers take hall changes from admins only); nothing is created.
    let error =
        fails(dir.path(), &["init", "--hall", "江岸区政务服务中心", "--window", "BBC01", "--role", "window"], 1);
    assert!(error.contains("must have the role admin"), "{error}");
    assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "a refused init wrote files");
    new_hall(dir.path());
    let error = fails(
        dir.path(),
        &["case", "new", "--nature", "闲聊", "--category", "BDC", "--summary", "x", "--detail", "y"],
        2,
    );
    assert!(error.contains("unknown nature `闲聊`"), "{error}");
    let error = fails(
        dir.path(),
        &["case", "new", "--nature", "咨询", "--category", "NOPE", "--summary", "x", "--detail", "y"],
        1,
    );
    assert!(error.contains("unknown category `NOPE`"), "{error}");
    let error = fails(
        dir.path(),
        &["case", "new", "--nature", "咨询", "--category", "BDC", "--summary", "请回电13812341234", "--detail", "y"],
        1,
    );
    assert!(error.contains("must not contain a phone"), "{error}");
    let error = fails(
        dir.path(),
        &["case", "new", "--nature", "咨询", "--category", "BDC", "--summary", "x", "--detail", "y", "--phone", "123"],
        1,
    );
    assert!(error.contains("invalid phone number"), "{error}");
    let error = fails(dir.path(), &["case", "show", "BBC01-2026-0099"], 1);
    assert!(error.contains("no case BBC01-2026-0099"), "{error}");
    let error = fails(dir.path(), &["case", "show", "not-a-case"], 1);
    assert!(error.contains("neither a registration number"), "{error}");
    let error = fails(dir.path(), &["stats", "--from", "2026-13-01"], 2);
    assert!(error.contains("is not a date"), "{error}");
    let (reg_no, _) = register(dir.path());
    let error = fails(dir.path(), &["case", "extend", &reg_no], 1);
    assert!(error.contains("--days N"), "{error}");
    let error = fails(dir.path(), &["case", "supervise", &reg_no, "--level", "催办"], 1);
    assert!(
        error.contains("refused: a admin node may not supervise") || error.contains("may not supervise"),
        "{error}"
    );
}

#[test]
fn a_second_node_enrolls_and_joins_and_bad_enrollments_are_refused() {
    let admin = tempfile::tempdir().unwrap();
    let laptop = tempfile::tempdir().unwrap();
    new_hall(admin.path());
    let laptop_id =
        json(&ok(laptop.path(), &["init", "--window", "V01", "--json"]))["node_id"].as_str().unwrap().to_owned();
    let file = admin.path().join("laptop.enrollment");
    let file_arg = file.to_str().unwrap();
    ok(
        admin.path(),
        &["enroll", &laptop_id, "--window", "V01", "--role", "volunteer", "--name", "帮帮哥笔记本", "--out", file_arg],
    );
    // Enrollment for a node id that is not hex, and a window already held, are refused.
    let error = fails(admin.path(), &["enroll", "xyz", "--window", "V02", "--role", "window", "--out", file_arg], 1);
    assert!(error.contains("is not a node id"), "{error}");
    let error = fails(
        admin.path(),
        &["enroll", &"ab".repeat(32), "--window", "V02", "--role", "window", "--out", "/dev/null"],
        1,
    );
    assert!(error.contains("malformed record: node key"), "{error}");
    let spare = tempfile::tempdir().unwrap();
    let other = json(&ok(spare.path(), &["init", "--window", "W9", "--json"]))["node_id"].as_str().unwrap().to_owned();
    let error =
        fails(admin.path(), &["enroll", &other, "--window", "V01", "--role", "window", "--out", "/dev/null"], 1);
    assert!(error.contains("already held"), "{error}");
    // Only the admin node can enroll.
    let error =
        fails(laptop.path(), &["enroll", &other, "--window", "V09", "--role", "window", "--out", "/dev/null"], 1);
    assert!(error.contains("hall root key") && error.contains("hint:"), "{error}");
    // A damaged file and a file for another node are refused; nothing changes.
    let damaged = laptop.path().join("damaged.json");
    std::fs::write(&damaged, "{\"format\": 1").unwrap();
    let error = fails(laptop.path(), &["join", damaged.to_str().unwrap()], 1);
    assert!(error.contains("not an enrollment file"), "{error}");
    let third = tempfile::tempdir().unwrap();
    ok(third.path(), &["init", "--window", "W3"]);
    let error = fails(third.path(), &["join", file_arg], 1);
    assert!(error.contains("the enrollment is for node"), "{error}");
    ok(laptop.path(), &["join", file_arg]);
    let status = json(&ok(laptop.path(), &["status", "--json"]));
    assert_eq!((status["window"].as_str(), status["role"].as_str()), (Some("V01"), Some("volunteer")));
    assert_eq!(status["members"].as_array().unwrap().len(), 2);
    assert_eq!(status["peers"].as_array().unwrap().len(), 1, "the laptop knows its first peer");
    ok(admin.path(), &["revoke", &laptop_id, "--reason", "笔记本遗失"]);
    let status = json(&ok(admin.path(), &["status", "--json"]));
    assert_eq!(status["members"].as_array().unwrap().len(), 1);
}

#[test]
fn export_masks_personal_data_and_maintenance_commands_work() {
    let dir = tempfile::tempdir().unwrap();
    new_hall(dir.path());
    let (reg_no, _) = register(dir.path());
    let csv = dir.path().join("register.csv");
    ok(dir.path(), &["export", "--format", "csv", "--out", csv.to_str().unwrap()]);
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with('\u{feff}') && text.contains("登记编号,登记时间") && text.contains(&reg_no));
    assert!(text.contains("138****1234") && !text.contains("13812341234") && text.contains("李**"));
    let xlsx = dir.path().join("register.xlsx");
    ok(dir.path(), &["export", "--format", "xlsx", "--out", xlsx.to_str().unwrap()]);
    let cells = read_workbook(&xlsx);
    assert_eq!(cells[0][0], "登记编号");
    assert_eq!(cells[1][0], reg_no);
    assert!(cells.iter().flatten().any(|cell| cell == "138****1234"));
    assert!(!cells.iter().flatten().any(|cell| cell.contains("13812341234")), "no unmasked phone in the workbook");
    // Unmasked: the full number, and a reveal event in the case.
    ok(dir.path(), &["export", "--format", "xlsx", "--unmasked", "--out", xlsx.to_str().unwrap()]);
    assert!(read_workbook(&xlsx).iter().flatten().any(|cell| cell == "13812341234"));
    let view = json(&ok(dir.path(), &["case", "show", &reg_no, "--json"]));
    assert_eq!(view["pi_reveals"], 1);
    let error = fails(dir.path(), &["export", "--format", "pdf", "--out", "/dev/null"], 2);
    assert!(error.contains("invalid value 'pdf'"), "{error}");
    let verify = zhaowo(dir.path(), &["verify"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stderr(&verify));
    assert!(stderr(&verify).contains("1 documents: 0 problems"));
    assert!(json(&ok(dir.path(), &["reindex", "--json"]))["cases"] == 1);
    let backup = dir.path().join("backup.db");
    ok(dir.path(), &["backup", "--out", backup.to_str().unwrap()]);
    ok(dir.path(), &["case", "note", &reg_no, "备份之后的备注"]);
    ok(dir.path(), &["restore", backup.to_str().unwrap()]);
    let view = json(&ok(dir.path(), &["case", "show", &reg_no, "--json"]));
    assert_eq!(view["notes"].as_array().unwrap().len(), 0, "the restore brought back the state of the backup");
    let doc = dir.path().join("case.automerge");
    ok(dir.path(), &["doc", "export", &reg_no, "--out", doc.to_str().unwrap()]);
    let bytes = std::fs::read(&doc).unwrap();
    let case = zhaowo_crdt::CaseDoc::load(&bytes, automerge::ActorId::from(vec![1; 16]))
        .expect("the exported document is a case");
    assert_eq!(case.view().reg_no.to_string(), reg_no);
}

/// The offline laptop and the conflicting window, end to end: the case travels as an Automerge document (`doc export`
/// → `doc import`), the laptop records a home visit and a note offline, a window PC signs the case in while the admin
/// reassigns it, and the admin merges both data directories: the visit arrives, the conflict is listed and resolved.
#[test]
fn offline_work_merges_back_and_its_conflict_is_listed_and_resolved() {
    let admin = tempfile::tempdir().unwrap();
    let laptop = tempfile::tempdir().unwrap();
    let window = tempfile::tempdir().unwrap();
    new_hall(admin.path());
    for (dir, code, role) in [(laptop.path(), "V01", "volunteer"), (window.path(), "2F03", "window")] {
        let node_id = json(&ok(dir, &["init", "--window", code, "--json"]))["node_id"].as_str().unwrap().to_owned();
        let file = admin.path().join(format!("{code}.enrollment"));
        ok(admin.path(), &["enroll", &node_id, "--window", code, "--role", role, "--out", file.to_str().unwrap()]);
        ok(dir, &["join", file.to_str().unwrap()]);
    }
    let (reg_no, _) = register(admin.path());
    ok(admin.path(), &["case", "dispatch", &reg_no]);
    let doc = admin.path().join("case.automerge");
    ok(admin.path(), &["doc", "export", &reg_no, "--out", doc.to_str().unwrap()]);
    for dir in [laptop.path(), window.path()] {
        let imported = json(&ok(dir, &["doc", "import", doc.to_str().unwrap(), "--json"]));
        assert_eq!(imported["added"][0], reg_no);
    }
    // Offline: the laptop visits, the window signs in, the admin reassigns.
    ok(
        laptop.path(),
        &["--staff", "帮帮哥小周", "case", "visit", &reg_no, "--volunteers", "小周,小李", "--outcome", "上门收集材料"],
    );
    ok(laptop.path(), &["--staff", "帮帮哥小周", "case", "note", &reg_no, "李先生行动不便，下次预约上午"]);
    ok(window.path(), &["--staff", "王工", "case", "sign", &reg_no, "--assignee", "王工"]);
    let error = fails(laptop.path(), &["case", "sign", &reg_no, "--assignee", "小周"], 1);
    assert!(error.contains("may not sign in"), "a volunteer laptop may not sign in: {error}");
    // A merge is an admin's job, and refuses what is not a store.
    let error = fails(window.path(), &["merge", laptop.path().to_str().unwrap()], 1);
    assert!(error.contains("needs an admin node"), "{error}");
    let error = fails(admin.path(), &["merge", doc.to_str().unwrap()], 1);
    assert!(error.contains("is not a zhaowo store"), "{error}");
    // Back at the hall.
    let reassign = ["case", "dispatch", &reg_no, "--lead", "FG"];
    let error = fails(admin.path(), &reassign, 1);
    assert!(error.contains("refused"), "a dispatched case is reassigned, not dispatched again: {error}");
    let merged = json(&ok(admin.path(), &["merge", laptop.path().to_str().unwrap(), "--json"]));
    assert_eq!(
        (merged["changed"][0].as_str(), merged["new_conflicts"].as_array().unwrap().len()),
        (Some(reg_no.as_str()), 0)
    );
    let view = json(&ok(admin.path(), &["case", "show", &reg_no, "--json"]));
    assert_eq!((view["site_visits"].as_u64(), view["notes"].as_array().unwrap().len()), (Some(1), 1));
    let merged = json(&ok(admin.path(), &["merge", window.path().to_str().unwrap(), "--json"]));
    assert_eq!(merged["new_conflicts"].as_array().unwrap().len(), 0, "sign-in alone is no conflict");
    assert_eq!(json(&ok(admin.path(), &["case", "show", &reg_no, "--json"]))["status"], "IN_PROGRESS");
    // Now a real conflict: from the same state, the window answers the case offline while the admin (督查 rights)
    // reassigns it to the housing bureau. 改派 (class 2) beats 答复 (class 4); the answer is kept and listed.
    let doc2 = admin.path().join("case2.automerge");
    ok(admin.path(), &["doc", "export", &reg_no, "--out", doc2.to_str().unwrap()]);
    ok(window.path(), &["doc", "import", doc2.to_str().unwrap()]);
    ok(
        window.path(),
        &["--staff", "王工", "case", "resolve", &reg_no, "--result", "解释说明", "--reply", "已电话说明"],
    );
    ok(admin.path(), &["--staff", "刘督查", "case", "reassign", &reg_no, "--lead", "FG", "--reason", "属房管职责"]);
    let merged = json(&ok(admin.path(), &["merge", window.path().to_str().unwrap(), "--json"]));
    let conflicts = merged["new_conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{merged}");
    let conflict = conflicts[0]["conflict"].as_str().unwrap().to_owned();
    let listed = ok(admin.path(), &["conflicts", "list"]);
    assert!(listed.contains(&conflict) && listed.contains(&reg_no), "{listed}");
    ok(admin.path(), &["conflicts", "resolve", &reg_no, &conflict, "--note", "以督查科意见为准"]);
    let after = zhaowo(admin.path(), &["conflicts", "list"]);
    assert!(stderr(&after).contains("0 open conflicts"), "{}", stderr(&after));
    let view = json(&ok(admin.path(), &["case", "show", &reg_no, "--json"]));
    assert!(view["timeline"].as_array().unwrap().iter().any(|e| e["label"] == "冲突核定"));
    assert_eq!((view["status"].as_str(), view["lead_unit"].as_str()), (Some("DISPATCHED"), Some("FG")));
}

/// GETs a page over plain HTTP/1.1 (loopback only) and returns the body.
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).expect("the demo listens");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

#[test]
fn the_demo_serves_a_seeded_hall_and_stops() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_zhaowo"))
        .args([
            "--dir",
            dir.path().join("demo").to_str().unwrap(),
            "demo",
            "--desk",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--serve-secs",
            "10",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    let lookup = loop {
        let line = lines.next().expect("the demo prints its addresses").unwrap();
        printed.push(line.clone());
        if let Some(url) = line.strip_prefix("lookup").and_then(|rest| rest.split_whitespace().next()) {
            break url.to_owned();
        }
    };
    let citizen = printed.iter().find_map(|l| l.strip_prefix("citizen page").map(|u| u.trim().to_owned())).unwrap();
    let desk = printed.iter().find_map(|l| l.strip_prefix("staff desk").map(|u| u.trim().to_owned())).unwrap();
    let page = http_get(&citizen);
    assert!(page.starts_with("HTTP/1.1 200") && page.contains("反映问题"), "{page}");
    let receipt = http_get(&lookup);
    assert!(
        receipt.contains("办理中") && receipt.contains("三方会诊") && !receipt.contains("13812341234"),
        "{receipt}"
    );
    assert!(http_get(&format!("{desk}/login")).starts_with("HTTP/1.1 200"));
    // The 督查科's node and the laptop are separate nodes that received the seeded cases by sync.
    assert!(printed.iter().any(|l| l.contains("督查科") && l.contains("/desk")), "{printed:?}");
    assert!(printed.iter().any(|l| l.contains("二楼3号窗口") && l.contains("/desk")), "{printed:?}");
    for node in ["window-2f03", "supervision", "laptop"] {
        let node_dir = dir.path().join("demo").join(node);
        let started = std::time::Instant::now();
        loop {
            let rows = json(&ok(&node_dir, &["case", "list", "--json"]));
            if rows.as_array().unwrap().len() == 5 {
                break;
            }
            assert!(started.elapsed() < std::time::Duration::from_secs(8), "{node}: {rows}");
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the demo stops cleanly after --serve-secs");
    assert!(printed.iter().any(|l| l.contains("password: zhaowo-demo")));
}

#[test]
fn run_serves_the_nodes_own_store_until_stopped() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    new_hall(dir.path());
    let (reg_no, code) = register(dir.path());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_zhaowo"))
        .args([
            "--dir",
            dir.path().to_str().unwrap(),
            "run",
            "--desk",
            "127.0.0.1:0",
            "--http",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
            "--serve-secs",
            "5",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let _desk = lines.next().unwrap().unwrap();
    let citizen = lines.next().unwrap().unwrap();
    let base = citizen.strip_prefix("citizen page").unwrap().trim().trim_end_matches("/r/BBC01").to_owned();
    let lookup = http_get(&format!("{base}/q?no={reg_no}&code={code}"));
    assert!(lookup.starts_with("HTTP/1.1 200") && lookup.contains("已登记"), "{lookup}");
    assert!(child.wait().unwrap().success());
}

/// A `zhaowo run` child process, killed (SIGKILL: the store is crash-safe) when dropped.
struct Running {
    child: std::process::Child,
    sync_addr: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(dir: &Path) -> Running {
    use std::io::BufRead;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_zhaowo"))
        .args(["--dir", dir.to_str().unwrap(), "run", "--desk", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("ZHAOWO_DIR")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let sync_line = lines.find_map(|line| line.ok().filter(|line| line.starts_with("sync"))).expect("a sync line");
    let sync_addr = sync_line.split_whitespace().nth(1).unwrap().to_owned();
    Running { child, sync_addr }
}

fn case_ids(dir: &Path) -> std::collections::BTreeSet<String> {
    let rows = json(&ok(dir, &["case", "list", "--json"]));
    rows.as_array().unwrap().iter().map(|row| row["case_id"].as_str().unwrap().to_owned()).collect()
}

fn wait_converged(dirs: &[&Path], cases: usize) -> std::time::Duration {
    let started = std::time::Instant::now();
    loop {
        let sets: Vec<_> = dirs.iter().map(|dir| case_ids(dir)).collect();
        if sets[0].len() == cases && sets.iter().all(|set| *set == sets[0]) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "no convergence: {:?}",
            sets.iter().map(|set| set.len()).collect::<Vec<_>>()
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

/// T3: three real node processes on loopback (ports from the OS) register cases, one is stopped and restarted, and
/// all converge; cases written by the CLI while a node runs reach the peers too.
#[test]
fn three_node_processes_converge_after_a_restart() {
    let admin = tempfile::tempdir().unwrap();
    new_hall(admin.path());
    let others = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    for (index, dir) in others.iter().enumerate() {
        let window = format!("BBC0{}", index + 2);
        let id =
            json(&ok(dir.path(), &["init", "--window", &window, "--json"]))["node_id"].as_str().unwrap().to_owned();
        let file = dir.path().join("node.enrollment");
        ok(admin.path(), &["enroll", &id, "--window", &window, "--role", "window", "--out", file.to_str().unwrap()]);
        ok(dir.path(), &["join", file.to_str().unwrap()]);
        // The enrollment names the admin's configured address; this test's admin listens on an OS-chosen port.
        for peer in json(&ok(dir.path(), &["peers", "list", "--json"]))["peers"].as_array().unwrap() {
            ok(dir.path(), &["peers", "remove", peer.as_str().unwrap()]);
        }
    }
    register(admin.path());
    register(others[0].path());
    register(others[1].path());
    let _admin_node = start_node(admin.path());
    let admin_addr = _admin_node.sync_addr.clone();
    for dir in &others {
        ok(dir.path(), &["peers", "add", &admin_addr]);
        let error = fails(dir.path(), &["peers", "add", &admin_addr], 1);
        assert!(error.contains("already a peer"), "{error}");
    }
    let second = start_node(others[0].path());
    let mut third = start_node(others[1].path());
    let all = [admin.path(), others[0].path(), others[1].path()];
    let first = wait_converged(&all, 3);

    // The third node stops; work goes on elsewhere (the CLI writes into running nodes' stores) and on it offline.
    drop(third);
    register(others[1].path());
    register(admin.path());
    register(others[0].path());
    third = start_node(others[1].path());
    let again = wait_converged(&all, 6);
    println!(
        "T3 three processes cases=6 first_converge_ms={} after_restart_converge_ms={}",
        first.as_millis(),
        again.as_millis()
    );
    drop((third, second));

    // `zhaowo sync` against a running peer: one-shot, exits 0 once caught up.
    let laptop_cases = case_ids(others[1].path());
    register(admin.path());
    let out = json(&ok(others[1].path(), &["sync", "--peer", &admin_addr, "--timeout-secs", "30", "--json"]));
    assert_eq!(out["caught_up"], true, "{out}");
    assert_eq!(case_ids(others[1].path()).len(), laptop_cases.len() + 1);
    let error = fails(others[1].path(), &["sync", "--peer", "127.0.0.1:9", "--timeout-secs", "1"], 1);
    assert!(error.contains("not caught up"), "{error}");
}

/// Polls `condition` every 200 ms for up to 60 s.
fn wait_for(what: &str, mut condition: impl FnMut() -> bool) -> std::time::Duration {
    let started = std::time::Instant::now();
    while !condition() {
        assert!(started.elapsed() < std::time::Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    started.elapsed()
}

/// Enrolls a fresh node under `window` with `role` and forgets the admin address its enrollment named (the admin of
/// these tests listens on an OS-chosen port).
fn enrolled_node(admin: &Path, window: &str, role: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let id = json(&ok(dir.path(), &["init", "--window", window, "--json"]))["node_id"].as_str().unwrap().to_owned();
    let file = dir.path().join("node.enrollment");
    ok(admin, &["enroll", &id, "--window", window, "--role", role, "--out", file.to_str().unwrap()]);
    ok(dir.path(), &["join", file.to_str().unwrap()]);
    for peer in json(&ok(dir.path(), &["peers", "list", "--json"]))["peers"].as_array().unwrap() {
        ok(dir.path(), &["peers", "remove", peer.as_str().unwrap()]);
    }
    (dir, id)
}

/// Issue 5's end-to-end story: three nodes run; the volunteer's laptop goes offline, records a home visit and a note,
/// and carries them back on a bundle the admin imports (verified, idempotent, tampering refused). Meanwhile the
/// window PC, cut off from the hall LAN, answers the case while the 督查科 (admin) reassigns it: once the window is
/// back, the conflict is listed by `conflicts list` and resolved, and the resolution reaches the window.
#[test]
fn a_laptop_carries_its_home_visit_back_on_a_bundle_and_a_window_conflict_is_resolved() {
    let admin = tempfile::tempdir().unwrap();
    let admin_id = new_hall(admin.path());
    let (window, window_id) = enrolled_node(admin.path(), "2F03", "window");
    let (laptop, _) = enrolled_node(admin.path(), "V01", "volunteer");
    let (reg_no, _) = register(admin.path());
    register(admin.path());
    ok(admin.path(), &["case", "dispatch", &reg_no]);

    let admin_node = start_node(admin.path());
    for dir in [window.path(), laptop.path()] {
        ok(dir, &["peers", "add", &admin_node.sync_addr]);
    }
    let window_node = start_node(window.path());
    let laptop_node = start_node(laptop.path());
    wait_converged(&[admin.path(), window.path(), laptop.path()], 2);
    let status = json(&ok(admin.path(), &["status", "--json"]));
    assert!(status["sync_peers"].as_array().unwrap().iter().any(|peer| peer["node_id"] == window_id), "{status}");
    // A desk account the admin adds while the nodes run reaches the window's hall document (a clerk signs in anywhere).
    let accounts_before = json(&ok(window.path(), &["status", "--json"]))["accounts"].as_u64().unwrap();
    let mut staff_add = std::process::Command::new(env!("CARGO_BIN_EXE_zhaowo"))
        .args(["--dir", admin.path().to_str().unwrap(), "staff", "add", "zhanghua", "--role", "window"])
        .args(["--name", "张华", "--password-stdin"])
        .env_remove("ZHAOWO_DIR")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut staff_add.stdin.take().unwrap(), b"window-pass-2026\n").unwrap();
    assert!(staff_add.wait().unwrap().success());
    let account_ms = wait_for("the new account to reach the window", || {
        let status = json(&ok(window.path(), &["status", "--json"]));
        status["accounts"].as_u64() == Some(accounts_before + 1)
            && status["hall_last_edit"]["what"].as_str().is_some_and(|what| what.contains("zhanghua"))
    });
    // Both nodes saw the same case, dispatched.
    let status_of = |dir: &Path| json(&ok(dir, &["case", "show", &reg_no, "--json"]))["status"].clone();
    wait_for("the laptop to see the dispatch", || status_of(laptop.path()) == "DISPATCHED");
    wait_for("the laptop to acknowledge the admin's catalog", || {
        let status = json(&ok(laptop.path(), &["status", "--json"]));
        status["sync_peers"].as_array().unwrap().iter().any(|peer| peer["node_id"] == admin_id)
    });

    // Offline: the laptop leaves for a home visit; the window PC loses the hall LAN.
    drop(laptop_node);
    drop(window_node);
    let volunteer = ["--staff", "帮帮哥小周"];
    ok(
        laptop.path(),
        &[&volunteer[..], &["case", "visit", &reg_no, "--volunteers", "小周,小李", "--outcome", "上门收集材料"]]
            .concat(),
    );
    ok(laptop.path(), &[&volunteer[..], &["case", "note", &reg_no, "李先生行动不便，材料已收齐"]].concat());
    ok(
        window.path(),
        &["--staff", "王工", "case", "resolve", &reg_no, "--result", "解释说明", "--reply", "已电话说明"],
    );
    ok(admin.path(), &["--staff", "刘督查", "case", "reassign", &reg_no, "--lead", "FG", "--reason", "属房管职责"]);

    // The laptop exports what the admin has not seen: one case, not both.
    let bundle = laptop.path().join("visits.bundle");
    let exported = json(&ok(
        laptop.path(),
        &["bundle", "export", "--out", bundle.to_str().unwrap(), "--since-peer", &admin_id, "--json"],
    ));
    assert_eq!(exported["cases"], 1, "{exported}");
    let all = laptop.path().join("all.bundle");
    let everything = json(&ok(laptop.path(), &["bundle", "export", "--out", all.to_str().unwrap(), "--json"]));
    assert_eq!(everything["cases"], 2, "{everything}");

    // Bad bundles change nothing: not a bundle, a flipped byte, a bundle of another hall.
    let before = ok(admin.path(), &["case", "show", &reg_no, "--json"]);
    let error = fails(admin.path(), &["bundle", "import", admin.path().join("node.toml").to_str().unwrap()], 2);
    assert!(error.contains("not a zhaowo bundle"), "{error}");
    let mut bytes = std::fs::read(&bundle).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    let tampered = laptop.path().join("tampered.bundle");
    std::fs::write(&tampered, &bytes).unwrap();
    let tampered_run = zhaowo(admin.path(), &["bundle", "import", tampered.to_str().unwrap()]);
    assert_ne!(tampered_run.status.code(), Some(0), "a tampered bundle was accepted: {}", stdout(&tampered_run));
    assert!(!stderr(&tampered_run).contains("panicked"), "{}", stderr(&tampered_run));
    let stranger = tempfile::tempdir().unwrap();
    new_hall(stranger.path());
    let foreign = stranger.path().join("foreign.bundle");
    ok(stranger.path(), &["bundle", "export", "--out", foreign.to_str().unwrap()]);
    let error = fails(admin.path(), &["bundle", "import", foreign.to_str().unwrap()], 1);
    assert!(error.contains("another hall"), "{error}");
    assert_eq!(ok(admin.path(), &["case", "show", &reg_no, "--json"]), before, "a refused bundle changed the case");

    // The admin imports the laptop's bundle: the visit and the note arrive; a second import changes nothing.
    let imported = json(&ok(admin.path(), &["bundle", "import", bundle.to_str().unwrap(), "--json"]));
    assert_eq!(imported["changed"][0].as_str(), Some(reg_no.as_str()), "{imported}");
    assert_eq!(imported["new_conflicts"].as_array().unwrap().len(), 0, "a visit and a note conflict with nothing");
    let view = json(&ok(admin.path(), &["case", "show", &reg_no, "--json"]));
    assert_eq!((view["site_visits"].as_u64(), view["notes"].as_array().unwrap().len()), (Some(1), 1), "{view}");
    let again = json(&ok(admin.path(), &["bundle", "import", all.to_str().unwrap(), "--json"]));
    assert_eq!((again["changed"].as_array().unwrap().len(), again["unchanged"].as_u64()), (0, Some(2)), "{again}");

    // The window is back on the LAN: its answer meets the reassignment and the conflict is listed on the admin node.
    let window_node = start_node(window.path());
    let listed = || json(&ok(admin.path(), &["conflicts", "list", "--json"]));
    wait_for("the window's answer to reach the admin", || !listed().as_array().unwrap().is_empty());
    let conflicts = listed();
    assert_eq!(conflicts.as_array().unwrap().len(), 1, "{conflicts}");
    assert_eq!(conflicts[0]["reg_no"].as_str(), Some(reg_no.as_str()));
    let conflict = conflicts[0]["conflict"]["id"].as_str().unwrap().to_owned();
    ok(admin.path(), &["--staff", "刘督查", "conflicts", "resolve", &reg_no, &conflict, "--note", "以督查科意见为准"]);
    assert_eq!(listed().as_array().unwrap().len(), 0);
    let view = json(&ok(admin.path(), &["case", "show", &reg_no, "--json"]));
    assert_eq!((view["status"].as_str(), view["lead_unit"].as_str()), (Some("DISPATCHED"), Some("FG")));
    // The decision syncs to the window, which now shows the visit too (relayed by the admin with its signature).
    // (`allowed` is what each node's own role may do: it differs between the admin and the window by design.)
    let case_on = |dir: &Path| {
        let mut view = json(&ok(dir, &["case", "show", &reg_no, "--json"]));
        view.as_object_mut().unwrap().remove("allowed").expect("case show lists what the node may do");
        view
    };
    let on_admin = case_on(admin.path());
    let waited = wait_for("the resolution to reach the window", || case_on(window.path()) == on_admin);
    assert!(json(&ok(window.path(), &["conflicts", "list", "--json"])).as_array().unwrap().is_empty());
    println!(
        "bundle e2e: exported_cases=1/2 import_twice_unchanged=2 refused=3 conflict_resolved_ms={} account_synced_ms={}",
        waited.as_millis(),
        account_ms.as_millis()
    );
    drop((window_node, admin_node));
}

#[test]
fn every_desk_step_runs_from_the_terminal_and_case_show_lists_what_the_node_may_do() {
    let dir = tempfile::tempdir().unwrap();
    new_hall(dir.path());
    let (reg_no, _) = register(dir.path());
    let shown = json(&ok(dir.path(), &["case", "show", &reg_no, "--json"]));
    let allowed: Vec<&str> = shown["allowed"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert!(
        allowed.contains(&"dispatch") && allowed.contains(&"reject") && !allowed.contains(&"accept"),
        "{allowed:?}"
    );
    assert!(ok(dir.path(), &["case", "show", &reg_no]).contains("可执行操作（管理员）: "));
    // 修改诉求信息: fields, category and priority in one store edit.
    ok(
        dir.path(),
        &["case", "edit", &reg_no, "--location", "江岸区某小区", "--priority", "紧急", "--category", "FANGGUAN"],
    );
    let view = json(&ok(dir.path(), &["case", "show", &reg_no, "--json"]));
    assert_eq!((view["location"].as_str(), view["priority"].as_str()), (Some("江岸区某小区"), Some("URGENT")));
    assert_eq!(view["category"], "FANGGUAN");
    let events = view["timeline"].as_array().unwrap().len();
    // A refused field stores none of the others.
    let error = fails(dir.path(), &["case", "edit", &reg_no, "--location", "别处", "--category", "XYZ"], 1);
    assert!(
        error.contains("unknown category `XYZ`") && error.contains("hint: valid category codes: BDC 不动产登记"),
        "{error}"
    );
    let view = json(&ok(dir.path(), &["case", "show", &reg_no, "--json"]));
    assert_eq!((view["location"].as_str(), view["timeline"].as_array().unwrap().len()), (Some("江岸区某小区"), events));
    ok(dir.path(), &["case", "tag", &reg_no, "--tags", "老旧小区,回访"]);
    ok(dir.path(), &["case", "dispatch", &reg_no]);
    let error = fails(dir.path(), &["case", "co-units", &reg_no, "--units", "NOPE"], 1);
    assert!(
        error.contains("unknown unit `NOPE`")
            && error.contains("hint: valid unit codes: ")
            && error.contains("GJJ 公积金中心"),
        "{error}"
    );
    ok(dir.path(), &["case", "co-units", &reg_no, "--units", "GJJ"]);
    ok(dir.path(), &["case", "sign", &reg_no, "--assignee", "王工"]);
    // 待补充 / 恢复, and a step the state does not allow, with what the node may do instead.
    ok(dir.path(), &["case", "suspend", &reg_no, "--reason", "等群众补交材料"]);
    let error = fails(dir.path(), &["case", "suspend", &reg_no, "--reason", "再次"], 1);
    assert!(
        error.contains("refused: cannot suspend a case that is 待补充")
            && error.contains("hint: a admin node may now: "),
        "{error}"
    );
    assert!(error.contains("恢复办理 (resume)"), "{error}");
    let resumed = json(&ok(dir.path(), &["case", "resume", &reg_no, "--json"]));
    assert_eq!(resumed["status"], "IN_PROGRESS");
    let view = json(&ok(dir.path(), &["case", "show", &reg_no, "--json"]));
    let tags: Vec<&str> = view["tags"].as_array().unwrap().iter().map(|v| v.as_str().unwrap()).collect();
    assert_eq!(tags, ["回访", "老旧小区"]);
    assert!(view["co_units"].as_array().unwrap().iter().any(|u| u == "GJJ"));

    // 不予受理 of a second case; 受理 is for citizen submissions only, refused here with the state.
    let (second, _) = register(dir.path());
    let error = fails(dir.path(), &["case", "accept", &second], 1);
    assert!(error.contains("cannot accept a case that is 已登记"), "{error}");
    let rejected = json(&ok(
        dir.path(),
        &["case", "reject", &second, "--reason", "不属于受理范围", "--basis", "《条例》第十条", "--json"],
    ));
    assert_eq!(rejected["status"], "REJECTED");
    // Unknown codes of closed vocabularies list the valid ones.
    let error = fails(dir.path(), &["case", "edit", &reg_no, "--priority", "超急"], 2);
    assert!(
        error.contains("unknown priority `超急`")
            && error.contains("hint: valid priority codes: NORMAL 一般, URGENT 紧急, CRITICAL 特急"),
        "{error}"
    );
    let error = fails(dir.path(), &["case", "list", "--nature", "XX"], 2);
    assert!(error.contains("valid nature codes: ZX 咨询"), "{error}");
    println!(
        "terminal: edit (3 fields), tag, co-units, suspend, resume, reject; 5 refusals with hints, {events} events after the edit"
    );
}

#[test]
fn list_filters_on_unknown_codes_are_refused_with_the_valid_ones() {
    let dir = tempfile::tempdir().unwrap();
    new_hall(dir.path());
    let error = fails(dir.path(), &["case", "list", "--category", "XYZ"], 1);
    assert!(
        error.contains("unknown category `XYZ`")
            && error.contains("hint: valid category codes: ")
            && error.contains("HUZHENG 户政"),
        "{error}"
    );
    let error = fails(dir.path(), &["case", "list", "--unit", "XYZ"], 1);
    assert!(
        error.contains("unknown unit `XYZ`")
            && error.contains("hint: valid unit codes: ")
            && error.contains("GA 公安分局"),
        "{error}"
    );
    let error = fails(dir.path(), &["case", "list", "--status", "OPEN"], 2);
    assert!(error.contains("valid status codes: SUBMITTED 待受理"), "{error}");
    println!("3 unknown filter codes refused, each with the valid codes");
}
