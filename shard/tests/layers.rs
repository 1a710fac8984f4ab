//! The module graph of the library points one way: each top-level module of `shard/src` may
//! use only the modules of the layers below it (ARCHITECTURE.md draws the same table).
//!
//! Reads every `crate::…` path in the sources (plain, and grouped as `crate::{a, b::c}`),
//! outside comments, and checks it against the layers; a few edges are narrower still (Discord
//! reaches a conversation only through its room handle).
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Bottom first. A module may use any module of a lower layer, none of its own or above.
const LAYERS: &[&[&str]] = &[
    // Foundation: errors, secrets, and `lock` (in lib.rs).
    &["error", "secret", "lock", "Error", "Result"],
    // Log lines a peer can cause, throttled.
    &["throttle"],
    // Audio buffers and model files.
    &["audio", "models"],
    // The stages and the peers: listening, speaking, the OpenClaw client, fleet state.
    &["listen", "speak", "openclaw", "state"],
    // The conversation (a room of speakers, relevance, the reply) and the evaluation helpers.
    &["converse", "eval"],
    // The metrics, fed by rooms' events.
    &["metrics"],
    // Discord: gateway shards, voice, slash commands.
    &["discord"],
    // The pod: assembles everything.
    &["pod"],
];

/// Edges narrower than the layers: (from, to) → the only submodules of `to` that `from` names.
const NARROW: &[(&str, &str, &[&str])] = &[("discord", "converse", &["room"])];

fn layer_of(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every `crate::` path in `src` (comment lines skipped), as its segments up to the first
/// item: `crate::{converse::room::Room, lock}` gives `[converse, room, Room]` and `[lock]`.
fn crate_paths(src: &str) -> Vec<Vec<String>> {
    let code: String = src
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        // `voicebot_shard::` or another crate's `…crate::` is not ours.
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1;
            let end = group
                .char_indices()
                .find(|&(_, c)| {
                    depth += match c {
                        '{' => 1,
                        '}' => -1,
                        _ => 0,
                    };
                    depth == 0
                })
                .map_or(group.len(), |(i, _)| i);
            out.extend(split_group(&group[..end]).into_iter().map(|p| segments(&p)));
            rest = &group[end..];
        } else {
            out.push(segments(rest));
        }
    }
    out
}

/// The top-level items of a `{…}` group, nested groups kept whole.
fn split_group(group: &str) -> Vec<String> {
    let (mut parts, mut current, mut depth) = (Vec::new(), String::new(), 0);
    for c in group.chars() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

fn segments(path: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = path.trim_start();
    loop {
        let end = rest
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_string());
        match rest[end..].strip_prefix("::") {
            Some(next) => rest = next,
            None => break,
        }
    }
    out
}

/// The top-level module a source file belongs to (`None` for lib.rs and the binary's files).
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?.to_string();
    let name = first.strip_suffix(".rs").unwrap_or(&first).to_string();
    layer_of(&name).map(|_| name)
}

#[test]
fn the_path_finder_reads_plain_and_grouped_paths() {
    let src = "use crate::state::FleetState;\n// use crate::pod::run;\nuse crate::{\n    converse::room::{Room, RoomEvent},\n    lock,\n};\nlet t = crate::state::epoch_ms();\nuse voicebot_shard::pod;";
    let paths = crate_paths(src);
    let firsts: Vec<&str> = paths.iter().map(|p| p[0].as_str()).collect();
    assert_eq!(firsts, ["state", "converse", "lock", "state"]);
    assert_eq!(paths[1], ["converse", "room"]);
}

#[test]
fn modules_use_only_the_layers_below_them() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &mut files);
    files.sort();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut violations = Vec::new();
    let mut lib_modules = BTreeSet::new();
    for file in &files {
        let Some(from) = module_of(&root, file) else {
            continue;
        };
        lib_modules.insert(from.clone());
        let src = std::fs::read_to_string(file).unwrap();
        for path in crate_paths(&src) {
            let Some(to) = path.first() else { continue };
            if *to == from {
                continue;
            }
            graph.entry(from.clone()).or_default().insert(to.clone());
            let rel = file.strip_prefix(&root).unwrap().display();
            let (Some(lf), Some(lt)) = (layer_of(&from), layer_of(to)) else {
                violations.push(format!(
                    "{rel}: crate::{} is in no layer (add it to LAYERS)",
                    path.join("::")
                ));
                continue;
            };
            if lt >= lf {
                violations.push(format!(
                    "{rel}: `{from}` (layer {lf}) uses crate::{} (layer {lt})",
                    path.join("::")
                ));
            }
            for (f, t, allowed) in NARROW {
                if from == *f
                    && to == t
                    && !path.get(1).is_some_and(|s| allowed.contains(&s.as_str()))
                {
                    violations.push(format!(
                        "{rel}: `{from}` may reach `{to}` only through {allowed:?}, not crate::{}",
                        path.join("::")
                    ));
                }
            }
        }
    }
    // Every module of lib.rs has a layer: a new module must be placed deliberately.
    let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
    for line in lib.lines() {
        if let Some(name) = line.trim().strip_prefix("pub mod ") {
            let name = name.trim_end_matches(';');
            assert!(
                layer_of(name).is_some(),
                "module `{name}` of lib.rs is in no layer of this test (and ARCHITECTURE.md)"
            );
        }
    }
    // The check saw the modules it is about (a moved source tree must not pass it vacuously).
    for m in ["converse", "discord", "openclaw", "pod", "state"] {
        assert!(lib_modules.contains(m), "no sources of `{m}` found");
    }
    assert!(
        graph.get("pod").is_some_and(|to| to.contains("discord")),
        "the pod assembles the Discord shards: {graph:?}"
    );
    assert!(
        violations.is_empty(),
        "back-edges in the module graph:\n  {}\n(graph: {graph:?})",
        violations.join("\n  ")
    );
}
