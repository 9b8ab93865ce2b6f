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
        .env_remove("ZHAOWO_PASSPHRASE")
        .env_remove("ZHAOWO_NEW_PASSPHRASE")
        .output()
        .expect("the zhaowo binary runs")
}

/// [`zhaowo`] with extra environment variables and no terminal on stdin.
fn zhaowo_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_zhaowo"))
        .arg("--dir")
        .arg(dir)
        .args(args)
        .env_remove("ZHAOWO_DIR")
        .env_remove("ZHAOWO_STAFF")
        .env_remove("ZHAOWO_PASSPHRASE")
        .env_remove("ZHAOWO_NEW_PASSPHRASE")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
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

/// The demo's Jiang'an configuration as a hall file, written here by hand from `Hall::jiangan_default` (the file
/// format of `zhaowo hall export`), so the tests' halls have its units and categories.
fn jiangan_toml() -> String {
    use std::fmt::Write;
    let hall = zhaowo_crdt::Hall::jiangan_default();
    let span = |span: zhaowo_crdt::hall::Span| match span {
        zhaowo_crdt::hall::Span::WorkingDays(days) => format!("{days} working days"),
        zhaowo_crdt::hall::Span::Hours(hours) => format!("{hours} hours"),
    };
    let mut t = format!("name = \"{}\"\nworkday_end = \"17:30\"\nretention_days = 365\n", hall.name);
    for (code, w) in &hall.windows {
        let _ = write!(t, "\n[windows.{code}]\nname = \"{}\"\nfloor = \"{}\"\n", w.name, w.floor);
    }
    for (code, u) in &hall.units {
        let _ = write!(t, "\n[units.{code}]\nname = \"{}\"\n", u.name);
    }
    for (code, c) in &hall.categories {
        let co: Vec<String> = c.co_units.iter().map(|u| format!("\"{u}\"")).collect();
        let _ = write!(
            t,
            "\n[categories.{code}]\nname = \"{}\"\nlead_unit = \"{}\"\nco_units = [{}]\n",
            c.name,
            c.lead_unit,
            co.join(", ")
        );
    }
    for rule in &hall.time_limits {
        let _ = write!(
            t,
            "\n[[time_limits]]\nnature = \"{}\"\npriority = \"{}\"\nresponse = \"{}\"\nsolve = \"{}\"\n",
            rule.nature.code(),
            rule.priority.code(),
            span(rule.response),
            span(rule.solve)
        );
    }
    for year in hall.calendar.covered_years() {
        let days = |set: &std::collections::BTreeSet<zhaowo_crdt::time::Date>| {
            set.iter().filter(|d| d.year == year).map(ToString::to_string).collect::<Vec<_>>().join(", ")
        };
        let _ = write!(
            t,
            "\n[calendar.{year}]\nholidays = [{}]\nmake_up_workdays = [{}]\n",
            days(&hall.calendar.holidays),
            days(&hall.calendar.make_up_workdays)
        );
    }
    t
}

/// A new hall (neutral template) made the Jiang'an hall of the tests by `zhaowo hall import`.
fn new_hall(dir: &Path) -> String {
    let out =
        ok(dir, &["init", "--hall", "江岸区政务服务中心", "--window", "BBC01", "--name", "办不成事窗口", "--json"]);
    let file = dir.join("jiangan.toml");
    std::fs::write(&file, jiangan_toml()).unwrap();
    ok(dir, &["hall", "import", file.to_str().unwrap()]);
    json(&out)["node_id"].as_str().unwrap().to_owned()
}

fn register(dir: &Path) -> (String, String) {
    register_for(dir, "李先生名下房改房登记有误", "李建国", "13812341234")
}

/// Registers a case of the citizen `name` (`phone`) with the private `detail`.
fn register_for(dir: &Path, detail: &str, name: &str, phone: &str) -> (String, String) {
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
            detail,
            "--name",
            name,
            "--phone",
            phone,
            "--callback-ok",
            "--json",
        ],
    );
    let value = json(&out);
    (value["reg_no"].as_str().unwrap().to_owned(), value["query_code"].as_str().unwrap().to_owned())
}

