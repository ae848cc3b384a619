//! Checks over the source tree itself, with no server: README.md and ARCHITECTURE.md
//! stay short and name only files, tests and types that exist; and the wire
//! contract's names (subjects, streams, KV buckets) are spelled only where the
//! contract and the layout are built.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use regex::Regex;
use walkdir::WalkDir;

/// The repository's root (this crate lives in `tests/`).
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate has a parent directory")
        .to_path_buf()
}

/// Every file of the tree, relative to the root, outside build output, VCS data and
/// the local stack's state.
fn tree_files(root: &Path) -> Vec<PathBuf> {
    WalkDir::new(root)
        .into_iter()
        .filter_entry(|entry| {
            let name = entry.file_name().to_string_lossy();
            !(entry.depth() > 0
                && entry.file_type().is_dir()
                && matches!(name.as_ref(), "target" | ".git" | ".dev" | "node_modules"))
        })
        .filter_map(Result::ok)
        .filter(|entry| entry.file_type().is_file())
        .filter_map(|entry| entry.path().strip_prefix(root).ok().map(Path::to_path_buf))
        .collect()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

// ---------------------------------------------------------------------------------
// README.md and ARCHITECTURE.md
// ---------------------------------------------------------------------------------

/// The longest each document may be: a newcomer reads both in an hour.
const LIMITS: [(&str, usize); 2] = [("README.md", 250), ("ARCHITECTURE.md", 400)];

/// Type-like names in backticks that are not the tree's own: a browser API, Kubernetes
/// words and a dependency's type.
const FOREIGN_NAMES: [&str; 6] = [
    "EventSource",
    "RollingUpdate",
    "Recreate",
    "CancellationToken",
    "VecDeque",
    "Utf8Bytes",
];

/// What the Rust sources define, and where: the names a document may cite.
struct Index {
    /// Every file and directory of the tree, relative to the root (`a/b.rs`, `a/`).
    paths: BTreeSet<String>,
    /// For each name (a file's stem, a directory, its crate, a `fn`/`struct`/`mod`/…
    /// it defines), the Rust files it names or is defined in.
    related: HashMap<String, BTreeSet<usize>>,
    /// For each Rust file, the names it defines (`fn`, `struct`, `enum`, …).
    defines: Vec<BTreeSet<String>>,
    /// Every name defined anywhere.
    defined: BTreeSet<String>,
}

/// An item, an `impl` (so a method in another file than its type is found), a struct
/// field or an enum variant, on its own line.
static DEFINITION: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"(?m)\b(?:fn|struct|enum|trait|type|mod|const|static|macro_rules!)\s+([A-Za-z_][A-Za-z0-9_]*)",
        r"|\bimpl(?:<[^>]*>)?\s+(?:[A-Za-z0-9_:<>']+\s+for\s+)?([A-Za-z_][A-Za-z0-9_]*)",
        r"|^\s*(?:pub(?:\([a-z ]+\))?\s+)?([a-z_][a-z0-9_]*):\s",
        r"|^\s*([A-Z][A-Za-z0-9]*)\s*[({,]"
    ))
    .expect("definition pattern")
});

/// The first segments of Rust paths that belong to the standard library or a
/// dependency, not to the tree.
const FOREIGN_ROOTS: [&str; 9] = [
    "std",
    "core",
    "axum",
    "tokio",
    "async_nats",
    "jetstream",
    "serde",
    "sqlx",
    "i64",
];

