//! The layering of `engine/src`, `loadgen/src` and `bench-harness/src` stays true: each crate's `lib.rs` opens
//! with a module map (a table: layer, module, what it is, what it may import), and this test
//! reads every file of the library's module tree, collects the `crate::` paths in its code
//! (comments and doc comments left out), and fails on
//! - an import of a top-level module that the importer's row does not list,
//! - a row that lists a module of a higher layer (an upward import),
//! - a module missing from the map, or a row naming a module that does not exist,
//! - a cycle between files (modules of any depth, e.g. `shard/core.rs` and
//!   `shard/handler.rs`) or between top-level modules.
//!
//! It parses source text, not the compiler's resolution: a path is resolved to the longest
//! module it names, `super::` from the file's own module, and a crate-root `pub use a::b;`
//! of a module makes `b` another name of `a::b`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

#[test]
fn engine_modules_import_only_downward_and_without_cycles() {
    check_crate(&workspace().join("engine/src"));
}

#[test]
fn loadgen_modules_import_only_downward_and_without_cycles() {
    check_crate(&workspace().join("loadgen/src"));
}

#[test]
fn bench_harness_modules_import_only_downward_and_without_cycles() {
    check_crate(&workspace().join("bench-harness/src"));
}

/// The checker itself: a made-up crate with an upward import and a file cycle is refused.
#[test]
fn the_checker_finds_upward_imports_and_cycles() {
    let root = std::env::temp_dir().join(format!("layering-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(root.join("low")).unwrap();
    std::fs::write(
        root.join("lib.rs"),
        "//! | layer | module | what it is | may import |\n\
         //! |---|---|---|---|\n\
         //! | 0 | [`low`] | below | - |\n\
         //! | 1 | [`high`] | above | `low` |\n\
         pub mod low;\npub mod high;\n",
    )
    .unwrap();
    std::fs::write(root.join("low/mod.rs"), "pub mod a;\npub mod b;\n").unwrap();
    // low::a -> low::b -> low::a: a cycle inside one module; and low -> high: upward.
    std::fs::write(root.join("low/a.rs"), "use super::b::B;\npub struct A;\n").unwrap();
    std::fs::write(
        root.join("low/b.rs"),
        "use super::a::A; // a comment naming crate::high is not an import\n\
         pub struct B(crate::high::H);\n",
    )
    .unwrap();
    std::fs::write(
        root.join("high.rs"),
        "use crate::low::a::A;\npub struct H;\n",
    )
    .unwrap();
    let problems = problems_of(&root);
    std::fs::remove_dir_all(&root).unwrap();
    assert!(
        problems
            .iter()
            .any(|problem| problem.contains("`low` imports `high`")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|problem| problem.contains("cycle") && problem.contains("low::a")),
        "{problems:#?}"
    );
    assert!(
        problems
            .iter()
            .any(|problem| problem.contains("cycle between top-level modules")),
        "{problems:#?}"
    );
    // `high` -> `low` is listed and downward, and the comment is not read as an import.
    assert!(
        !problems
            .iter()
            .any(|problem| problem.contains("`high` imports")),
        "{problems:#?}"
    );
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ lies in the workspace")
        .to_path_buf()
}

fn check_crate(src: &Path) {
    let problems = problems_of(src);
    assert!(
        problems.is_empty(),
        "{}: the layering is broken:\n  {}",
        src.display(),
        problems.join("\n  ")
    );
}

/// One row of a module map.
#[derive(Debug)]
struct Row {
    layer: u32,
    may_import: BTreeSet<String>,
}

fn problems_of(src: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).expect("the crate has a lib.rs");
    let map = module_map(&lib);
    let files = module_files(src);
    let aliases = root_aliases(&lib, &files);
    let mut problems = Vec::new();

    let top_level: BTreeSet<String> = files
        .keys()
        .filter(|module| !module.is_empty() && !module.contains("::"))
        .cloned()
        .collect();
    for module in &top_level {
        if !map.contains_key(module) {
            problems.push(format!(
                "`{module}` is missing from the module map in lib.rs"
            ));
        }
    }
    for (module, row) in &map {
        if !top_level.contains(module) {
            problems.push(format!(
                "the module map names `{module}`, which is not a module"
            ));
        }
        for allowed in &row.may_import {
            match map.get(allowed) {
                Some(other) if other.layer > row.layer => problems.push(format!(
                    "the map lets `{module}` (layer {}) import `{allowed}` (layer {})",
                    row.layer, other.layer
                )),
                None => problems.push(format!("`{module}` may import `{allowed}`, not in the map")),
                _ => {}
            }
        }
    }

    // Edges between files (module paths) and between top-level modules.
    let mut file_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut top_edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, path) in &files {
        let text = std::fs::read_to_string(path).expect("a module file is readable");
        for target in referenced_modules(module, &code_only(&text), &files, &aliases) {
            if target == *module {
                continue;
            }
            file_edges
                .entry(module.clone())
                .or_default()
                .insert(target.clone());
            let (from, to) = (top_of(module), top_of(&target));
            if from.is_empty() || to.is_empty() || from == to {
                continue;
            }
            top_edges
                .entry(from.clone())
                .or_default()
                .insert(to.clone());
            if let Some(row) = map.get(&from) {
                if !row.may_import.contains(&to) {
                    problems.push(format!(
                        "`{from}` imports `{to}` (in {}), which its row does not list",
                        module_label(module)
                    ));
                }
            }
        }
    }
    problems.extend(
        cycles(&file_edges)
            .into_iter()
            .map(|cycle| format!("a cycle between files: {}", cycle.join(" -> "))),
    );
    problems.extend(
        cycles(&top_edges)
            .into_iter()
            .map(|cycle| format!("a cycle between top-level modules: {}", cycle.join(" -> "))),
    );
    problems.sort();
    problems.dedup();
    problems
}