/// Issue 13 §6: the key files may be protected by a passphrase (argon2id + age); the case keys in `cases.db` are
/// wrapped under the node key, so a thief holding the whole data directory of a protected node opens none of them,
/// while the node itself, given the passphrase, opens all.
#[test]
fn a_passphrase_protects_the_node_keys_and_the_case_keys() {
    use zhaowo_node::identity::{NodeIdentity, Passphrase};
    let dir = tempfile::tempdir().unwrap();
    let pass = "江岸区办不成事窗口2026";
    let init = ["init", "--hall", "江岸区政务服务中心", "--window", "BBC01", "--passphrase"];
    let code = |output: &Output| (output.status.code(), stderr(output));
    // No terminal and no variable: a clear refusal naming the variable, nothing created; a weak passphrase likewise.
    let (status, error) = code(&zhaowo_env(dir.path(), &init, &[]));
    assert_eq!(status, Some(1), "{error}");
    assert!(error.contains("ZHAOWO_PASSPHRASE"), "the hint names the variable: {error}");
    let (status, error) = code(&zhaowo_env(dir.path(), &init, &[("ZHAOWO_PASSPHRASE", "short")]));
    assert_eq!(status, Some(1), "{error}");
    assert!(error.contains("at least 12"), "{error}");
    assert!(zhaowo_node::home::Home::node_files(dir.path()).is_empty(), "a refused init wrote files");
    let (status, error) = code(&zhaowo_env(dir.path(), &init, &[("ZHAOWO_PASSPHRASE", pass)]));
    assert_eq!(status, Some(0), "{error}");
    for file in ["node.key", "hall.key"] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(text.contains("$argon2id$") && text.contains("BEGIN AGE ENCRYPTED FILE"), "{file}: {text}");
    }
    // Every command needs the passphrase: none, or a wrong one, is an expected failure with a hint.
    let (status, error) = code(&zhaowo_env(dir.path(), &["status"], &[]));
    assert_eq!(status, Some(1), "{error}");
    assert!(error.contains("ZHAOWO_PASSPHRASE"), "{error}");
    let (status, error) =
        code(&zhaowo_env(dir.path(), &["status"], &[("ZHAOWO_PASSPHRASE", "江岸区办不成事窗口2025")]));
    assert_eq!(status, Some(1), "{error}");
    assert!(error.contains("does not open") && error.contains("cannot be recovered"), "{error}");
    let with_pass = [("ZHAOWO_PASSPHRASE", pass)];
    let file = dir.path().join("jiangan.toml");
    std::fs::write(&file, jiangan_toml()).unwrap();
    let run = |args: &[&str]| {
        let output = zhaowo_env(dir.path(), args, &with_pass);
        assert_eq!(output.status.code(), Some(0), "zhaowo {args:?}: {}", stderr(&output));
        stdout(&output)
    };
    run(&["hall", "import", file.to_str().unwrap()]);
    let cases = 3;
    for (detail, phone) in
        [("甲先生房产证办理", "13800000001"), ("乙女士社保转移", "13800000002"), ("丙先生户籍迁移", "13800000003")]
    {
        run(&[
            "case",
            "new",
            "--nature",
            "求助",
            "--category",
            "BDC",
            "--summary",
            "登记问题",
            "--detail",
            detail,
            "--name",
            "某某",
            "--phone",
            phone,
            "--json",
        ]);
    }
    // What a thief reads off the data directory: wrapped rows only (no 32-byte key), and node.key does not load.
    let rows = || -> Vec<(String, Vec<u8>)> {
        let db = rusqlite::Connection::open(dir.path().join("cases.db")).unwrap();
        let mut statement = db.prepare("SELECT doc_id, key FROM case_keys").unwrap();
        statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).unwrap().map(Result::unwrap).collect()
    };
    let stored = rows();
    assert_eq!(stored.len(), cases);
    assert!(stored.iter().all(|(_, key)| key.len() != 32), "a case key is stored in clear");
    let key_file = dir.path().join("node.key");
    assert!(NodeIdentity::load(&key_file).is_err(), "a protected node key loads without its passphrase");
    let opened_with = |identity: &NodeIdentity| {
        let wrap = zhaowo_node::store::KeyWrap::new(&identity.case_key_wrap());
        stored.iter().filter(|(doc_id, row)| wrap.unwrap(doc_id, row).is_some()).count()
    };
    let stranger = opened_with(&NodeIdentity::generate().unwrap());
    let owner =
        opened_with(&NodeIdentity::load_with(&key_file, Some(&Passphrase::given(pass.into()).unwrap())).unwrap());
    assert_eq!((stranger, owner), (0, cases), "case keys open with the node key only");
    // A row copied under another case's id does not open (the case id is bound in).
    let wrap = zhaowo_node::store::KeyWrap::new(
        &NodeIdentity::load_with(&key_file, Some(&Passphrase::given(pass.into()).unwrap())).unwrap().case_key_wrap(),
    );
    assert!(wrap.unwrap(&stored[1].0, &stored[0].1).is_none(), "a key row opened under another case's id");
    let shown = json(&run(&["case", "list", "--json"]));
    assert_eq!(shown.as_array().map(Vec::len), Some(cases), "{shown}");

    // Removing the passphrase, then setting a new one (ZHAOWO_NEW_PASSPHRASE): the old one no longer opens.
    run(&["key", "passphrase", "--remove"]);
    ok(dir.path(), &["status"]);
    let new_pass = "新的口令：武汉江岸区2027";
    let output = zhaowo_env(dir.path(), &["key", "passphrase", "--json"], &[("ZHAOWO_NEW_PASSPHRASE", new_pass)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(json(&stdout(&output))["protected"], true);
    let (status, _) = code(&zhaowo_env(dir.path(), &["status"], &with_pass));
    assert_eq!(status, Some(1), "the old passphrase still opens the keys");
    let (status, error) = code(&zhaowo_env(dir.path(), &["status"], &[("ZHAOWO_PASSPHRASE", new_pass)]));
    assert_eq!(status, Some(0), "{error}");
    println!(
        "keys at rest: init without a passphrase source exit 1, weak exit 1; a protected node: status without or with a \
         wrong passphrase exit 1; case key rows wrapped {}/{cases}, opened by another node key {stranger}/{cases}, by \
         this node's key (passphrase given) {owner}/{cases}; a row under another case id refused; passphrase removed, \
         set anew, the old one refused",
        stored.len()
    );
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
    // Issue 15 §6: every figure with numerator, denominator and formula; grouped; the monthly report as files.
    assert_eq!(stats["kpis"]["registered"]["numerator"], 1, "{stats}");
    assert_eq!(stats["kpis"]["answer_rate"]["denominator"], 1, "{stats}");
    assert!(stats["formulas"]["satisfaction_rate"].as_str().unwrap().contains("基本满意"), "{stats}");
    let by = json(&ok(dir.path(), &["stats", "--by", "nature", "--by", "unit", "--json"]));
    assert_eq!(by["groups"]["nature"][0]["label"], "求助", "{by}");
    let text = ok(dir.path(), &["stats", "--by", "month"]);
    assert!(text.contains("回应率") && text.contains("计算公式") && text.contains("按月份"), "{text}");
    let error = fails(dir.path(), &["stats", "--by", "weekday"], 2);
    assert!(error.contains("month, window, unit, nature, category, mode"), "the hint names the groupings: {error}");
    let month = {
        let view = json(&ok(dir.path(), &["case", "show", &reg_no, "--json"]));
        let registered = view["registered_at_ms"].as_i64().unwrap();
        let date = zhaowo_crdt::time::Date::of_ms(registered);
        format!("{:04}-{:02}", date.year, date.month)
    };
    let xlsx = dir.path().join("report.xlsx");
    ok(dir.path(), &["stats", "--month", &month, "--out", xlsx.to_str().unwrap()]);
    {
        use calamine::Reader;
        let mut workbook: calamine::Xlsx<_> = calamine::open_workbook(&xlsx).expect("the report opens as a workbook");
        let sheets = workbook.sheet_names();
        assert!(sheets.contains(&"汇总".to_owned()) && sheets.contains(&"按承办单位".to_owned()), "{sheets:?}");
        let summary = workbook.worksheet_range("汇总").unwrap();
        let cells: Vec<String> = summary.rows().flat_map(|row| row.iter().map(ToString::to_string)).collect();
        assert!(cells.iter().any(|cell| cell == "回应率") && cells.iter().any(|cell| cell.contains("÷")), "{cells:?}");
    }
    let error = fails(dir.path(), &["stats", "--month", &month, "--out", xlsx.to_str().unwrap()], 2);
    assert!(error.contains("never overwritten"), "{error}");
    let html = dir.path().join("report.html");
    ok(dir.path(), &["stats", "--month", &month, "--out", html.to_str().unwrap()]);
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("督查统计") && page.contains("按服务方式") && !page.contains("13812341234"));
    let error = fails(dir.path(), &["stats", "--month", "2026-13"], 2);
    assert!(error.contains("YYYY-MM"), "{error}");
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
    let summary = stderr(&verify);
    assert!(summary.contains("checked 1 documents and ") && summary.contains("): 0 problems"), "{summary}");
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
    // Offline: the laptop tags the case, the window signs in, the admin reassigns. A plain Automerge file carries no
    // case key (keys travel only over sync sessions, to nodes that may hold them): the copies read the public layer
    // and refuse to write a private one.
    let error = fails(
        laptop.path(),
        &["--staff", "帮帮哥小周", "case", "visit", &reg_no, "--volunteers", "小周,小李", "--outcome", "上门收集材料"],
        1,
    );
    assert!(error.contains("does not hold the key"), "{error}");
    let shown = json(&ok(laptop.path(), &["case", "show", &reg_no, "--json"]));
    assert_eq!((shown["detail"].as_str(), shown["personal"]["sealed"].as_bool()), (Some("本机无权查看"), Some(true)));
    ok(laptop.path(), &["--staff", "帮帮哥小周", "case", "tag", &reg_no, "--tags", "行动不便"]);
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
    assert!(view["tags"].as_array().unwrap().iter().any(|tag| tag == "行动不便"), "{view}");
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
    // The window, a hall PC, got the case only as plain Automerge files, which carry no key: it reads the public layer.
    // A bundle from the admin carries the key inside its encryption, and the window takes it (issue 13 §4).
    let sealed = |dir: &Path| json(&ok(dir, &["case", "show", &reg_no, "--json"]))["personal"]["sealed"] == true;
    assert!(sealed(window.path()));
    let bundle = admin.path().join("keys.bundle");
    let exported = json(&ok(admin.path(), &["bundle", "export", "--out", bundle.to_str().unwrap(), "--json"]));
    assert_eq!(exported["keys"].as_u64(), Some(1), "{exported}");
    let imported = json(&ok(window.path(), &["bundle", "import", bundle.to_str().unwrap(), "--json"]));
    assert_eq!(imported["keys_taken"].as_u64(), Some(1), "{imported}");
    assert!(!sealed(window.path()), "the window reads the case after the bundle");
    // It may now reveal the full record (recorded); the laptop, a volunteer without the key, may not.
    let revealed = json(&ok(window.path(), &["case", "reveal", &reg_no, "--purpose", "回访核实", "--json"]));
    assert_eq!(
        (revealed["personal"]["name"].as_str(), revealed["personal"]["phone"].as_str()),
        (Some("李建国"), Some("13812341234"))
    );
    let timeline = json(&ok(window.path(), &["case", "show", &reg_no, "--json"]))["timeline"].to_string();
    assert!(timeline.contains("回访核实"), "the reveal is on the timeline");
    fails(laptop.path(), &["case", "reveal", &reg_no, "--purpose", "好奇"], 1);
    // The laptop is no recipient of the admin's bundle: it gets neither the cases nor the key.
    let error = fails(laptop.path(), &["bundle", "import", bundle.to_str().unwrap()], 1);
    assert!(error.contains("not encrypted to this node"), "{error}");
    assert!(sealed(laptop.path()));
}

/// GETs a page over plain HTTP/1.1 (loopback only) and returns the body.
fn http_get(url: &str) -> String {
    use std::io::{Read, Write};
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).expect("the demo listens");
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    // A binary body (an image) reads lossily; the head is ASCII.
    String::from_utf8_lossy(&response).into_owned()
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
    // Issue 16: the seeded case's published floor plan is on the lookup and served as a PNG.
    let link =
        receipt.split("href=\"").skip(1).find_map(|rest| rest.split('"').next().filter(|l| l.starts_with("/m/")));
    let link = link.unwrap_or_else(|| panic!("no published material on the lookup: {receipt}"));
    let origin = &citizen[..citizen[8..].find('/').map_or(citizen.len(), |at| at + 8)];
    let plan = http_get(&format!("{origin}{link}"));
    assert!(plan.starts_with("HTTP/1.1 200") && plan.contains("image/png"), "{}", &plan[..plan.len().min(300)]);
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