impl Index {
    fn build(root: &Path) -> Index {
        let files = tree_files(root);
        let mut paths = BTreeSet::new();
        let crates = crate_dirs(root, &files);
        let mut related: HashMap<String, BTreeSet<usize>> = HashMap::new();
        let mut defines = Vec::new();
        let mut defined = BTreeSet::new();
        for file in &files {
            let text = file.to_string_lossy().replace('\\', "/");
            let mut dir = Path::new(&text).parent();
            while let Some(d) = dir.filter(|d| !d.as_os_str().is_empty()) {
                paths.insert(format!("{}/", d.to_string_lossy()));
                dir = d.parent();
            }
            paths.insert(text.clone());
            if file.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let id = defines.len();
            let names: BTreeSet<String> = DEFINITION
                .captures_iter(&read(&root.join(file)))
                .filter_map(|c| c.iter().skip(1).flatten().next().map(|m| m.as_str().to_owned()))
                .collect();
            for name in &names {
                related.entry(name.clone()).or_default().insert(id);
            }
            defined.extend(names.iter().cloned());
            defines.push(names);
            for component in file.components() {
                let part = component.as_os_str().to_string_lossy();
                let stem = part.strip_suffix(".rs").unwrap_or(&part).to_owned();
                related.entry(stem).or_default().insert(id);
            }
            if let Some((_, name)) = crates.iter().find(|(dir, _)| file.starts_with(dir)) {
                related.entry(name.clone()).or_default().insert(id);
            }
        }
        Index {
            paths,
            related,
            defines,
            defined,
        }
    }

    /// Whether a path a document names exists: from the root, or (for a relative path
    /// such as `judge/tests.rs` or a bare `router.rs`) as the end of a path of the tree.
    fn has_path(&self, path: &str) -> bool {
        let trimmed = path.trim_end_matches('/');
        self.paths.contains(path)
            || self.paths.contains(&format!("{trimmed}/"))
            || self
                .paths
                .iter()
                .any(|p| p.trim_end_matches('/').ends_with(&format!("/{trimmed}")))
    }

    /// Whether `a::b::…::z` names something of the tree: every segment names a file,
    /// directory, crate or definition, and the last one is defined in (or is a file
    /// of) what a segment before it names.
    fn has_rust_path(&self, segments: &[&str]) -> bool {
        let Some((last, before)) = segments.split_last() else {
            return false;
        };
        if before.iter().any(|s| !self.related.contains_key(*s)) {
            return false;
        }
        let Some(last_files) = self.related.get(*last) else {
            return false;
        };
        before.iter().any(|segment| {
            self.related[*segment]
                .iter()
                .any(|file| self.defines[*file].contains(*last) || last_files.contains(file))
        })
    }
}

/// Each crate's directory and its name as Rust spells it (`paytrack_tests`).
fn crate_dirs(root: &Path, files: &[PathBuf]) -> Vec<(PathBuf, String)> {
    static NAME: LazyLock<Regex> = LazyLock::new(|| Regex::new(r#"(?m)^name\s*=\s*"([^"]+)""#).expect("name pattern"));
    let mut crates: Vec<(PathBuf, String)> = files
        .iter()
        .filter(|f| f.file_name().is_some_and(|n| n == "Cargo.toml"))
        .filter_map(|f| {
            let name = NAME.captures(&read(&root.join(f)))?[1].replace('-', "_");
            Some((f.parent()?.to_path_buf(), name))
        })
        .collect();
    // The deepest directory first, so a file belongs to its nearest crate.
    crates.sort_by_key(|(dir, _)| std::cmp::Reverse(dir.components().count()));
    crates
}

/// The spans of `text` in backticks, outside fenced code blocks (those are commands
/// and payloads, not citations).
fn cited(text: &str) -> Vec<String> {
    static TICKED: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"`([^`\n]+)`").expect("tick pattern"));
    let mut fenced = false;
    let mut spans = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if !fenced {
            spans.extend(TICKED.captures_iter(line).map(|c| c[1].to_owned()));
        }
    }
    spans
}

/// `a/{b,c}.rs` → `a/b.rs`, `a/c.rs`.
fn expand_braces(path: &str) -> Vec<String> {
    match (path.find('{'), path.find('}')) {
        (Some(open), Some(close)) if open < close => path[open + 1..close]
            .split(',')
            .flat_map(|choice| expand_braces(&format!("{}{choice}{}", &path[..open], &path[close + 1..])))
            .collect(),
        _ => vec![path.to_owned()],
    }
}

