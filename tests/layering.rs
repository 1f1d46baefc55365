//! The code map cannot drift from the code. This reads `src/**/*.rs`,
//! builds the graph of references between top-level modules, and fails
//! when
//! - two top-level modules depend on each other, directly or through
//!   others (a cycle);
//! - a module other than the entry points (`main`, `cli`) uses `daemon`;
//! - the graph written in `docs/ARCHITECTURE.md` (the ```` ```modules ````
//!   block, one line per module: `module -> its dependencies`) is not the
//!   graph of the code.
//!
//! A reference is `crate::<module>` (also inside `use crate::{…}` groups),
//! `super::…` that climbs to the crate's root, or `commonscloud::<module>`
//! in `main.rs`, outside comments. Test code counts like any other. The
//! reading errs on the side of seeing too much: a string that spells
//! `crate::x`, or `super::x` in an inline module naming an item called
//! like a top-level module, counts as a reference. It never sees too
//! little.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module → the top-level modules it refers to.
type Graph = BTreeMap<String, BTreeSet<String>>;

/// The modules that may use `daemon`: the binary and the CLI that starts it.
const ENTRY_POINTS: [&str; 2] = ["main", "cli"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file under `src`: `a.rs` and `a/mod.rs` are
/// `[a]`, `a/b.rs` is `[a, b]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The text without its comments (line, doc and block comments). String
/// and character literals are kept whole, so a `//` inside one starts no
/// comment.
fn strip_comments(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Copies `n` bytes of `rest` to `out`.
    let keep = |out: &mut String, rest: &mut &str, n: usize| {
        let n = n.min(rest.len());
        out.push_str(&rest[..n]);
        *rest = &rest[n..];
    };
    while let Some(c) = rest.chars().next() {
        if let Some(r) = rest.strip_prefix("//") {
            rest = r.find('\n').map_or("", |i| &r[i..]);
        } else if let Some(r) = rest.strip_prefix("/*") {
            rest = r.find("*/").map_or("", |i| &r[i + 2..]);
        } else if c == 'r' && (rest[1..].starts_with('"') || rest[1..].starts_with("#")) {
            // A raw string r"…", r#"…"#: it ends at a quote and as many #.
            let hashes = rest[1..].chars().take_while(|c| *c == '#').count();
            if rest[1 + hashes..].starts_with('"') {
                let close = format!("\"{}", "#".repeat(hashes));
                let body = 2 + hashes;
                let end = rest[body..]
                    .find(&close)
                    .map_or(rest.len(), |i| body + i + close.len());
                keep(&mut out, &mut rest, end);
            } else {
                keep(&mut out, &mut rest, 1);
            }
        } else if c == '"' {
            let mut end = rest.len();
            let mut escaped = false;
            for (i, ch) in rest.char_indices().skip(1) {
                match ch {
                    _ if escaped => escaped = false,
                    '\\' => escaped = true,
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => {}
                }
            }
            keep(&mut out, &mut rest, end);
        } else if c == '\'' {
            // A character literal ('"', '\'', 'x'), or a lifetime ('a).
            let mut chars = rest.char_indices().skip(1);
            let literal = match chars.next() {
                Some((_, '\\')) => rest.get(3..).and_then(|r| r.find('\'')).map(|i| i + 4),
                Some((_, ch)) => {
                    let after = 1 + ch.len_utf8();
                    rest[after..].starts_with('\'').then_some(after + 1)
                }
                None => None,
            };
            keep(&mut out, &mut rest, literal.unwrap_or(1));
        } else {
            keep(&mut out, &mut rest, c.len_utf8());
        }
    }
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// The first segment of each path a `use` group names: `{a, b::c, d}`.
fn group_heads(s: &str) -> Vec<&str> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut start = true;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => break,
            '}' => depth -= 1,
            ',' if depth == 0 => start = true,
            c if start && !c.is_whitespace() => {
                heads.push(ident_at(&s[i..]));
                start = false;
            }
            _ => {}
        }
    }
    heads
}