/// Starts `zhaowo -vv run` on `dir`; its log goes to `dir/node.log` (so a scan of the data directory reads the logs
/// too: issue 13 §7, no personal data in logs at any verbosity).
fn start_node(dir: &Path) -> Running {
    use std::io::BufRead;
    let log = std::fs::OpenOptions::new().create(true).append(true).open(dir.join("node.log")).unwrap();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_zhaowo"))
        .args(["-vv", "--dir", dir.to_str().unwrap(), "run", "--desk", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("ZHAOWO_DIR")
        // Our own crates at their most verbose (issue 13 §7: no personal data at any verbosity), the rest at info.
        .env("ZHAOWO_LOG", "info,zhaowo=trace,zhaowo_node=trace,zhaowo_crdt=trace")
        .stdout(std::process::Stdio::piped())
        .stderr(log)
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
    let (other_no, _) = register_for(admin.path(), "王女士营业执照变更急需", "王芳", "13900001111");
    let other_texts = ["王女士营业执照变更急需", "王芳", "13900001111"];
    ok(admin.path(), &["case", "dispatch", &reg_no]);
    // Issue 13: the laptop may read (and write the private part of) only the case whose visit is assigned to it.
    let error = fails(admin.path(), &["case", "assign-visit", &reg_no, "--laptop", "NOPE"], 1);
    assert!(error.contains("volunteer laptops: V01"), "the hint names the laptops: {error}");
    ok(admin.path(), &["case", "assign-visit", &reg_no, "--laptop", "V01"]);

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
    let sealed = |dir: &Path, no: &str| json(&ok(dir, &["case", "show", no, "--json"]))["personal"]["sealed"] == true;
    let key_ms = wait_for("the laptop to get the key of its assigned visit", || !sealed(laptop.path(), &reg_no));
    assert!(sealed(laptop.path(), &other_no), "the laptop cannot read a case whose visit is not assigned to it");
    // Stolen laptop (issue 13): every file of its data directory (database, WAL, keys, its -vv log) read as bytes.
    let stolen_open =
        (texts_in_dir(laptop.path(), &["李先生名下房改房登记有误"]), texts_in_dir(laptop.path(), &other_texts));
    assert_eq!(
        stolen_open,
        (1, 0),
        "while its visit is open the laptop holds that case's 诉求内容 and nothing of the other"
    );
    assert!(!sealed(window.path(), &other_no) && !sealed(window.path(), &reg_no), "a window PC reads every case");

    // Offline: the laptop leaves for a home visit; the window PC loses the hall LAN.
    drop(laptop_node);
    drop(window_node);
    let volunteer = ["--staff", "帮帮哥小周"];
    let error = fails(laptop.path(), &[&volunteer[..], &["case", "note", &other_no, "不该写入"]].concat(), 1);
    assert!(error.contains("does not hold the key") && error.contains("assign-visit"), "{error}");
    ok(laptop.path(), &[&volunteer[..], &["case", "note", &reg_no, "李先生行动不便，材料已收齐"]].concat());
    ok(
        laptop.path(),
        &[&volunteer[..], &["case", "visit", &reg_no, "--volunteers", "小周,小李", "--outcome", "上门收集材料"]]
            .concat(),
    );
    // The visit is logged: the laptop destroyed the key at once, offline.
    assert!(sealed(laptop.path(), &reg_no), "the laptop still reads the case after logging its visit");
    let stolen_closed = texts_in_dir(laptop.path(), &["李先生名下房改房登记有误", "李先生行动不便，材料已收齐"]);
    assert_eq!(stolen_closed, 0, "the laptop's files still show what its closed visit was about");
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
    // Issue 13 §4: the file is age, encrypted to the hall's PCs (admin and window here, not the laptop): not one of
    // its public or private texts can be read off it, and the laptop itself cannot import it.
    assert_eq!((everything["recipients"].as_u64(), everything["keys"].as_u64()), (Some(2), Some(0)), "{everything}");
    let file = std::fs::read(&all).unwrap();
    assert!(file.starts_with(b"age-encryption.org/v1\n"));
    let summary = json(&ok(admin.path(), &["case", "show", &reg_no, "--json"]))["summary"].as_str().unwrap().to_owned();
    let in_file = |text: &str| file.windows(text.len()).any(|window| window == text.as_bytes());
    let plaintext_hits =
        [summary.as_str(), "李先生行动不便", "上门收集材料", &reg_no].iter().filter(|t| in_file(t)).count();
    assert_eq!(plaintext_hits, 0, "the bundle shows plaintext");
    let laptop_before = ok(laptop.path(), &["case", "list", "--json"]);
    let error = fails(laptop.path(), &["bundle", "import", all.to_str().unwrap()], 1);
    assert!(error.contains("not encrypted to this node"), "{error}");
    assert_eq!(ok(laptop.path(), &["case", "list", "--json"]), laptop_before, "a refused bundle changed nothing");

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
    assert!(error.contains("not encrypted to this node"), "another hall's bundle is not for this node: {error}");
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

    // Purge while offline (issue 13 §3): the laptop is still away; the admin purges the other citizen's data.
    let stats = |dir: &Path| json(&ok(dir, &["stats", "--json"]));
    let stats_before = stats(admin.path());
    let other_id =
        json(&ok(admin.path(), &["case", "show", &other_no, "--json"]))["case_id"].as_str().unwrap().to_owned();
    let key_row = |dir: &Path| -> Option<Vec<u8>> {
        let db = rusqlite::Connection::open(dir.join("cases.db")).unwrap();
        db.query_row("SELECT key FROM case_keys WHERE doc_id = ?1", [&other_id], |row| row.get(0)).ok()
    };
    // Case keys are wrapped at rest under the node key (issue 13 §6): the attacker below, holding the admin's whole
    // data directory (an unprotected node.key), unwraps the key.
    let row = key_row(admin.path()).expect("the admin holds the key");
    assert_ne!(row.len(), 32, "a case key is stored in clear");
    let admin_key = zhaowo_node::identity::NodeIdentity::load(&admin.path().join("node.key")).unwrap();
    let old_key = zhaowo_node::store::KeyWrap::new(&admin_key.case_key_wrap())
        .unwrap(&other_id, &row)
        .expect("the admin's node key opens its case keys");
    let on_hall_pcs_before = (texts_in_dir(admin.path(), &other_texts), texts_in_dir(window.path(), &other_texts));
    let error = fails(admin.path(), &["case", "purge", &other_no], 1);
    assert!(error.contains("--yes"), "a purge asks for confirmation: {error}");
    ok(admin.path(), &["--staff", "刘督查", "case", "purge", &other_no, "--yes"]);
    let purged = |dir: &Path| json(&ok(dir, &["case", "show", &other_no, "--json"]))["personal"]["purged"] == true;
    let laptop_node = start_node(laptop.path());
    let purge_ms =
        wait_for("the purge to reach the laptop and the window", || purged(laptop.path()) && purged(window.path()));
    let mut hits_after = Vec::new();
    for dir in [admin.path(), window.path(), laptop.path()] {
        hits_after.push(texts_in_dir(dir, &other_texts));
        assert_eq!(key_row(dir), None, "a node still holds the purged case's key");
    }
    assert_eq!(hits_after, [0, 0, 0], "the purged citizen's name, phone or 诉求内容 is still in a node's files");
    assert_eq!(stats(admin.path()), stats_before, "a purge changes no statistic");
    // An attacker replays the old key to the admin, in a bundle encrypted to it: refused, the case stays unreadable.
    let roster = zhaowo_node::home::Home::read_roster_file(admin.path()).unwrap().unwrap();
    let inner = zhaowo_crdt::bundle::encode(&zhaowo_crdt::bundle::Bundle {
        hall: *roster.hall(),
        from: [0; 32],
        created_ms: 0,
        docs: Vec::new(),
        keys: vec![zhaowo_crdt::wire::CaseKeyGrant { doc_id: other_id.clone(), key: old_key }],
        materials: Vec::new(),
    });
    let replay = admin.path().join("replay.bundle");
    let recipients = zhaowo_node::import::bundle_recipients(&roster);
    std::fs::write(&replay, zhaowo_node::import::encrypt_bundle(&inner, &recipients).unwrap()).unwrap();
    let replayed = json(&ok(admin.path(), &["bundle", "import", replay.to_str().unwrap(), "--json"]));
    assert_eq!(replayed["keys_taken"].as_u64(), Some(0), "{replayed}");
    assert_eq!(key_row(admin.path()), None);
    // Issue 13 §7: no citizen's name, phone or text in any node's log (our crates at trace level).
    let citizen_texts =
        [&other_texts[..], &["李先生名下房改房登记有误", "李建国", "13812341234", "李先生行动不便，材料已收齐"]]
            .concat();
    let mut log_bytes = 0;
    for dir in [admin.path(), window.path(), laptop.path()] {
        let log = std::fs::read(dir.join("node.log")).unwrap();
        log_bytes += log.len();
        let hits: Vec<&&str> =
            citizen_texts.iter().filter(|text| log.windows(text.len()).any(|w| w == text.as_bytes())).collect();
        assert!(hits.is_empty(), "{} logs personal data: {hits:?}", dir.display());
    }
    println!("logs at trace level: {log_bytes} bytes on 3 nodes, 0 of {} citizen texts", citizen_texts.len());
    println!(
        "bundle e2e: exported_cases=1/2 import_twice_unchanged=2 refused=3 conflict_resolved_ms={} account_synced_ms={} \
         laptop_key_ms={} laptop_reads=1/2 (assigned) then 0/2 (visit logged) bundle_plaintext_hits=0/4 \
         wrong_recipient=exit 1",
        waited.as_millis(),
        account_ms.as_millis(),
        key_ms.as_millis()
    );
    println!(
        "stolen laptop (3 processes, files incl. -vv log): assigned case texts 1/1 and other case 0/3 while the visit is \
         open; 0/2 after it was logged. purge while offline: reached laptop+window in {} ms; other citizen's texts in \
         files before (admin, window) = {:?}, after (admin, window, laptop) = {:?}; keys left 0/3; stats unchanged; \
         replayed key taken 0",
        purge_ms.as_millis(),
        on_hall_pcs_before,
        hits_after
    );
    drop((window_node, admin_node, laptop_node));
}

/// Issue 14 §4: with `node.key` deleted, `init` used to succeed on the existing data directory (a new identity outside
/// the roster, the admin role rewritten to window, `verify` still clean). Now it refuses, and the hint of the missing
/// key points at a backup and `zhaowo restore`; `status` and `verify` report a node key outside the roster.
#[test]
fn init_refuses_a_directory_holding_a_nodes_data_and_a_key_outside_the_roster_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    zhaowo(dir.path(), &["init", "--hall", "测试大厅", "--window", "W01", "--name", "管理员"]);
    let before: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    std::fs::remove_file(dir.path().join("node.key")).unwrap();
    let error = fails(dir.path(), &["status"], 2);
    println!("status without node.key:\n{error}");
    assert!(error.contains("but no node.key") && error.contains("roster.records"), "{error}");
    assert!(error.contains("hint:") && error.contains("zhaowo restore") && !error.contains("create one with"));
    let error = fails(dir.path(), &["init", "--window", "W01"], 2);
    println!("init on the directory:\n{error}");
    assert!(error.contains("already holds a zhaowo node's data"), "{error}");
    assert!(error.contains("roster.records") && error.contains("hall.key") && error.contains("zhaowo restore"));
    assert!(!dir.path().join("node.key").exists(), "init created nothing");
    let config = std::fs::read_to_string(dir.path().join("node.toml")).unwrap();
    assert!(config.contains("role = \"admin\""), "the role was not rewritten: {config}");
    println!("files before {before:?}; after the refused init: node.key absent, node.toml unchanged");

    // A node whose key is not in the roster it holds (here: the key of another node put in place).
    let other = tempfile::tempdir().unwrap();
    ok(other.path(), &["init", "--window", "W02"]);
    std::fs::copy(other.path().join("node.key"), dir.path().join("node.key")).unwrap();
    let status = json(&ok(dir.path(), &["status", "--json"]));
    assert_eq!(status["key_in_roster"], false, "{status}");
    assert!(ok(dir.path(), &["status"]).contains("NOT AN ACTIVE MEMBER"));
    let output = zhaowo(dir.path(), &["verify", "--json"]);
    assert_eq!(output.status.code(), Some(1));
    let report = json(&stdout(&output));
    println!("verify with a foreign key: {report}");
    assert!(report["problems"][0].as_str().unwrap().contains("not an active member of the roster"));
}

/// Issue 12 §1: the hall's configuration round-trips through a file the admin edits; a bad file is refused with its
/// file, line and key for every error and changes nothing; `--dry-run` shows the difference; a non-admin is refused.
#[test]
fn the_hall_configuration_is_exported_edited_and_imported_and_bad_files_are_refused_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(dir.path(), &["init", "--hall", "某区政务服务中心", "--window", "W01", "--name", "一号窗口"]);
    assert_eq!(out.trim().len(), 64);
    let shown = json(&ok(dir.path(), &["hall", "show", "--json"]));
    println!("template: units {} categories {}", shown["units"], shown["categories"]);
    assert_eq!(shown["units"].as_object().unwrap().len(), 1, "a neutral template: one unit");
    assert!(shown["categories"].get("HUZHENG").is_none() && shown["coverage"]["covered_years"][0] == 2025);
    let file = dir.path().join("hall.toml");
    ok(dir.path(), &["hall", "export", "--out", file.to_str().unwrap()]);
    let exported = std::fs::read_to_string(&file).unwrap();
    assert!(exported.starts_with("# The configuration of the hall") && exported.contains("[calendar.2026]"));
    assert!(!exported.contains("phone_tag_key") && !exported.contains("[accounts") && !exported.contains("argon2"));
    assert!(exported.contains("[sms]") && exported.contains("{查询码}") && exported.contains("[[canned_replies]]"));
    // The file as exported imports to no difference.
    let same = json(&ok(dir.path(), &["hall", "import", file.to_str().unwrap(), "--dry-run", "--json"]));
    assert_eq!(same["differences"].as_array().unwrap().len(), 0, "{same}");

    // Edit: a unit, a category routed to it with a co-unit, a longer limit, 2027's 元旦 (a year of its own).
    let edited = exported
        .replace("[units.ZH]", "[units.SW]\nname = \"税务局\"\n\n[units.ZH]")
        .replace(
            "[categories.ZONGHE]",
            "[categories.SHUIWU]\nname = \"税务\"\nlead_unit = \"SW\"\nco_units = [\"ZH\"]\n\n[categories.ZONGHE]",
        )
        .replace("name = \"某区政务服务中心\"", "name = \"某区政务服务中心（新）\"")
        + "\n[calendar.2027]\nholidays = [2027-01-01]\n";
    std::fs::write(&file, &edited).unwrap();
    let log_before = json(&ok(dir.path(), &["hall", "log", "--json"]))["edits"].as_array().unwrap().len();
    let dry = ok(dir.path(), &["hall", "import", file.to_str().unwrap(), "--dry-run"]);
    println!("dry run:\n{dry}");
    assert!(
        dry.contains("+ unit SW: 税务局") && dry.contains("+ category SHUIWU") && dry.contains("+ holiday 2027-01-01")
    );
    assert!(dry.contains("~ name"));
    assert_eq!(json(&ok(dir.path(), &["hall", "log", "--json"]))["edits"].as_array().unwrap().len(), log_before);
    ok(dir.path(), &["hall", "import", file.to_str().unwrap()]);
    let shown = json(&ok(dir.path(), &["hall", "show", "--json"]));
    assert_eq!(shown["categories"]["SHUIWU"]["co_units"][0], "ZH");
    assert_eq!(shown["name"], "某区政务服务中心（新）");
    let log = json(&ok(dir.path(), &["hall", "log", "--json"]));
    let edits = log["edits"].as_array().unwrap();
    println!("hall log: {log}");
    assert_eq!(edits.len(), log_before + 1, "one import, one change");
    assert!(edits.last().unwrap()["what"].as_str().unwrap().contains("导入大厅配置 hall.toml"));
    // Each edit names the node that wrote it (read from the change's actor, not a field the writer fills in).
    let node_id = json(&ok(dir.path(), &["status", "--json"]))["node_id"].as_str().unwrap().to_owned();
    assert!(edits.iter().all(|edit| edit["node"] == node_id.as_str()), "{log}");
    assert!(ok(dir.path(), &["hall", "log"]).contains(&node_id[..16]));

    // Bad files: each refused with its line and key, nothing changed.
    let line_of = |text: &str, needle: &str| text.lines().position(|line| line.contains(needle)).unwrap() + 1;
    let bad_files: Vec<(&str, String, String, &str)> = {
        let mut list = Vec::new();
        let mut add = |what: &'static str, text: String, needle: &str, expect: &'static str| {
            let line = line_of(&text, needle);
            list.push((what, text, format!(":{line}:"), expect));
        };
        add("syntax", edited.replacen("lead_unit = \"SW\"", "lead_unit = \"SW", 1), "lead_unit = \"SW", "");
        add("unknown key", edited.replacen("lead_unit = \"SW\"", "lead = \"SW\"", 1), "lead = \"SW\"", "unknown field");
        add(
            "unknown unit",
            edited.replacen("lead_unit = \"SW\"", "lead_unit = \"XX\"", 1),
            "lead_unit = \"XX\"",
            "unknown unit `XX`",
        );
        add(
            "duplicate code",
            edited.replacen("[units.ZH]", "[units.SW] # 又一个\nname = \"税务局\"\n\n[units.ZH]", 1),
            "又一个",
            "duplicate key",
        );
        add(
            "wrong year",
            edited.replacen("holidays = [2027-01-01]", "holidays = [2027-01-01, 2028-01-01]", 1),
            "2028-01-01",
            "is not in 2027",
        );
        add(
            "weekday make-up day",
            edited.replacen("holidays = [2027-01-01]", "holidays = [2027-01-01]\nmake_up_workdays = [2027-01-04]", 1),
            "2027-01-04",
            "not a weekend day",
        );
        add("unknown nature", edited.replacen("nature = \"ZX\"", "nature = \"闲聊\"", 1), "闲聊", "unknown nature");
        add(
            "bad limit",
            edited.replacen("solve = \"15 working days\"", "solve = \"15 weeks\"", 1),
            "15 weeks",
            "not a time limit",
        );
        add("bad time", edited.replacen("workday_end = \"17:30\"", "workday_end = \"25:00\"", 1), "25:00", "HH:MM");
        add(
            "bad retention",
            edited.replacen("retention_days = 365", "retention_days = 0", 1),
            "retention_days = 0",
            "out of range",
        );
        // Issue 15 §4, §5: SMS templates and canned replies.
        add(
            "unknown placeholder",
            edited.replacen("查询码{查询码}", "身份证{身份证号}", 1),
            "{身份证号}",
            "uses `{身份证号}`, which it cannot fill",
        );
        add(
            "query code outside the registration",
            edited.replacen("已答复：{答复}", "已答复，查询码{查询码}", 1),
            "已答复，查询码{查询码}",
            "sms.replied",
        );
        add(
            "unknown SMS kind",
            edited.replacen("\nreplied = ", "\nreplyed = ", 1),
            "replyed = ",
            "unknown SMS template",
        );
        add("unclosed brace", edited.replacen("已答复：{答复}", "已答复：{答复", 1), "已答复：{答复", "unclosed");
        add(
            "canned reply status",
            edited.replacen("status = \"IN_PROGRESS\"", "status = \"办完了\"", 1),
            "办完了",
            "unknown status",
        );
        list
    };
    let bad = dir.path().join("bad.toml");
    for (what, text, line, expect) in &bad_files {
        std::fs::write(&bad, text).unwrap();
        let error = fails(dir.path(), &["hall", "import", bad.to_str().unwrap()], 2);
        assert!(error.contains(&format!("bad.toml{line}")) && error.contains(expect), "{what}: {error}");
        if *what == "unknown unit" {
            assert!(error.contains("hint: known units: SW, ZH"), "{error}");
        }
        if *what == "unknown nature" {
            assert!(error.contains("ZX (咨询)"), "{error}");
        }
        println!("{what}: {}", error.lines().nth(1).unwrap_or_default().trim());
    }
    assert_eq!(json(&ok(dir.path(), &["hall", "log", "--json"]))["edits"].as_array().unwrap().len(), log_before + 1);
    assert_eq!(json(&ok(dir.path(), &["hall", "show", "--json"]))["name"], "某区政务服务中心（新）");
    println!("{} bad files refused by line, nothing changed", bad_files.len());

    // A window node may look (show, export, dry-run) but not import.
    let (window, _) = enrolled_node(dir.path(), "W02", "window");
    let error = fails(window.path(), &["hall", "import", file.to_str().unwrap()], 1);
    assert!(error.contains("only the admin node"), "{error}");
}