fn top_of(module: &str) -> String {
    module.split("::").next().unwrap_or_default().to_string()
}

fn module_label(module: &str) -> String {
    if module.is_empty() {
        "lib.rs".to_string()
    } else {
        module.to_string()
    }
}

/// The rows of the table in lib.rs's crate doc: `//! | layer | [`module`] | what | may import |`.
fn module_map(lib: &str) -> BTreeMap<String, Row> {
    let mut map = BTreeMap::new();
    for line in lib.lines() {
        let Some(rest) = line.trim_start().strip_prefix("//!") else {
            continue;
        };
        let cells: Vec<&str> = rest.trim().split('|').map(str::trim).collect();
        // "| a | b | c | d |" splits into ["", a, b, c, d, ""].
        if cells.len() != 6 {
            continue;
        }
        let Some(layer) = leading_number(cells[1]) else {
            continue;
        };
        let module = names_in(cells[2]);
        let [module] = module.as_slice() else {
            panic!("a module map row names one module: {line}");
        };
        map.insert(
            module.clone(),
            Row {
                layer,
                may_import: names_in(cells[4]).into_iter().collect(),
            },
        );
    }
    assert!(!map.is_empty(), "lib.rs has no module map table");
    map
}

fn leading_number(cell: &str) -> Option<u32> {
    let digits: String = cell.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// The backticked names in a cell (``[`ring`]``, `` `sync` ``): module names.
fn names_in(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(|name| name.to_string())
        .collect()
}

/// Every file of the library's module tree by module path ("" for lib.rs), following
/// `mod name;` declarations from lib.rs (the binary's modules are not the library's).
fn module_files(src: &Path) -> BTreeMap<String, PathBuf> {
    let mut files = BTreeMap::new();
    let mut stack = vec![(String::new(), src.join("lib.rs"))];
    while let Some((module, path)) = stack.pop() {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        // A module's children live in a folder named after it (`a.rs` and `a/x.rs`, or
        // `a/mod.rs` and `a/x.rs`); lib.rs's live beside it.
        let folder = match path.file_name().and_then(|name| name.to_str()) {
            Some("lib.rs") | Some("mod.rs") => path.parent().unwrap().to_path_buf(),
            _ => path.with_extension(""),
        };
        for child in declared_modules(&code_only(&text)) {
            let child_path = [
                folder.join(format!("{child}.rs")),
                folder.join(&child).join("mod.rs"),
            ]
            .into_iter()
            .find(|candidate| candidate.exists());
            // An inline `mod name { ... }` has no file and is part of this one.
            if let Some(child_path) = child_path {
                let child_module = if module.is_empty() {
                    child
                } else {
                    format!("{module}::{child}")
                };
                stack.push((child_module, child_path));
            }
        }
        files.insert(module, path);
    }
    files
}

/// Names declared with `mod name;` (any visibility, any attributes before it).
fn declared_modules(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    for statement in code.split(';') {
        let words: Vec<&str> = statement.split_whitespace().collect();
        if let Some(position) = words.iter().rposition(|word| *word == "mod") {
            if position + 2 == words.len() && !words[position + 1].contains('{') {
                names.push(words[position + 1].to_string());
            }
        }
    }
    names
}

/// Crate-root re-exports of modules (`pub use shard::handler;`): `handler` -> `shard::handler`.
fn root_aliases(lib: &str, files: &BTreeMap<String, PathBuf>) -> BTreeMap<String, String> {
    let mut aliases = BTreeMap::new();
    for statement in code_only(lib).split(';') {
        let statement = statement.trim();
        let Some(path) = statement
            .strip_prefix("pub use ")
            .or_else(|| statement.strip_prefix("pub(crate) use "))
        else {
            continue;
        };
        let path = path.trim().trim_start_matches("crate::");
        if files.contains_key(path) {
            let last = path.rsplit("::").next().unwrap().to_string();
            aliases.insert(last, path.to_string());
        }
    }
    aliases
}

/// The source with comments, doc comments and string literals blanked out.
fn code_only(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut index = 0;
    let mut block_depth = 0;
    let mut in_string = false;
    while index < bytes.len() {
        let rest = &text[index..];
        if block_depth > 0 {
            if rest.starts_with("*/") {
                block_depth -= 1;
                index += 2;
            } else if rest.starts_with("/*") {
                block_depth += 1;
                index += 2;
            } else {
                index += rest.chars().next().unwrap().len_utf8();
            }
            continue;
        }
        if in_string {
            if rest.starts_with("\\\\") || rest.starts_with("\\\"") {
                index += 2;
            } else {
                if rest.starts_with('"') {
                    in_string = false;
                    out.push('"');
                }
                index += rest.chars().next().unwrap().len_utf8();
            }
            continue;
        }
        if let Some(hashes) = raw_string_hashes(rest, &text[..index]) {
            // r"...", r#"..."#: no escapes; ends at the quote followed by as many hashes.
            let open = 1 + hashes + 1;
            let close = format!("\"{}", "#".repeat(hashes));
            let end = rest[open..]
                .find(&close)
                .map_or(rest.len(), |end| open + end + close.len());
            out.push_str("\"\"");
            index += end;
        } else if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            index += end;
        } else if rest.starts_with("/*") {
            block_depth = 1;
            index += 2;
        } else if rest.starts_with('"') && !text[..index].ends_with('\'') {
            in_string = true;
            out.push('"');
            index += 1;
        } else {
            let character = rest.chars().next().unwrap();
            out.push(character);
            index += character.len_utf8();
        }
    }
    out
}

