//! `spanhook inspect` on what users point it at: Go builds of every shape, and things it
//! cannot trace — each with a clear message and the documented exit status.

mod support;

use support::{go_fixture, go_fixtures, newest_go, run_spanhook, temp_dir};

fn json(path: &std::path::Path) -> (i32, serde_json::Value) {
    let out = run_spanhook(&["inspect", "--json", path.to_str().unwrap()]);
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "inspect printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap(), v)
}

#[test]
fn every_amd64_fixture_is_traceable_and_reports_its_go_release() {
    let mut checked = 0;
    for f in go_fixtures()
        .into_iter()
        .filter(|f| f.program == "httpserver" && f.arch == "amd64")
    {
        let (code, v) = json(&f.path);
        assert_eq!(code, 0, "{}: {v}", f.label());
        assert_eq!(v["language"], "go");
        assert_eq!(v["go"]["version"], f.go.as_str(), "{}", f.label());
        assert_eq!(v["stripped"], f.stripped, "{}", f.label());
        assert_eq!(v["dwarf"], !f.stripped, "{}", f.label());
        assert_eq!(v["pie"], f.variant.ends_with("pie"), "{}", f.label());
        let cap = &v["capabilities"][0];
        assert_eq!(cap["status"], "traced", "{}: {cap}", f.label());
        assert!(cap["returns"].as_u64().unwrap() >= 1);
        let sources: Vec<&str> = v["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["source"].as_str().unwrap())
            .collect();
        let expected = if f.stripped { "table" } else { "dwarf" };
        assert!(
            sources.iter().all(|s| *s == expected),
            "{}: {sources:?}",
            f.label()
        );
        checked += 1;
    }
    assert!(checked >= 11 * 5, "only {checked} fixtures");
}

#[test]
fn arm64_builds_are_analysed_too() {
    for f in go_fixtures()
        .into_iter()
        .filter(|f| f.arch == "arm64" && f.go != "1.17.13")
    {
        let (code, v) = json(&f.path);
        assert_eq!(code, 0, "{}: {v}", f.label());
        assert_eq!(v["arch"], "aarch64");
        assert_eq!(v["capabilities"][0]["status"], "traced", "{}", f.label());
    }
    // Go 1.17 passed arguments on the stack on arm64: no symbol-level probe, with the
    // reason, and its sockets are read instead.
    let f = go_fixture("httpserver", "1.17.13", "arm64");
    let (code, v) = json(&f.path);
    assert_eq!(code, 0, "{v}");
    let server = v["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["capability"] == "socket-http-server")
        .unwrap_or_else(|| panic!("{v}"));
    assert_eq!(server["status"], "traced", "{v}");
    assert!(server["reason"].as_str().unwrap().contains("1.18"), "{v}");
}

#[test]
fn a_c_program_is_not_go() {
    let (code, v) = json(std::path::Path::new("/bin/true"));
    assert_eq!(code, 3);
    assert_eq!(v["language"], "other");
    assert!(
        v["problem"].as_str().unwrap().contains(
            "neither a Go program (no Go build information or function table) nor a Rust program"
        ),
        "{v}"
    );
}

#[test]
fn a_go_program_without_net_http_says_which_symbol_is_missing() {
    let f = go_fixture("nohttp", &newest_go("httpserver"), "stripped");
    let (code, v) = json(&f.path);
    assert_eq!(code, 3);
    assert_eq!(v["language"], "go");
    let cap = &v["capabilities"][0];
    assert_eq!(cap["status"], "not-traced");
    assert!(
        cap["reason"]
            .as_str()
            .unwrap()
            .contains("net/http.serverHandler.ServeHTTP is not in the binary"),
        "{cap}"
    );
    // The human form says the same.
    let out = run_spanhook(&["inspect", f.path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("http server    not traced"), "{text}");
}

#[test]
fn truncated_and_non_elf_files_are_errors() {
    let dir = temp_dir("inspect-bad");
    let f = go_fixture("httpserver", &newest_go("httpserver"), "stripped");
    let bytes = std::fs::read(&f.path).unwrap();
    let cases = [
        ("truncated", bytes[..4096].to_vec()),
        ("half", bytes[..bytes.len() / 2].to_vec()),
        ("text", b"#!/bin/sh\necho hello\n".to_vec()),
        ("empty", Vec::new()),
    ];
    for (name, data) in cases {
        let path = dir.join(name);
        std::fs::write(&path, data).unwrap();
        let out = run_spanhook(&["inspect", path.to_str().unwrap()]);
        let err = String::from_utf8_lossy(&out.stderr);
        let code = out.status.code();
        assert!(
            code == Some(1) || code == Some(3),
            "{name}: exit {code:?}\n{err}"
        );
        assert!(!err.contains("panicked"), "{name}: {err}");
        if code == Some(1) {
            assert!(
                err.contains(path.to_str().unwrap()),
                "{name}: the message names the file: {err}"
            );
        }
    }
    let out = run_spanhook(&["inspect", "/nonexistent/binary"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/binary"));
}

/// `go version -m` of `path`, run with the release that built it.
fn go_version_m(go: &str, path: &std::path::Path) -> (String, Vec<(String, String)>) {
    let out = std::process::Command::new("go")
        .args(["version", "-m"])
        .arg(path)
        .env("GOTOOLCHAIN", format!("go{go}"))
        .env("GOFLAGS", "-mod=mod")
        .output()
        .expect("go version -m");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let first = text.lines().next().unwrap();
    let version = first
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_start_matches("go")
        .to_string();
    let deps = text
        .lines()
        .filter_map(|l| {
            let cols: Vec<&str> = l.trim().split('\t').collect();
            (cols.first() == Some(&"dep")).then(|| (cols[1].to_string(), cols[2].to_string()))
        })
        .collect();
    (version, deps)
}

#[test]
fn go_release_and_modules_match_go_version_m() {
    let picks: Vec<_> = go_fixtures()
        .into_iter()
        .filter(|f| f.arch == "amd64")
        .filter(|f| {
            f.program == "httpchain"
                || (f.variant == "stripped"
                    && ["1.17.13", "1.21.13", "1.27.4"].contains(&f.go.as_str()))
        })
        .collect();
    assert!(
        picks.iter().any(|f| f.program == "httpchain"),
        "the fixture with dependencies must be built"
    );
    for f in picks {
        let (code, v) = json(&f.path);
        assert!(code == 0 || code == 3, "{}", f.label());
        let (version, deps) = go_version_m(&f.go, &f.path);
        assert_eq!(v["go"]["version"], version.as_str(), "{}", f.label());
        let ours: Vec<(String, String)> = v["go"]["modules"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                (
                    m["path"].as_str().unwrap().to_string(),
                    m["version"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(ours, deps, "{}: modules", f.label());
    }
}