/// Issue 12's round trip on running nodes: export → edit → import on the admin while the admin and a window node run;
/// the window node's hall document has it within a second or so (the admin's node polls `hall.automerge` each second
/// and pushes the signed change).
#[test]
fn an_imported_configuration_reaches_every_running_node() {
    let admin = tempfile::tempdir().unwrap();
    new_hall(admin.path());
    let (window, _) = enrolled_node(admin.path(), "2F03", "window");
    let admin_node = start_node(admin.path());
    ok(window.path(), &["peers", "add", &admin_node.sync_addr]);
    let _window_node = start_node(window.path());
    let file = admin.path().join("exported.toml");
    ok(admin.path(), &["hall", "export", "--out", file.to_str().unwrap()]);
    let text = std::fs::read_to_string(&file).unwrap();
    let edited = text
        .replace("[units.ZH]", "[units.XZ]\nname = \"行政审批局\"\n\n[units.ZH]")
        .replace("lead_unit = \"ZH\"", "lead_unit = \"XZ\"");
    std::fs::write(&file, edited).unwrap();
    ok(admin.path(), &["hall", "import", file.to_str().unwrap()]);
    let took = wait_for("the window node to see the import", || {
        let shown = json(&ok(window.path(), &["hall", "show", "--json"]));
        shown["categories"]["ZONGHE"]["lead_unit"] == "XZ"
    });
    println!("the imported configuration reached the running window node in {} ms", took.as_millis());
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}