/// At a raw string literal (`r"`, `r#"`, ...): its number of hashes.
fn raw_string_hashes(rest: &str, before: &str) -> Option<usize> {
    let after_r = rest.strip_prefix('r')?;
    if before
        .chars()
        .next_back()
        .is_some_and(|character| character.is_alphanumeric() || character == '_')
    {
        return None;
    }
    let hashes = after_r
        .chars()
        .take_while(|character| *character == '#')
        .count();
    after_r[hashes..].starts_with('"').then_some(hashes)
}

/// The modules that `module`'s code names through `crate::` or `super::` paths.
fn referenced_modules(
    module: &str,
    code: &str,
    files: &BTreeMap<String, PathBuf>,
    aliases: &BTreeMap<String, String>,
) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let parent = module.rsplit_once("::").map_or("", |(parent, _)| parent);
    for (prefix, base) in [("crate::", ""), ("super::", parent)] {
        let mut from = 0;
        while let Some(offset) = code[from..].find(prefix) {
            let start = from + offset;
            from = start + prefix.len();
            // `$crate::` and `foo_crate::` are not this crate's root.
            let before = code[..start].chars().next_back();
            if before
                .is_some_and(|character| character.is_alphanumeric() || "_$".contains(character))
            {
                continue;
            }
            for path in paths_at(&code[from..]) {
                let mut segments: Vec<String> = path.split("::").map(str::to_string).collect();
                if base.is_empty() {
                    if let Some(target) = segments.first().and_then(|first| aliases.get(first)) {
                        let mut expanded: Vec<String> =
                            target.split("::").map(str::to_string).collect();
                        expanded.extend(segments.drain(1..));
                        segments = expanded;
                    }
                }
                if let Some(target) = longest_module(base, &segments, files) {
                    found.insert(target);
                }
            }
        }
    }
    found
}