/// The first segments named after `prefix` (`crate::`, …) in `text`.
fn heads_after<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    let mut found = Vec::new();
    for (i, _) in text.match_indices(prefix) {
        let before = text[..i].chars().next_back();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let after = &text[i + prefix.len()..];
        match after.strip_prefix('{') {
            Some(group) => found.extend(group_heads(group)),
            None => found.push(ident_at(after)),
        }
    }
    found
}

/// The top-level modules one file refers to.
fn references(text: &str, path: &[String], in_main: bool) -> BTreeSet<String> {
    let text = strip_comments(text);
    let mut refs: BTreeSet<String> = heads_after(&text, "crate::")
        .into_iter()
        .map(str::to_owned)
        .collect();
    if in_main {
        refs.extend(
            heads_after(&text, "commonscloud::")
                .into_iter()
                .map(str::to_owned),
        );
    }
    // `super::super::x`: x is top-level when the climb reaches the root.
    for (i, _) in text.match_indices("super::") {
        if text[..i].ends_with("super::") || text[..i].ends_with(|c: char| c.is_alphanumeric()) {
            continue;
        }
        let mut rest = &text[i..];
        let mut climbs = 0;
        while let Some(r) = rest.strip_prefix("super::") {
            climbs += 1;
            rest = r;
        }
        if climbs >= path.len() {
            match rest.strip_prefix('{') {
                Some(group) => refs.extend(group_heads(group).into_iter().map(str::to_owned)),
                None => {
                    refs.insert(ident_at(rest).to_owned());
                }
            }
        }
    }
    refs
}

/// The graph of the crate under `src`.
fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let tops: BTreeSet<String> = files
        .iter()
        .map(|f| module_path(src, f))
        .filter(|p| p != &["lib"])
        .map(|p| p[0].clone())
        .collect();
    let mut g: Graph = tops.iter().map(|t| (t.clone(), BTreeSet::new())).collect();
    for f in &files {
        let path = module_path(src, f);
        if path == ["lib"] {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        let top = &path[0];
        let refs = references(&text, &path, top == "main");
        let deps = g.get_mut(top).unwrap();
        deps.extend(refs.into_iter().filter(|r| r != top && tops.contains(r)));
    }
    g
}

/// The cycles: each strongly connected set of two modules or more.
fn cycles(g: &Graph) -> Vec<Vec<String>> {
    let reach = |from: &String| {
        let mut seen = BTreeSet::new();
        let mut todo = vec![from.clone()];
        while let Some(m) = todo.pop() {
            for d in g.get(&m).into_iter().flatten() {
                if seen.insert(d.clone()) {
                    todo.push(d.clone());
                }
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|m| (m, reach(m))).collect();
    let mut out: Vec<Vec<String>> = Vec::new();
    for m in g.keys() {
        if !reaches[m].contains(m) || out.iter().any(|c| c.contains(m)) {
            continue;
        }
        let together: Vec<String> = g
            .keys()
            .filter(|o| *o == m || (reaches[m].contains(*o) && reaches[*o].contains(m)))
            .cloned()
            .collect();
        out.push(together);
    }
    out
}

/// The ```` ```modules ```` block of a markdown text, as a graph.
fn documented(markdown: &str) -> Option<Graph> {
    let start = markdown.find("```modules\n")? + "```modules\n".len();
    let end = start + markdown[start..].find("```")?;
    let mut g = Graph::new();
    for line in markdown[start..end]
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        let (m, deps) = line.split_once("->").unwrap_or((line, ""));
        g.insert(
            m.trim().to_owned(),
            deps.split_whitespace().map(str::to_owned).collect(),
        );
    }
    Some(g)
}

fn line(m: &str, deps: &BTreeSet<String>) -> String {
    let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
    format!("{m} -> {}", deps.join(" ")).trim_end().to_owned()
}

/// Everything wrong with the crate under `src` and its map in `markdown`.
fn problems(src: &Path, markdown: &str) -> Vec<String> {
    let g = graph(src);
    let mut out = Vec::new();
    for c in cycles(&g) {
        let edges: Vec<String> = c
            .iter()
            .flat_map(|m| {
                g[m].iter()
                    .filter(|d| c.contains(d))
                    .map(move |d| format!("{m} -> {d}"))
            })
            .collect();
        out.push(format!(
            "a cycle between {}: {}",
            c.join(", "),
            edges.join(", ")
        ));
    }
    for (m, deps) in &g {
        if deps.contains("daemon") && !ENTRY_POINTS.contains(&m.as_str()) {
            out.push(format!(
                "{m} uses daemon: only {} may (move what it needs below them)",
                ENTRY_POINTS.join(" and ")
            ));
        }
    }
    match documented(markdown) {
        None => out.push("no ```modules block in the code map".into()),
        Some(doc) if doc != g => {
            let wanted: Vec<String> = g.iter().map(|(m, d)| line(m, d)).collect();
            let written: BTreeSet<String> = doc.iter().map(|(m, d)| line(m, d)).collect();
            let wrong: Vec<&String> = wanted.iter().filter(|l| !written.contains(*l)).collect();
            out.push(format!(
                "the code map's module graph is not the code's; these lines differ:\n{}\nthe whole block should read:\n{}",
                wrong
                    .iter()
                    .map(|l| l.as_str())
                    .collect::<Vec<_>>()
                    .join("\n"),
                wanted.join("\n")
            ));
        }
        Some(_) => {}
    }
    out
}

#[test]
fn the_modules_form_no_cycle_and_the_code_map_says_so() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let map = std::fs::read_to_string(root.join("docs/ARCHITECTURE.md")).unwrap();
    let found = problems(&root.join("src"), &map);
    assert!(found.is_empty(), "{}", found.join("\n\n"));
}