/// No default hall (issue 12 §1): a node that has not joined a hall says so instead of showing the demo's Jiang'an
/// hall, and a damaged hall document is an error naming it, never replaced.
#[test]
fn no_default_hall_before_joining_and_a_damaged_hall_document_is_an_error() {
    let node = tempfile::tempdir().unwrap();
    ok(node.path(), &["init", "--window", "W9"]);
    let status = json(&ok(node.path(), &["status", "--json"]));
    assert_eq!(status["hall"], serde_json::Value::Null, "{status}");
    assert!(ok(node.path(), &["status"]).contains("(not joined yet)"));
    let error = fails(node.path(), &["hall", "show"], 2);
    assert!(error.contains("has not joined a hall") && error.contains("hint: ask the admin"), "{error}");
    let error = fails(
        node.path(),
        &["case", "new", "--nature", "咨询", "--category", "BDC", "--summary", "x", "--detail", "y"],
        2,
    );
    assert!(!error.contains("panicked") && error.contains("has not joined a hall"), "{error}");

    let admin = tempfile::tempdir().unwrap();
    new_hall(admin.path());
    std::fs::write(admin.path().join("hall.automerge"), b"not an automerge document").unwrap();
    for args in [&["status"][..], &["hall", "show"], &["staff", "list"]] {
        let error = fails(admin.path(), args, 2);
        assert!(error.contains("the hall document is unreadable"), "{args:?}: {error}");
    }
    assert_eq!(std::fs::read(admin.path().join("hall.automerge")).unwrap(), b"not an automerge document");
    println!("an unjoined node and a damaged hall document: refused with a clear error, nothing rewritten");
}

/// Issue 14 §5 (T3): a revoked node's `zhaowo sync` is told why and stops at once (exit 1, the reason, a hint), where
/// it used to wait out its whole timeout behind "is the peer running and reachable?", even with `-vvv` or `--json`.
#[test]
fn a_revoked_node_is_told_why_its_sync_is_refused() {
    let admin = tempfile::tempdir().unwrap();
    new_hall(admin.path());
    let (laptop, laptop_id) = enrolled_node(admin.path(), "V01", "volunteer");
    // Revoked before the admin node runs: the laptop has not heard of it and dials as a member.
    ok(admin.path(), &["revoke", &laptop_id]);
    let admin_node = start_node(admin.path());
    let started = std::time::Instant::now();
    let error = fails(laptop.path(), &["sync", "--peer", &admin_node.sync_addr, "--timeout-secs", "60"], 1);
    let took = started.elapsed();
    assert!(error.contains("refused this node: this node was revoked by the hall admin"), "{error}");
    assert!(error.contains("hint: "), "{error}");
    assert!(!error.contains("is the peer running"), "{error}");
    assert!(took < std::time::Duration::from_secs(30), "told after {took:?}, not at once");
    let output = zhaowo(laptop.path(), &["--json", "sync", "--peer", &admin_node.sync_addr, "--timeout-secs", "60"]);
    assert_eq!(output.status.code(), Some(1));
    let report = json(&stdout(&output));
    assert_eq!(report["peers"][0]["refusal"], "revoked", "{report}");
    println!(
        "T3 refused node: revoked laptop told in {} ms (was the whole --timeout-secs): {}",
        took.as_millis(),
        error.lines().find(|line| line.starts_with("error:")).unwrap_or_default()
    );
}

/// Percent-encodes a form value (`application/x-www-form-urlencoded`).
fn form_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (byte as char).to_string(),
            _ => format!("%{byte:02X}"),
        })
        .collect()
}

/// One HTTP/1.1 exchange over a socket bound to `from` (loopback: every 127.x address reaches the node).
fn http_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr, request: &str) -> String {
    use std::io::{Read, Write};
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&std::net::SocketAddr::from((from, 0)).into()).unwrap();
    socket.connect_timeout(&to.into(), std::time::Duration::from_secs(10)).unwrap();
    let mut stream: std::net::TcpStream = socket.into();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(60))).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// A citizen's report over HTTP from `from`: the form (its CSRF cookie and hidden token), then the post with both.