/// The paths after a `crate::`: one (`a::b::C`) or a group (`{a::b, c::{D, E}}`), each as
/// its leading segments.
fn paths_at(rest: &str) -> Vec<String> {
    let rest = rest.trim_start();
    if let Some(group) = rest.strip_prefix('{') {
        let mut depth = 1;
        let mut end = 0;
        for (position, character) in group.char_indices() {
            match character {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                end = position;
                break;
            }
        }
        let mut paths = Vec::new();
        let mut item_depth = 0;
        let mut item = String::new();
        for character in group[..end].chars().chain(core::iter::once(',')) {
            match character {
                '{' => item_depth += 1,
                '}' => item_depth -= 1,
                ',' if item_depth == 0 => {
                    paths.extend(paths_at(item.trim()));
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(character);
        }
        return paths;
    }
    let path: String = rest
        .chars()
        .take_while(|character| {
            character.is_alphanumeric() || *character == '_' || *character == ':'
        })
        .collect();
    let path = path.trim_end_matches(':').to_string();
    if let Some(group_start) = rest[path.len()..].strip_prefix("::{") {
        // `a::b::{C, D}`: the group's items all lie under `a::b`.
        return paths_at(&format!("{{{group_start}"))
            .into_iter()
            .map(|inner| format!("{path}::{inner}"))
            .chain(core::iter::once(path.clone()))
            .collect();
    }
    if path.is_empty() {
        Vec::new()
    } else {
        vec![path]
    }
}

/// The longest module path `base::segments[..n]` that is a file of the crate.
fn longest_module(
    base: &str,
    segments: &[String],
    files: &BTreeMap<String, PathBuf>,
) -> Option<String> {
    (1..=segments.len()).rev().find_map(|count| {
        let tail = segments[..count].join("::");
        let candidate = if base.is_empty() {
            tail
        } else {
            format!("{base}::{tail}")
        };
        files.contains_key(&candidate).then_some(candidate)
    })
}

/// Every cycle found by a depth-first search, each as the path that closes it.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Open,
        Done,
    }
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        marks: &mut BTreeMap<String, Mark>,
        stack: &mut Vec<String>,
        found: &mut Vec<Vec<String>>,
    ) {
        marks.insert(node.to_string(), Mark::Open);
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            match marks.get(next.as_str()) {
                Some(Mark::Open) => {
                    let start = stack.iter().position(|entry| entry == next).unwrap();
                    let mut cycle: Vec<String> = stack[start..]
                        .iter()
                        .map(|entry| module_label(entry))
                        .collect();
                    cycle.push(module_label(next));
                    found.push(cycle);
                }
                Some(Mark::Done) => {}
                None => visit(next, edges, marks, stack, found),
            }
        }
        stack.pop();
        marks.insert(node.to_string(), Mark::Done);
    }
    let mut marks = BTreeMap::new();
    let mut found = Vec::new();
    for node in edges.keys() {
        if !marks.contains_key(node.as_str()) {
            visit(node, edges, &mut marks, &mut Vec::new(), &mut found);
        }
    }
    found
}