/// What a backticked span claims exists, if it claims anything.
#[derive(Debug, PartialEq)]
enum Citation {
    /// A file or directory: `services/ws-edge/src/router.rs`, `judge/tests.rs`, `k8s/`.
    Path(String),
    /// A Rust path: `tenancy::two_tenants_…`, `Hub::subscribe`, `paytrack_tests::eventually`.
    RustPath(Vec<String>),
    /// A file and a test in it: `tests/tests/tenancy.rs::two_tenants_…`.
    PathItem(String, String),
    /// A type: `PushMessage`.
    Type(String),
}

fn citation(span: &str) -> Option<Citation> {
    static PATH: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[A-Za-z0-9_.{},-]+(/[A-Za-z0-9_.{},-]*)*$").expect("path pattern"));
    static FILE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"\.(rs|md|toml|json|sh|ya?ml|conf|sql|png)$").expect("file pattern"));
    static RUST_PATH: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)+$").expect("rust path pattern")
    });
    static TYPE: LazyLock<Regex> =
        LazyLock::new(|| Regex::new(r"^[A-Z][a-z0-9]+([A-Z][a-z0-9]*)+$").expect("type pattern"));
    if let Some((path, item)) = span.split_once(".rs::") {
        return Some(Citation::PathItem(format!("{path}.rs"), item.to_owned()));
    }
    if RUST_PATH.is_match(span) {
        return Some(Citation::RustPath(span.split("::").map(str::to_owned).collect()));
    }
    if TYPE.is_match(span) {
        return (!FOREIGN_NAMES.contains(&span)).then(|| Citation::Type(span.to_owned()));
    }
    let looks_like_file = span.contains('/') || FILE.is_match(span);
    let local = !span.starts_with('/') && !span.starts_with('.') && !span.starts_with("target/");
    (looks_like_file && local && PATH.is_match(span)).then(|| Citation::Path(span.to_owned()))
}

/// What `document` names that the tree does not have.
fn missing_citations(index: &Index, root: &Path, document: &str) -> Vec<String> {
    let text = read(&root.join(document));
    let mut missing = Vec::new();
    for span in cited(&text) {
        let found = match citation(&span) {
            None => true,
            Some(Citation::Path(path)) => expand_braces(&path).iter().all(|p| index.has_path(p)),
            Some(Citation::RustPath(segments)) if FOREIGN_ROOTS.contains(&segments[0].as_str()) => true,
            Some(Citation::RustPath(segments)) => {
                index.has_rust_path(&segments.iter().map(String::as_str).collect::<Vec<_>>())
            }
            Some(Citation::PathItem(path, item)) => {
                index.has_path(&path) && item.split("::").all(|i| index.defined.contains(i))
            }
            Some(Citation::Type(name)) => index.defined.contains(&name),
        };
        if !found {
            missing.push(format!("{document}: `{span}`"));
        }
    }
    missing
}

#[test]
fn readme_and_architecture_stay_within_their_lengths() {
    let root = root();
    let too_long: Vec<String> = LIMITS
        .iter()
        .filter_map(|(document, limit)| {
            let lines = read(&root.join(document)).lines().count();
            (lines > *limit).then(|| format!("{document} has {lines} lines, more than {limit}"))
        })
        .collect();
    assert!(too_long.is_empty(), "{}", too_long.join("\n"));
}

#[test]
fn every_file_test_and_type_the_docs_name_exists() {
    let root = root();
    let index = Index::build(&root);
    let missing: Vec<String> = LIMITS
        .iter()
        .flat_map(|(document, _)| missing_citations(&index, &root, document))
        .collect();
    assert!(
        missing.is_empty(),
        "named in the docs but not in the tree:\n{}",
        missing.join("\n")
    );
}