/// Returns the response's status line and body.
fn citizen_report(from: std::net::Ipv4Addr, to: std::net::SocketAddr, summary: &str) -> String {
    let host = to.to_string();
    let form = http_from(from, to, &format!("GET /r/BBC01 HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"));
    let cookie = form
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: ").or_else(|| line.strip_prefix("Set-Cookie: ")))
        .and_then(|value| value.split(';').next())
        .filter(|value| value.starts_with("zw_csrf="))
        .unwrap_or_else(|| panic!("no csrf cookie: {form}"))
        .to_owned();
    let marker = "name=\"csrf\" value=\"";
    let start = form.find(marker).expect("a csrf field") + marker.len();
    let csrf = &form[start..start + form[start..].find('"').unwrap()];
    let body = format!(
        "csrf={}&nature=QZ&category=BDC&summary={}&detail={}",
        form_encode(csrf),
        form_encode(summary),
        form_encode("群众扫码反映，需窗口跟进")
    );
    http_from(
        from,
        to,
        &format!(
            "POST /r/BBC01 HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/x-www-form-urlencoded\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

/// T3 of issue 12: a running `zhaowo run` node, 8 CLI processes registering 5 cases each into its store at once,
/// and citizens reporting over HTTP to the node meanwhile: every write is acknowledged and no 登记编号 repeats.
#[test]
fn register_concurrency_cli_processes_and_citizens_never_fail_nor_repeat_a_number() {
    use std::io::BufRead;
    const CLI_PROCESSES: usize = 8;
    const CASES_PER_PROCESS: usize = 5;
    // The citizen page allows 10 reports per address and period: three addresses, 8 reports each.
    const CITIZEN_ADDRESSES: u8 = 3;
    const REPORTS_PER_ADDRESS: usize = 8;
    let dir = tempfile::tempdir().unwrap();
    new_hall(dir.path());
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_zhaowo"))
        .args(["--dir", dir.path().to_str().unwrap(), "run", "--desk", "127.0.0.1:0", "--http", "127.0.0.1:0"])
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("ZHAOWO_DIR")
        // Our own crates at their most verbose (issue 13 §7: no personal data at any verbosity), the rest at info.
        .env("ZHAOWO_LOG", "info,zhaowo=trace,zhaowo_node=trace,zhaowo_crdt=trace")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let citizen = lines
        .find_map(|line| line.ok().and_then(|line| line.strip_prefix("citizen page").map(|url| url.trim().to_owned())))
        .expect("a citizen page line");
    let node = Running { child, sync_addr: String::new() };
    let addr: std::net::SocketAddr =
        citizen.strip_prefix("http://").unwrap().trim_end_matches("/r/BBC01").parse().expect("a socket address");

    let started = std::time::Instant::now();
    let cli: Vec<_> = (0..CLI_PROCESSES)
        .map(|process| {
            let dir = dir.path().to_owned();
            std::thread::spawn(move || {
                let mut failures = Vec::new();
                for case in 0..CASES_PER_PROCESS {
                    let summary = format!("并发登记 进程{process} 第{case}件");
                    let output = zhaowo(
                        &dir,
                        &[
                            "case",
                            "new",
                            "--nature",
                            "求助",
                            "--category",
                            "BDC",
                            "--summary",
                            &summary,
                            "--detail",
                            "窗口登记",
                            "--json",
                        ],
                    );
                    if output.status.code() != Some(0) {
                        failures.push(stderr(&output));
                    }
                }
                failures
            })
        })
        .collect();
    let http: Vec<_> = (0..CITIZEN_ADDRESSES)
        .map(|address| {
            std::thread::spawn(move || {
                let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + address);
                let mut failures = Vec::new();
                for report in 0..REPORTS_PER_ADDRESS {
                    let response = citizen_report(from, addr, &format!("扫码反映 地址{address} 第{report}件"));
                    if !response.starts_with("HTTP/1.1 200") || !response.contains("查询码") {
                        failures.push(response.lines().next().unwrap_or_default().to_owned());
                    }
                }
                failures
            })
        })
        .collect();
    let cli_failures: Vec<String> = cli.into_iter().flat_map(|thread| thread.join().unwrap()).collect();
    let http_failures: Vec<String> = http.into_iter().flat_map(|thread| thread.join().unwrap()).collect();
    let elapsed = started.elapsed();
    drop(node);

    let rows = json(&ok(dir.path(), &["case", "list", "--limit", "500", "--json"]));
    let mut numbers = std::collections::BTreeMap::<String, usize>::new();
    for row in rows.as_array().unwrap() {
        *numbers.entry(row["reg_no"].as_str().unwrap().to_owned()).or_default() += 1;
    }
    let repeated = numbers.values().filter(|&&count| count > 1).count();
    let cases: usize = numbers.values().sum();
    let cli_writes = CLI_PROCESSES * CASES_PER_PROCESS;
    let http_reports = usize::from(CITIZEN_ADDRESSES) * REPORTS_PER_ADDRESS;
    let locked = cli_failures.iter().filter(|text| text.contains("database is locked")).count();
    println!(
        "register concurrency cli_writes={cli_writes} cli_failed={} http_reports={http_reports} http_failed={} \
         numbers={} cases={cases} repeated={repeated} database_locked={locked} elapsed_ms={}",
        cli_failures.len(),
        http_failures.len(),
        numbers.len(),
        elapsed.as_millis()
    );
    assert!(cli_failures.is_empty(), "CLI writes failed: {:?}", cli_failures.first());
    assert!(http_failures.is_empty(), "citizen reports failed: {http_failures:?}");
    assert_eq!(repeated, 0, "repeated numbers: {:?}", numbers.iter().filter(|&(_, &c)| c > 1).collect::<Vec<_>>());
    assert_eq!(cases, cli_writes + http_reports, "every acknowledged case is in the register book");
    assert_eq!(numbers.len(), cases);
}

/// Issue 14 §1 from the terminal: one damaged change row. `reindex` lists the document it skipped and exits 1
/// (before: "reindexed N cases", exit 0, and the case silently left the register book); `verify` reports it and
/// quarantines it, and `status` shows the quarantine.
#[test]
fn a_damaged_document_makes_reindex_and_verify_fail_and_status_shows_it() {
    let dir = tempfile::tempdir().unwrap();
    new_hall(dir.path());
    for _ in 0..3 {
        register(dir.path());
    }
    let damaged = {
        let db = rusqlite::Connection::open(dir.path().join("cases.db")).unwrap();
        let doc: String =
            db.query_row("SELECT doc_id FROM catalog ORDER BY local_seq LIMIT 1", [], |row| row.get(0)).unwrap();
        // A registration (sealed values do not compress) may be stored as a snapshot without change rows: damage both.
        db.execute(
            "UPDATE changes SET bytes = CAST(substr(bytes, 1, 20) || \
                 CASE WHEN substr(bytes, 21, 1) = x'00' THEN x'01' ELSE x'00' END || substr(bytes, 22) AS BLOB) \
             WHERE doc_id = ?1",
            [&doc],
        )
        .unwrap();
        db.execute(
            "UPDATE docs SET snapshot = CAST(substr(snapshot, 1, 20) || \
                 CASE WHEN substr(snapshot, 21, 1) = x'00' THEN x'01' ELSE x'00' END || substr(snapshot, 22) AS BLOB) \
             WHERE doc_id = ?1 AND length(snapshot) > 0",
            [&doc],
        )
        .unwrap();
        doc
    };
    let output = zhaowo(dir.path(), &["reindex"]);
    let out = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "{out} {}", stderr(&output));
    assert!(out.contains(&format!("skipped {damaged}")) && out.contains("reindexed 2 cases, skipped 1"), "{out}");
    let error = fails(dir.path(), &["verify"], 1);
    assert!(error.contains("problems found"), "{error}");
    let status = json(&ok(dir.path(), &["status", "--json"]));
    assert_eq!(status["quarantined"]["count"], 1, "{status}");
    assert_eq!(status["quarantined"]["case_ids"][0], damaged.as_str());
    println!("damaged document from the CLI: reindex exit=1 reindexed=2 skipped=1 verify exit=1 quarantined=1");
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

/// Issue 12 §4: 解除并案 was the desk's only; `case unmerge` undoes a `case duplicate` in one store transaction, and a
/// case that is no duplicate is refused (exit 1) with nothing changed.
#[test]
fn case_unmerge_undoes_a_duplicate_from_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    new_hall(dir.path());
    let (master, _) = register(dir.path());
    let (duplicate, _) = register(dir.path());
    ok(dir.path(), &["case", "duplicate", &duplicate, "--of", &master]);
    let merged = json(&ok(dir.path(), &["case", "show", &duplicate, "--json"]));
    assert_eq!(merged["status"], "DUPLICATE", "{merged}");
    ok(dir.path(), &["case", "unmerge", &duplicate]);
    let unmerged = json(&ok(dir.path(), &["case", "show", &duplicate, "--json"]));
    assert_eq!(unmerged["status"], "REGISTERED", "{unmerged}");
    assert!(unmerged["duplicate_of"].is_null(), "{unmerged}");
    let master_view = json(&ok(dir.path(), &["case", "show", &master, "--json"]));
    let listed = master_view["duplicates"].as_array().map_or(0, Vec::len);
    assert_eq!(listed, 0, "the master no longer lists it: {master_view}");
    let error = fails(dir.path(), &["case", "unmerge", &duplicate], 1);
    assert!(error.contains("is not a duplicate"), "{error}");
    let after = json(&ok(dir.path(), &["case", "show", &duplicate, "--json"]));
    assert_eq!(after, unmerged, "the refused unmerge changed nothing");
    println!("case unmerge: {duplicate} merged into {master}, then REGISTERED again; a second unmerge refused");
}

/// How many of `texts` appear, as UTF-8 bytes, in any file directly in `dir` (database, WAL, key files, logs).
fn texts_in_dir(dir: &Path, texts: &[&str]) -> usize {
    let files: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|entry| entry.ok().filter(|e| e.path().is_file()).and_then(|e| std::fs::read(e.path()).ok()))
        .collect();
    texts
        .iter()
        .filter(|text| files.iter().any(|bytes| bytes.windows(text.len()).any(|window| window == text.as_bytes())))
        .count()
}