/// The checker on a crate of four files: it passes the clean one and fails
/// on a back-import (however it is spelled), on `daemon` used below the
/// entry points, and on a map that says otherwise.
#[test]
fn the_checker_catches_a_back_import_a_daemon_import_and_a_stale_map() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    let write = |path: &str, text: &str| {
        let p = src.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    };
    write("lib.rs", "pub mod low;\npub mod high;\npub mod daemon;\n");
    write(
        "low/mod.rs",
        "pub mod part;\n// crate::high is only named here\n",
    );
    write("low/part.rs", "pub fn f() {}\n");
    write(
        "high.rs",
        "use crate::{low::part, low};\npub fn g() { part::f() }\n",
    );
    write("daemon.rs", "use super::high;\n");
    write("main.rs", "fn main() { commonscloud::daemon::x(); }\n");
    let map = "```modules\ndaemon -> high\nhigh -> low\nlow\nmain -> daemon\n```\n";
    assert_eq!(problems(&src, map), Vec::<String>::new());

    // A back-import from deep down, spelled with `super::super::`.
    write("low/part.rs", "pub fn f() { super::super::high::g() }\n");
    let found = problems(&src, map);
    assert!(
        found[0].starts_with("a cycle between high, low: high -> low, low -> high"),
        "{found:?}"
    );
    // The map says nothing of it, and the checker says which line is wrong.
    assert!(
        found[1].contains("these lines differ:\nlow -> high\n"),
        "{found:?}"
    );
    // After a URL in a string, on the same line, the same.
    write(
        "low/part.rs",
        "pub fn f() -> String { format!(\"https://{}\", crate::high::g()) }\n",
    );
    assert!(problems(&src, map)[0].starts_with("a cycle between high, low"));
    // Spelled in a `use` group, the same.
    write(
        "low/part.rs",
        "const Q: char = '\\''; const D: char = '\"'; use crate::{model, high::g};\n",
    );
    assert!(problems(&src, map)[0].starts_with("a cycle between high, low"));

    // No cycle, but `daemon` used below the entry points.
    write("low/part.rs", "pub fn f() {}\n");
    write(
        "high.rs",
        "use crate::low;\nfn h() { crate::daemon::start() }\n",
    );
    let found = problems(&src, map);
    assert!(
        found.iter().any(|p| p.starts_with("high uses daemon")),
        "{found:?}"
    );
    assert!(
        found[0].starts_with("a cycle between daemon, high"),
        "{found:?}"
    );
}
