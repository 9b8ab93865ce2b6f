//! Policy checks of the source tree (rust-analyzer's tidy tests): module docs, no placeholders, a pure `zhaowo-crdt`.

use std::path::{Path, PathBuf};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ lives in the workspace root").to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if name == "target" || name.to_string_lossy().starts_with('.') {
            continue;
        }
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

fn all_rust_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    for member in ["crdt", "node", "cli", "tests", "examples"] {
        rust_files(&workspace_root().join(member), &mut files);
    }
    assert!(files.len() > 10, "tidy found only {} files: is it looking in the right place?", files.len());
    files
}

#[test]
fn crdt_depends_on_no_io_crate() {
    let manifest = std::fs::read_to_string(workspace_root().join("crdt/Cargo.toml")).unwrap();
    for banned in ["tokio", "quinn", "rusqlite", "rand", "getrandom", "socket2", "axum"] {
        let as_dependency = manifest.lines().any(|line| {
            let key = line.split(['=', '.']).next().unwrap_or("").trim();
            key == banned
        });
        assert!(!as_dependency, "crdt/Cargo.toml must not depend on `{banned}`: zhaowo-crdt is pure");
    }
}

#[test]
fn crdt_never_reads_the_clock() {
    let mut files = Vec::new();
    rust_files(&workspace_root().join("crdt/src"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // Addresses (`SocketAddr`) are plain values and may appear; sockets and files may not.
        for banned in [
            "SystemTime::now",
            "Instant::now",
            "ActorId::random",
            "std::fs",
            "TcpStream",
            "TcpListener",
            "UdpSocket",
            "thread_rng",
        ] {
            assert!(
                !text.contains(banned),
                "{} uses `{banned}`: crdt takes time and randomness from its caller",
                file.display()
            );
        }
    }
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut missing = Vec::new();
    for file in all_rust_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        if !text.trim_start().starts_with("//!") {
            missing.push(file.display().to_string());
        }
    }
    assert!(missing.is_empty(), "files without a `//!` module doc: {missing:?}");
}

#[test]
fn no_placeholders_or_ignored_tests() {
    let banned = [
        concat!("to", "do!("),
        concat!("unimpl", "emented!("),
        concat!("db", "g!("),
        concat!("#[ig", "nore"),
        concat!("should", "_panic"),
    ];
    let mut hits = Vec::new();
    for file in all_rust_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        for needle in banned {
            if text.contains(needle) {
                hits.push(format!("{}: {needle}", file.display()));
            }
        }
    }
    assert!(hits.is_empty(), "placeholders in the tree: {hits:?}");
}

/// The section of ARCHITECTURE.md's code map about one crate: from its `### `dir/`` heading to the next heading.
fn code_map_section(architecture: &str, dir: &str) -> String {
    let heading = format!("### `{dir}/`");
    let start = architecture.find(&heading).unwrap_or_else(|| panic!("ARCHITECTURE.md has no `{heading}` section"));
    let rest = &architecture[start + heading.len()..];
    let end = rest.find("\n#").unwrap_or(rest.len());
    rest[..end].to_string()
}

/// The modules a crate root declares (`mod x;` / `pub mod x;`), with whether each is public.
fn declared_modules(root: &Path) -> Vec<(String, bool)> {
    let text = std::fs::read_to_string(root).unwrap();
    text.lines()
        .filter_map(|line| {
            let line = line.trim();
            let (public, rest) = match line.strip_prefix("pub mod ") {
                Some(rest) => (true, rest),
                None => (false, line.strip_prefix("mod ")?),
            };
            let name = rest.strip_suffix(';')?.trim();
            Some((name.to_string(), public))
        })
        .collect()
}

/// A newcomer finds their room in the code map: every public module of `zhaowo-crdt` and `zhaowo-node`, and every
/// module of the CLI, is named in its crate's section of ARCHITECTURE.md (issue 12).
#[test]
fn every_public_module_is_in_the_code_map() {
    let architecture = std::fs::read_to_string(workspace_root().join("ARCHITECTURE.md")).unwrap();
    let mut missing = Vec::new();
    let mut checked = 0;
    for (dir, root, only_public) in
        [("crdt", "crdt/src/lib.rs", true), ("node", "node/src/lib.rs", true), ("cli", "cli/src/main.rs", false)]
    {
        let section = code_map_section(&architecture, dir);
        for (module, public) in declared_modules(&workspace_root().join(root)) {
            if only_public && !public {
                continue;
            }
            checked += 1;
            let named =
                [format!("`{module}`"), format!("`{module}.rs`"), format!("`{module}/`"), format!("`{module}::")]
                    .iter()
                    .any(|form| section.contains(form.as_str()));
            if !named {
                missing.push(format!("{dir}: {module}"));
            }
        }
    }
    println!("tidy code map: {checked} modules checked, {} missing", missing.len());
    assert!(checked > 20, "the code-map check found only {checked} modules: is it reading the crate roots?");
    assert!(missing.is_empty(), "modules missing from ARCHITECTURE.md's code map: {missing:?}");
}