/// One request of the SMS platform stand-in: its head and its body (read to `Content-Length`), answered `200 OK`.
fn serve_one_sms(stream: &mut std::net::TcpStream) -> (String, String) {
    use std::io::{Read, Write};
    let mut bytes = Vec::new();
    let mut buffer = [0u8; 4096];
    let head_end = loop {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "the request ended early");
        bytes.extend_from_slice(&buffer[..read]);
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&bytes[..head_end]).to_string();
    let length: usize = head
        .lines()
        .find_map(|line| line.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("a content length");
    while bytes.len() < head_end + length {
        let read = stream.read(&mut buffer).unwrap();
        bytes.extend_from_slice(&buffer[..read]);
    }
    let body = String::from_utf8(bytes[head_end..head_end + length].to_vec()).unwrap();
    stream.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok").unwrap();
    (head, body)
}

/// Issue 15 §4 through the real binary: `[sms]` in `node.toml`, a hall file with a `registered` template, a case the
/// CLI registers (`--sms-ok`) while `zhaowo -vv run` runs on the same data directory: the running node posts the
/// message (the CLI's row, written in its registering transaction) to the platform with the token and the
/// idempotency key, the text holds the 查询码, and the node's log holds neither the phone nor the code. See: #15
#[test]
fn a_running_node_sends_the_sms_of_a_case_the_cli_registered() {
    let dir = tempfile::tempdir().unwrap();
    new_hall(dir.path());
    let file = dir.path().join("sms.toml");
    let template = "【{大厅}】您的诉求已登记，编号{登记编号}，查询码{查询码}。";
    std::fs::write(&file, format!("{}\n[sms]\nregistered = \"{template}\"\n", jiangan_toml())).unwrap();
    ok(dir.path(), &["hall", "import", file.to_str().unwrap()]);
    let platform = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = platform.local_addr().unwrap();
    let config = dir.path().join("node.toml");
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str(&format!("\n[sms]\nendpoint = \"http://{address}/api/sms\"\ntoken = \"cli-token-1\"\n"));
    std::fs::write(&config, text).unwrap();
    let _node = start_node(dir.path());
    let error = fails(dir.path(), &["case", "new", "--summary", "x", "--sms-ok"], 2);
    assert!(error.contains("--phone"), "--sms-ok needs a phone: {error}");
    let out = json(&ok(
        dir.path(),
        &[
            "case",
            "new",
            "--nature",
            "咨询",
            "--category",
            "BDC",
            "--summary",
            "不动产登记需要哪些材料",
            "--detail",
            "想办理不动产登记",
            "--phone",
            "13612345678",
            "--sms-ok",
            "--json",
        ],
    ));
    let (code, reg_no) = (out["query_code"].as_str().unwrap(), out["reg_no"].as_str().unwrap());
    platform.set_nonblocking(false).unwrap();
    let (sender, received) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        if let Ok((mut stream, _)) = platform.accept() {
            drop(sender.send(serve_one_sms(&mut stream)));
        }
    });
    let (head, body) = received.recv_timeout(std::time::Duration::from_secs(60)).expect("the node posted the SMS");
    let message = json(&body);
    println!(
        "sms end to end: {} kind={} key={}",
        head.lines().next().unwrap_or_default(),
        message["kind"],
        message["idempotency_key"]
    );
    assert!(head.starts_with("POST /api/sms HTTP/1.1") && head.contains("Bearer cli-token-1"), "{head}");
    assert_eq!((message["kind"].as_str(), message["phone"].as_str()), (Some("registered"), Some("13612345678")));
    let sms = message["text"].as_str().unwrap();
    assert!(sms.contains(code) && sms.contains(reg_no) && sms.contains("江岸区"), "{sms}");
    assert!(
        head.to_ascii_lowercase().contains(&format!(
            "idempotency-key: {}",
            message["idempotency_key"].as_str().unwrap().to_ascii_lowercase()
        ))
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap();
    assert!(log.contains("SMS sent"), "the node logs the send");
    assert!(!log.contains("13612345678") && !log.contains(code) && !log.contains("cli-token-1"), "{log}");
}

/// The citizen's 好差评 as the lookup page writes it (role 群众, through the node's store): the CLI has no citizen
/// command, the citizen rates on their phone.
fn rate_as_citizen(dir: &Path, reg_no: &str, command: zhaowo_crdt::Command) {
    let home = zhaowo_node::home::Home::open(dir).unwrap();
    let hall = std::sync::Arc::new(home.hall().unwrap());
    let store = home.open_store().unwrap();
    let ctx = zhaowo_crdt::Ctx {
        now_ms: zhaowo_node::home::now_ms(),
        entropy: zhaowo_node::home::entropy().unwrap(),
        secret: zhaowo_node::home::secret().unwrap(),
        author: zhaowo_crdt::Author {
            node: home.identity.node_id(),
            staff: "citizen".to_owned(),
            role: zhaowo_crdt::model::Role::Citizen,
            window: home.config.window.clone(),
        },
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let reg_no = zhaowo_crdt::RegNo::parse(reg_no).unwrap();
        let case_id = store.case_id_by_reg_no(&reg_no).await.unwrap().unwrap();
        store.apply(&case_id, ctx, hall, command).await.unwrap();
    });
}

// See: issue 15 §2.
#[test]
fn a_bad_rating_is_followed_through_from_the_terminal() {
    use zhaowo_crdt::model::{BadReviewReason, Satisfaction};
    let dir = tempfile::tempdir().unwrap();
    new_hall(dir.path());
    let (reg_no, _) = register(dir.path());
    for args in [
        vec!["case", "dispatch", &reg_no],
        vec!["case", "sign", &reg_no, "--assignee", "王工"],
        vec!["case", "resolve", &reg_no, "--result", "已办成", "--reply", "两本证书已办好"],
    ] {
        ok(dir.path(), &args);
    }
    let error = fails(dir.path(), &["case", "bad-review", &reg_no, "--step", "核实", "--text", "x"], 1);
    assert!(error.contains("no open bad-review task"), "{error}");
    let rating = zhaowo_crdt::Command::Rate {
        level: Satisfaction::Dissatisfied,
        reasons: vec![BadReviewReason::Slow],
        comment: "等了很久".to_owned(),
    };
    rate_as_citizen(dir.path(), &reg_no, rating);
    let error = fails(dir.path(), &["case", "bad-review", &reg_no, "--step", "整改", "--text", "x"], 1);
    assert!(error.contains("the next step of the bad-review task is 核实"), "{error}");
    for (step, text) in [("核实", "确认超时"), ("RECTIFY", "调整流程"), ("反馈", "已向您致歉")] {
        ok(dir.path(), &["case", "bad-review", &reg_no, "--step", step, "--text", text]);
    }
    ok(dir.path(), &["case", "appeal", &reg_no, "--reason", "超时系外单位原因"]);
    // The admin node is not the 督查科: it may appeal for its window but not decide.
    let error = fails(dir.path(), &["case", "decide-appeal", &reg_no, "--upheld", "--note", "成立"], 1);
    assert!(error.contains("may not decide an appeal"), "{error}");
    let text = ok(dir.path(), &["case", "show", &reg_no]);
    assert!(text.contains("好差评    不满意") && text.contains("差评任务  已反馈"), "{text}");
    assert!(text.contains("差评反馈：已向您致歉") && text.contains("承办单位申诉复核"), "{text}");
    let view = json(&ok(dir.path(), &["case", "show", &reg_no, "--json"]));
    assert_eq!(view["bad_reviews"][0]["steps"].as_array().unwrap().len(), 3);
    println!(
        "差评 from the terminal: 3 steps in order (2 refusals before), an appeal, a decision refused to the admin"
    );
}