#[test]
fn citations_are_told_apart() {
    assert_eq!(
        citation("services/ws-edge/src/router.rs"),
        Some(Citation::Path("services/ws-edge/src/router.rs".into()))
    );
    assert_eq!(
        citation("chain::two_reconcilers_keep_one_chain_per_payment"),
        Some(Citation::RustPath(vec![
            "chain".into(),
            "two_reconcilers_keep_one_chain_per_payment".into()
        ]))
    );
    assert_eq!(
        citation("tests/tests/tenancy.rs::a_test"),
        Some(Citation::PathItem("tests/tests/tenancy.rs".into(), "a_test".into()))
    );
    assert_eq!(citation("PushMessage"), Some(Citation::Type("PushMessage".into())));
    for not_cited in [
        "/v1/payments",
        ".dev/stack.env",
        "paytrack.status.>",
        "EventSource",
        "recovered: true",
    ] {
        assert_eq!(citation(not_cited), None, "{not_cited}");
    }
    assert_eq!(expand_braces("a/{b,c}.rs"), vec!["a/b.rs", "a/c.rs"]);
}

#[test]
fn a_missing_test_or_file_is_reported() {
    let root = root();
    let index = Index::build(&root);
    assert!(index.has_rust_path(&["chain", "two_reconcilers_keep_one_chain_per_payment"]));
    assert!(!index.has_rust_path(&["chain", "a_test_that_was_never_written"]));
    // A real test, but not in the file named.
    assert!(!index.has_rust_path(&["tenancy", "two_reconcilers_keep_one_chain_per_payment"]));
    assert!(index.has_path("services/ws-edge/src/router/ring.rs"));
    assert!(!index.has_path("services/ledger-projector/src/transitions.rs"));
    // A method in another file than its type, a field, a variant.
    assert!(index.has_rust_path(&["Hub", "subscribe_from_memory"]));
    assert!(index.has_rust_path(&["Entry", "below_floor"]));
    assert!(index.has_rust_path(&["SessionEvent", "Stale"]));
    assert!(!index.has_rust_path(&["Hub", "no_such_method"]));
}

// ---------------------------------------------------------------------------------
// One spelling of the contract
// ---------------------------------------------------------------------------------

/// Where subjects, streams and buckets may be spelled: the contract and the layout.
const CONTRACT_DIRS: [&str; 2] = ["shared/contract/", "nats/"];

/// A string literal's contents (raw strings included).
static LITERAL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r##"r#*"([^"]*)"|"((?:[^"\\]|\\.)*)""##).expect("literal pattern"));

/// A stream or bucket name as the contract spells it (`PAYTRACK_STATUS`, `KV_PAYTRACK_SWEEP`).
static STREAM_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^(KV_)?PAYTRACK_[A-Z]+(_[A-Z]+)*$").expect("stream name pattern"));

/// The product code of a Rust file: without its comments and its `#[cfg(test)]`
/// module (test modules come last).
fn product_code(text: &str) -> String {
    let mut code = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim_start().starts_with("#[cfg(test)]")
            && lines.peek().is_some_and(|next| {
                let next = next.trim_start();
                next.starts_with("mod ") || next.starts_with("pub mod ") || next.starts_with("pub(crate) mod ")
            })
        {
            break;
        }
        code.push_str(without_comment(line));
        code.push('\n');
    }
    code
}

/// A line up to its `//` comment, if it has one outside a string.
fn without_comment(line: &str) -> &str {
    let mut in_string = false;
    let mut escaped = false;
    let bytes = line.as_bytes();
    for (at, byte) in bytes.iter().enumerate() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (_, _, b'"') => in_string = !in_string,
            (false, _, b'/') if bytes.get(at + 1) == Some(&b'/') => return &line[..at],
            _ => {}
        }
    }
    line
}

/// The string literals of `code`.
fn literals(code: &str) -> impl Iterator<Item = &str> {
    LITERAL
        .captures_iter(code)
        .filter_map(|c| c.get(1).or_else(|| c.get(2)).map(|m| m.as_str()))
}

/// The Rust files of test-only modules (`#[cfg(test)] mod props;` in `decide.rs` is
/// `decide/props.rs`), which are tests even outside a `tests/` directory.
fn test_only_modules(root: &Path, files: &[PathBuf]) -> BTreeSet<PathBuf> {
    static TEST_MOD: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"#\[cfg\(test\)\]\s*(?:pub(?:\([a-z]+\))?\s+)?mod\s+([a-z_0-9]+);").expect("mod pattern")
    });
    let mut modules = BTreeSet::new();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "rs")) {
        let Some(dir) = file.parent() else { continue };
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let module_dir = if matches!(stem.as_str(), "lib" | "main" | "mod") {
            dir.to_path_buf()
        } else {
            dir.join(&stem)
        };
        for module in TEST_MOD.captures_iter(&read(&root.join(file))) {
            modules.insert(module_dir.join(format!("{}.rs", &module[1])));
            modules.insert(module_dir.join(&module[1]).join("mod.rs"));
        }
    }
    modules
}

/// Whether a file is product code outside the contract and the layout.
fn outside_the_contract(file: &Path, test_modules: &BTreeSet<PathBuf>) -> bool {
    let text = file.to_string_lossy().replace('\\', "/");
    file.extension().is_some_and(|e| e == "rs")
        && !CONTRACT_DIRS.iter().any(|dir| text.starts_with(dir))
        && !text.starts_with("tests/")
        && !text.contains("/tests/")
        && !text.ends_with("/tests.rs")
        && !test_modules.contains(file)
}

/// The stream and bucket names the contract and the layout spell.
fn contract_names(root: &Path, files: &[PathBuf]) -> BTreeSet<String> {
    files
        .iter()
        .filter(|f| {
            let text = f.to_string_lossy();
            f.extension().is_some_and(|e| e == "rs") && CONTRACT_DIRS.iter().any(|dir| text.starts_with(dir))
        })
        .flat_map(|f| {
            literals(&product_code(&read(&root.join(f))))
                .filter(|s| STREAM_NAME.is_match(s))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Each place outside the contract and the layout that spells a subject (a literal
/// starting `paytrack.` or `$KV.`) or a stream or bucket name.
fn spelled_outside(root: &Path) -> Vec<String> {
    let files = tree_files(root);
    let names = contract_names(root, &files);
    let test_modules = test_only_modules(root, &files);
    let mut found = Vec::new();
    for file in files.iter().filter(|f| outside_the_contract(f, &test_modules)) {
        let code = product_code(&read(&root.join(file)));
        for literal in literals(&code) {
            let subject = literal.starts_with("paytrack.") || literal.starts_with("$KV.");
            let name = names.contains(literal) || (STREAM_NAME.is_match(literal) && literal.ends_with("_READ"));
            if subject || name {
                found.push(format!("{}: \"{literal}\"", file.display()));
            }
        }
    }
    found
}

#[test]
fn subjects_and_buckets_are_spelled_only_in_the_contract_and_layout() {
    let root = root();
    assert!(
        contract_names(&root, &tree_files(&root)).contains("PAYTRACK_STATUS"),
        "the contract's names were not found"
    );
    let found = spelled_outside(&root);
    assert!(
        found.is_empty(),
        "spelled outside shared/contract and nats/ (build them with paytrack_contract::subjects):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_spelling_check_sees_literals_and_skips_comments_and_tests() {
    let code = product_code(
        "let a = \"paytrack.push.t.u.all\"; // \"paytrack.in.x\"\nlet u = \"http://h\";\nlet b = r#\"PAYTRACK_IN\"#;\n#[cfg(test)]\nmod tests { \"paytrack.status.x\" }\n",
    );
    assert_eq!(
        literals(&code).collect::<Vec<_>>(),
        vec!["paytrack.push.t.u.all", "http://h", "PAYTRACK_IN"]
    );
}