/// Issue 16 from the terminal: materials attached (checked by content, GPS EXIF stripped), listed, downloaded with a
/// record on the timeline, published and removed; a bundle carries their sealed files to another hall PC
/// (`--no-materials` leaves them out), which then reads them.
#[test]
fn materials_are_attached_downloaded_and_carried_by_bundles() {
    let admin = tempfile::tempdir().unwrap();
    new_hall(admin.path());
    let (window, _) = enrolled_node(admin.path(), "2F03", "window");
    let (reg_no, _) = register(admin.path());
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crdt/fuzz/seeds/material_file");
    let (photo, scan) = (seeds.join("gps-photo.jpg"), seeds.join("scan.pdf"));
    let attached = json(&ok(
        admin.path(),
        &["case", "attach", &reg_no, photo.to_str().unwrap(), scan.to_str().unwrap(), "--json"],
    ));
    let ids: Vec<String> =
        attached["attached"].as_array().unwrap().iter().map(|a| a["material"].as_str().unwrap().to_owned()).collect();
    assert_eq!(ids.len(), 2, "{attached}");
    // Refused: not a material by its content (an executable named .jpg), too large, an unknown case.
    let fake = admin.path().join("photo.jpg");
    std::fs::write(&fake, b"MZ\x90\x00 not an image").unwrap();
    let error = fails(admin.path(), &["case", "attach", &reg_no, fake.to_str().unwrap()], 1);
    assert!(error.contains("JPEG, PNG, WebP or PDF"), "{error}");
    let big = admin.path().join("big.jpg");
    std::fs::write(&big, vec![0xFF; zhaowo_crdt::materials::MATERIAL_BYTES_MAX + 1]).unwrap();
    let error = fails(admin.path(), &["case", "attach", &reg_no, big.to_str().unwrap()], 1);
    assert!(error.contains("over the limit"), "{error}");
    let listed = json(&ok(admin.path(), &["case", "materials", &reg_no, "--json"]));
    let materials = listed["materials"].as_array().unwrap();
    assert_eq!(materials.len(), 2, "{listed}");
    assert!(materials.iter().all(|m| m["on_this_node"] == true));
    let shown = json(&ok(admin.path(), &["case", "show", &reg_no, "--json"]));
    let thumbs: Vec<bool> = shown["materials"].as_array().unwrap().iter().map(|m| m["thumb"].is_string()).collect();
    assert_eq!(thumbs, [true, false], "a thumbnail for the photo, none for the PDF");
    assert_eq!(materials[0]["name"], "gps-photo.jpg");

    // A download writes the cleaned photo (no EXIF, so no GPS) and is recorded on the timeline.
    let out = admin.path().join("out.jpg");
    ok(admin.path(), &["case", "material-get", &reg_no, &ids[0], "--out", out.to_str().unwrap()]);
    let got = std::fs::read(&out).unwrap();
    assert!(got.starts_with(&[0xFF, 0xD8, 0xFF]) && !got.windows(4).any(|w| w == b"Exif"), "EXIF left in the photo");
    let shown = json(&ok(admin.path(), &["case", "show", &reg_no, "--json"]));
    let labels: Vec<&str> =
        shown["timeline"].as_array().unwrap().iter().map(|e| e["label"].as_str().unwrap()).collect();
    assert_eq!(labels.iter().filter(|l| **l == "查看材料").count(), 1, "{labels:?}");
    assert_eq!(labels.iter().filter(|l| **l == "上传材料").count(), 2, "{labels:?}");
    fails(admin.path(), &["case", "material-get", &reg_no, "NOT-AN-ID", "--out", out.to_str().unwrap()], 1);

    // Bundles: with the files, and without them.
    let with = admin.path().join("with.bundle");
    let without = admin.path().join("without.bundle");
    let exported = json(&ok(admin.path(), &["bundle", "export", "--out", with.to_str().unwrap(), "--json"]));
    assert_eq!(exported["materials"], 3, "two materials and the photo's thumbnail: {exported}");
    let lean =
        json(&ok(admin.path(), &["bundle", "export", "--out", without.to_str().unwrap(), "--no-materials", "--json"]));
    assert_eq!(lean["materials"], 0, "{lean}");
    assert!(lean["bytes"].as_u64() < exported["bytes"].as_u64());
    println!(
        "bundle with 2 materials and a thumbnail: {} bytes; with --no-materials: {} bytes",
        exported["bytes"], lean["bytes"]
    );
    let imported = json(&ok(window.path(), &["bundle", "import", without.to_str().unwrap(), "--json"]));
    assert_eq!(imported["materials_taken"], 0, "{imported}");
    let listed = json(&ok(window.path(), &["case", "materials", &reg_no, "--json"]));
    assert!(listed["materials"].as_array().unwrap().iter().all(|m| m["on_this_node"] == false), "{listed}");
    let status = json(&ok(window.path(), &["status", "--json"]));
    assert_eq!((status["materials"]["named"].as_u64(), status["materials"]["missing"].as_u64()), (Some(3), Some(3)));
    let error = fails(window.path(), &["case", "material-get", &reg_no, &ids[1], "--out", out.to_str().unwrap()], 1);
    assert!(error.contains("not on this node yet"), "{error}");
    let imported = json(&ok(window.path(), &["bundle", "import", with.to_str().unwrap(), "--json"]));
    assert_eq!(imported["materials_taken"], 3, "{imported}");
    let pdf = window.path().join("scan.pdf");
    ok(window.path(), &["case", "material-get", &reg_no, &ids[1], "--out", pdf.to_str().unwrap()]);
    assert_eq!(std::fs::read(&pdf).unwrap(), std::fs::read(&scan).unwrap(), "a PDF is kept as it is");

    // `verify` reads every file: a damaged one is reported (exit 1) and deleted, so sync fetches it again.
    let verified = json(&ok(window.path(), &["verify", "--json"]));
    assert_eq!((verified["materials"]["named"].as_u64(), verified["materials"]["held"].as_u64()), (Some(3), Some(3)));
    let stored: Vec<std::path::PathBuf> = walk(&window.path().join("materials"))
        .into_iter()
        .filter(|path| path.file_name().unwrap().len() == 64)
        .collect();
    assert_eq!(stored.len(), 3);
    let mut damaged = std::fs::read(&stored[0]).unwrap();
    damaged[50] ^= 1;
    std::fs::write(&stored[0], damaged).unwrap();
    let error = fails(window.path(), &["verify"], 1);
    assert!(error.contains("1 problems found"), "{error}");
    let verified = json(&ok(window.path(), &["verify", "--json"]));
    assert_eq!((verified["materials"]["held"].as_u64(), verified["materials"]["missing"].as_u64()), (Some(2), Some(1)));

    // `backup` copies the files beside the store; a disk that lost them gets them back with `restore`.
    let backup = admin.path().join("backup.db");
    ok(admin.path(), &["backup", "--out", backup.to_str().unwrap()]);
    let copied =
        walk(&admin.path().join("backup.db.materials")).iter().filter(|p| p.file_name().unwrap().len() == 64).count();
    assert_eq!(copied, 3, "two materials and a thumbnail beside the backup");
    std::fs::remove_dir_all(admin.path().join("materials")).unwrap();
    let verified = json(&ok(admin.path(), &["verify", "--json"]));
    assert_eq!(verified["materials"]["missing"].as_u64(), Some(3));
    ok(admin.path(), &["restore", backup.to_str().unwrap()]);
    let verified = json(&ok(admin.path(), &["verify", "--json"]));
    assert_eq!((verified["materials"]["held"].as_u64(), verified["materials"]["missing"].as_u64()), (Some(3), Some(0)));

    // Publish, then remove with a reason.
    ok(admin.path(), &["case", "material-publish", &reg_no, &ids[0]]);
    ok(admin.path(), &["case", "material-remove", &reg_no, &ids[1], "--reason", "重复上传"]);
    let listed = json(&ok(admin.path(), &["case", "materials", &reg_no, "--json"]));
    let materials = listed["materials"].as_array().unwrap();
    assert_eq!(materials.len(), 1);
    assert_eq!(materials[0]["public"], true);
}

/// Every file under `dir`, recursively.
fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() { files.extend(walk(&path)) } else { files.push(path) }
    }
    files
}
