//! Verified writes (RFC 9530): `Content-Digest` and `Repr-Digest` on uploads and appends, in the
//! head (curl) or in a chunked body's trailer section (raw sockets), checked before the commit;
//! `Repr-Digest` answered by every write and, from the digest kept with the file, by GET/HEAD
//! with `Want-Repr-Digest` (206 too), through moves and many appends, and never once another
//! writer changed the file. Digests are checked against `sha256sum` where a user would.

use std::fs;
use std::process::Command;
use std::thread;

use sha2::Digest as _;

use crate::support::{Server, b64, random_bytes};

/// Concurrent appenders and appends each (8 × 125 = 1,000).
const APPENDERS: usize = 8;
const APPENDS_EACH: usize = 125;

fn sha256_field(data: &[u8]) -> String {
    format!("sha-256=:{}:", b64(&sha2::Sha256::digest(data)))
}

fn sha512_field(data: &[u8]) -> String {
    format!("sha-512=:{}:", b64(&sha2::Sha512::digest(data)))
}

fn crc32c_field(data: &[u8]) -> String {
    format!("crc32c=:{}:", b64(&crc32c::crc32c(data).to_be_bytes()))
}

/// `sha256sum FILE`'s digest of `path`, as a `Repr-Digest` member.
fn sha256sum(path: &std::path::Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().expect("run sha256sum");
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text.split_whitespace().next().expect("sha256sum output");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
        .collect();
    format!("sha-256=:{}:", b64(&bytes))
}

/// The names under `dir` that are the service's own (temp files, records).
fn internal_files(s: &Server) -> Vec<String> {
    let mut names = Vec::new();
    for entry in fs::read_dir(s.root()).expect("list root") {
        let name = entry.expect("entry").file_name().to_string_lossy().into_owned();
        if name.starts_with(crate::support::RESERVED_PREFIX) {
            names.push(name);
        }
    }
    names
}

/// A chunked request whose trailer section carries `trailers` (`"Name: value"` lines).
fn chunked_with_trailers(method: &str, path: &str, body: &[u8], trailers: &[String]) -> Vec<u8> {
    let names: Vec<&str> = trailers.iter().filter_map(|t| t.split(':').next()).collect();
    let mut out = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: {}\r\n\r\n",
        names.join(", ")
    )
    .into_bytes();
    for chunk in body.chunks(1000) {
        out.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        out.extend_from_slice(chunk);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n");
    for t in trailers {
        out.extend_from_slice(t.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

#[test]
fn an_upload_with_the_right_content_digest_is_stored_and_answers_the_files_repr_digest() {
    let s = Server::start();
    let data = random_bytes(300_000, 1);
    for field in [sha256_field(&data), sha512_field(&data), crc32c_field(&data)] {
        let header = format!("Content-Digest: {field}");
        let r = s.send("POST", "/file/d/a.bin", &data, &[&header]);
        r.assert_ok_json();
        let repr = r.header("repr-digest").unwrap_or_else(|| r.fail("no Repr-Digest"));
        assert!(repr.contains(&crc32c_field(&data)), "{repr}");
        if field.starts_with("sha-256") {
            assert!(repr.contains(&sha256sum(&s.root().join("d/a.bin"))), "{repr}");
        }
    }
    // Repr-Digest of an upload is the whole file's, which is the body.
    let header = format!("Repr-Digest: {}", sha256_field(&data));
    s.send("POST", "/file/d/b.bin", &data, &[&header]).assert_ok_json();
    assert_eq!(s.read("d/b.bin"), data);
}

#[test]
fn a_wrong_digest_on_an_upload_leaves_the_old_file_and_no_temp_file() {
    let s = Server::start();
    s.post("/file/a.bin", "the old version\n").assert_ok_json();
    let data = random_bytes(200_000, 2);
    let other = random_bytes(10, 3);
    for field in [
        format!("Content-Digest: {}", sha256_field(&other)),
        format!("Content-Digest: {}", crc32c_field(&other)),
        format!("Content-Digest: {}", sha512_field(&other)),
        format!("Repr-Digest: {}", sha256_field(&other)),
        // One right digest does not excuse a wrong one.
        format!("Content-Digest: {}, {}", crc32c_field(&data), sha256_field(&other)),
    ] {
        let r = s.send("POST", "/file/a.bin", &data, &[&field]);
        r.assert_error(400);
        let body = r.text();
        assert!(body.contains("digest_mismatch"), "{field}: {body}");
        assert!(body.contains("the server computed"), "{field}: {body}");
        assert_eq!(s.read("a.bin"), b"the old version\n", "{field}");
        assert_eq!(internal_files(&s), Vec::<String>::new(), "{field}");
    }
    let r = s.send(
        "POST",
        "/file/new.bin",
        &data,
        &[&format!("Content-Digest: {}", sha256_field(&other))],
    );
    r.assert_error(400);
    assert!(!s.exists("new.bin"));
}

#[test]
fn a_wrong_digest_on_an_append_adds_no_byte() {
    let s = Server::start();
    let first = b"line one\n".to_vec();
    s.post("/file/log", &first).assert_ok_json();
    let next = random_bytes(100_000, 4);
    let whole = [first.clone(), next.clone()].concat();
    for field in [
        format!("Content-Digest: {}", sha256_field(b"x")),
        format!("Content-Digest: {}", crc32c_field(b"x")),
        format!("Repr-Digest: {}", crc32c_field(&next)),
        format!("Repr-Digest: {}", crc32c_field(b"x")),
    ] {
        let r = s.send("PUT", "/file/log", &next, &[&field]);
        r.assert_error(400);
        assert!(r.text().contains("digest_mismatch"), "{field}: {}", r.text());
        assert_eq!(s.read("log"), first, "{field}");
        assert_eq!(internal_files(&s), Vec::<String>::new(), "{field}");
    }
    let right = format!("Repr-Digest: {}", crc32c_field(&whole));
    let content = format!("Content-Digest: {}", sha256_field(&next));
    let r = s.send("PUT", "/file/log", &next, &[&right, &content]);
    r.assert_ok_json();
    assert_eq!(s.read("log"), whole);
    assert!(
        r.header("repr-digest")
            .is_some_and(|v| v.contains(&crc32c_field(&whole)))
    );
}

#[test]
fn a_sha256_repr_digest_of_an_append_is_verified_from_the_kept_state() {
    let s = Server::start();
    let first = random_bytes(70_000, 5);
    s.send(
        "POST",
        "/file/f",
        &first,
        &[&format!("Content-Digest: {}", sha256_field(&first))],
    )
    .assert_ok_json();
    let next = random_bytes(1_000, 6);
    let whole = [first.clone(), next.clone()].concat();
    let wrong = format!("Repr-Digest: {}", sha256_field(&next));
    s.send("PUT", "/file/f", &next, &[&wrong]).assert_error(400);
    assert_eq!(s.read("f"), first);
    let right = format!("Repr-Digest: {}", sha256_field(&whole));
    let r = s.send("PUT", "/file/f", &next, &[&right]);
    r.assert_ok_json();
    assert!(
        r.header("repr-digest")
            .is_some_and(|v| v.contains(&sha256_field(&whole))),
        "{:?}",
        r.headers
    );
}

#[test]
fn digests_in_a_chunked_trailer_section_are_verified_before_the_commit() {
    let s = Server::start();
    let data = random_bytes(150_000, 7);
    let other = random_bytes(5, 8);
    for (method, path) in [("POST", "/file/t/up.bin"), ("PUT", "/file/t/log.bin")] {
        for field in ["Content-Digest", "Repr-Digest"] {
            let before = s
                .exists(&path["/file/".len()..])
                .then(|| s.read(&path["/file/".len()..]));
            let wrong = chunked_with_trailers(method, path, &data, &[format!("{field}: {}", sha256_field(&other))]);
            let r = s.connect().send(&wrong).response();
            assert_eq!(r.status, 400, "{method} {field}: {}", r.text());
            assert!(r.text().contains("digest_mismatch"), "{}", r.text());
            let after = s
                .exists(&path["/file/".len()..])
                .then(|| s.read(&path["/file/".len()..]));
            assert_eq!(before, after, "{method} {field}: nothing committed");
            assert_eq!(internal_files(&s), Vec::<String>::new());
        }
        let right = chunked_with_trailers(
            method,
            path,
            &data,
            &[format!(
                "Content-Digest: {}, {}",
                sha256_field(&data),
                crc32c_field(&data)
            )],
        );
        let r = s.connect().send(&right).response();
        assert_eq!(r.status, 200, "{method}: {}", r.text());
        assert!(
            r.header("repr-digest").is_some_and(|v| v.contains("sha-256=:")),
            "{:?}",
            r.headers
        );
    }
    assert_eq!(s.read("t/log.bin"), data);
    // A trailer digest not announced in the head is still checked when it is a crc32c.
    let mut unannounced = chunked_with_trailers(
        "POST",
        "/file/t/c.bin",
        &data,
        &[format!("Content-Digest: {}", crc32c_field(&other))],
    );
    let head_end = unannounced.windows(4).position(|w| w == b"\r\n\r\n").expect("head end");
    let trailer_line = b"Trailer: Content-Digest\r\n";
    let at = unannounced[..head_end + 2]
        .windows(trailer_line.len())
        .position(|w| w == trailer_line)
        .expect("Trailer");
    unannounced.drain(at..at + trailer_line.len());
    let r = s.connect().send(&unannounced).response();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(!s.exists("t/c.bin"));
}

#[test]
fn unknown_algorithms_and_malformed_values_are_refused_saying_what_is_wrong() {
    let s = Server::start();
    s.post("/file/f", "old").assert_ok_json();
    let r = s.send("POST", "/file/f", b"new", &["Content-Digest: md5=:AAAA:, unixsum=12"]);
    r.assert_error(400);
    assert!(r.text().contains("unsupported_digest"), "{}", r.text());
    let want = r
        .header("want-content-digest")
        .unwrap_or_else(|| r.fail("no Want-Content-Digest"));
    assert!(want.contains("sha-256=") && want.contains("crc32c="), "{want}");
    for (value, says) in [
        ("sha-256=AAAA", "byte sequence"),
        ("sha-256=:AAAA:", "32 bytes"),
        ("crc32c=:!!:", "not base64"),
        ("SHA-256=:AAAA:", "not an algorithm name"),
    ] {
        for method in ["POST", "PUT"] {
            let r = s.send(method, "/file/f", b"new", &[&format!("Content-Digest: {value}")]);
            r.assert_error(400);
            assert!(r.text().contains(says), "{value}: {}", r.text());
        }
    }
    assert_eq!(s.read("f"), b"old");
}

#[test]
fn want_repr_digest_on_get_head_and_ranges_matches_sha256sum() {
    let s = Server::start();
    let data = random_bytes(1_000_000, 9);
    s.send(
        "POST",
        "/file/big.bin",
        &data,
        &[&format!("Content-Digest: {}", sha256_field(&data))],
    )
    .assert_ok_json();
    let want = sha256sum(&s.root().join("big.bin"));
    let crc = crc32c_field(&data);
    let get = s.get_with("/file/big.bin", &["Want-Repr-Digest: sha-256=5"]);
    get.assert_ok_body(&data);
    assert_eq!(get.header("repr-digest"), Some(want.as_str()));
    let head = s.curl(&[
        "-I",
        "-H",
        "Want-Repr-Digest: sha-256=5, crc32c=1",
        &s.url("/file/big.bin"),
    ]);
    assert_eq!(head.header("repr-digest"), Some(format!("{want}, {crc}").as_str()));
    let part = s.get_with("/file/big.bin", &["Want-Repr-Digest: sha-256=5", "Range: bytes=10-99"]);
    part.assert_status(206);
    assert_eq!(
        part.header("repr-digest"),
        Some(want.as_str()),
        "the whole file's, on a 206 too"
    );
    // Not asked: not sent. Asked for crc32c only: that.
    assert_eq!(s.get("/file/big.bin").header("repr-digest"), None);
    let only_crc = s.get_with("/file/big.bin", &["Want-Repr-Digest: crc32c=1"]);
    assert_eq!(only_crc.header("repr-digest"), Some(crc.as_str()));
    // A file uploaded without sha-256 keeps its crc32c, which a sha-256 request gets instead.
    s.post("/file/plain.bin", &data).assert_ok_json();
    let fallback = s.get_with("/file/plain.bin", &["Want-Repr-Digest: sha-256=5"]);
    assert_eq!(fallback.header("repr-digest"), Some(crc.as_str()));
}

#[test]
fn a_kept_digest_follows_a_move() {
    let s = Server::start();
    let data = random_bytes(5_000, 10);
    s.send(
        "POST",
        "/file/a/x.bin",
        &data,
        &[&format!("Content-Digest: {}", sha256_field(&data))],
    )
    .assert_ok_json();
    s.put_json("/file/a/x.bin", r#"{"path": "b/y.bin"}"#).assert_ok_json();
    let r = s.get_with("/file/b/y.bin", &["Want-Repr-Digest: sha-256=1"]);
    assert_eq!(
        r.header("repr-digest"),
        Some(sha256sum(&s.root().join("b/y.bin")).as_str())
    );
}

#[test]
fn a_thousand_appends_from_eight_clients_extend_the_kept_digest() {
    let s = Server::start();
    s.send("POST", "/file/log", b"", &["Want-Repr-Digest: sha-256=1"])
        .assert_ok_json();
    thread::scope(|scope| {
        for appender in 0..APPENDERS {
            let s = &s;
            scope.spawn(move || {
                for i in 0..APPENDS_EACH {
                    let len = if i % 50 == 0 { 70_000 } else { 20 + i % 90 };
                    let mut line = random_bytes(len, (appender * 1000 + i) as u64);
                    line.push(b'\n');
                    let digest = format!("Content-Digest: {}", crc32c_field(&line));
                    s.send("PUT", "/file/log", &line, &[&digest]).assert_ok_json();
                }
            });
        }
    });
    let want = sha256sum(&s.root().join("log"));
    let data = s.read("log");
    let r = s.get_with("/file/log", &["Want-Repr-Digest: sha-256=1, crc32c=1"]);
    assert_eq!(
        r.header("repr-digest"),
        Some(format!("{want}, {}", crc32c_field(&data)).as_str())
    );
}

#[test]
fn a_file_changed_behind_the_servers_back_has_no_kept_digest() {
    let s = Server::start();
    let data = random_bytes(10_000, 11);
    s.send(
        "POST",
        "/file/f",
        &data,
        &[&format!("Content-Digest: {}", sha256_field(&data))],
    )
    .assert_ok_json();
    let asked = ["Want-Repr-Digest: sha-256=1, crc32c=1"];
    assert!(s.get_with("/file/f", &asked).header("repr-digest").is_some());
    // Another writer of the volume appends, then rewrites a byte in place (same size).
    let path = s.root().join("f");
    let mut f = fs::OpenOptions::new().append(true).open(&path).expect("open");
    std::io::Write::write_all(&mut f, b"tail").expect("append");
    drop(f);
    assert_eq!(
        s.get_with("/file/f", &asked).header("repr-digest"),
        None,
        "after a foreign append"
    );
    // An append through the service now has nothing to extend: it reads the file once for its
    // crc32c (answered, and kept: the next append's crc32c Repr-Digest is verified); a sha-256
    // Repr-Digest cannot be verified (refused, not committed).
    let r = s.append("/file/f", "more");
    r.assert_ok_json();
    let whole = s.read("f");
    assert_eq!(r.header("repr-digest"), Some(crc32c_field(&whole).as_str()));
    let with_x = [whole.clone(), b"x".to_vec()].concat();
    let sha_claim = format!("Repr-Digest: {}", sha256_field(&with_x));
    s.send("PUT", "/file/f", b"x", &[&sha_claim]).assert_error(400);
    assert_eq!(s.read("f"), whole);
    let claim = format!("Repr-Digest: {}", crc32c_field(&with_x));
    s.send("PUT", "/file/f", b"x", &[&claim]).assert_ok_json();
    assert_eq!(s.read("f"), with_x);
    // Replaced through the service: kept again.
    s.post("/file/f", &data).assert_ok_json();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let mut bytes = fs::read(&path).expect("read");
    bytes[0] ^= 1;
    let f = fs::OpenOptions::new().write(true).open(&path).expect("open");
    std::os::unix::fs::FileExt::write_all_at(&f, &bytes[..1], 0).expect("rewrite");
    assert_eq!(
        s.get_with("/file/f", &asked).header("repr-digest"),
        None,
        "after an in-place rewrite"
    );
}

/// The README's digest recipes, verbatim: an upload and an append verified by the server, and a
/// download checked against the kept digest (it prints `verified`); a wrong digest is refused.
#[test]
fn the_readmes_digest_recipes_work_as_written() {
    let s = Server::start();
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("read README.md");
    let section = &readme[readme
        .find("### Verified writes and downloads")
        .expect("README has the digest section")..];
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let block = &section[start..start + section[start..].find("```").expect("block end")];
    s.scratch_file("f.csv", random_bytes(100_000, 12));
    s.scratch_file("part2.csv", random_bytes(3_000, 13));
    let script = format!("set -e\nF=http://http-nas:3000/file\n{block}");
    let out = s.readme(&script);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verified"),
        "{}",
        out.stderr
    );
    // The same upload with a digest of other bytes is refused, and the file stays.
    let before = s.read("runs/f.csv");
    s.scratch_file("f.csv", b"other bytes");
    let first = block
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let upload = first.replace(
        "openssl dgst -sha256 -binary f.csv",
        "printf x | openssl dgst -sha256 -binary",
    );
    let refused = s.sh(&format!("F={}\n{upload}", s.url("/file")));
    assert!(!refused.status.success(), "a wrong digest must fail the command");
    assert_eq!(s.read("runs/f.csv"), before);
}

/// A FUSE mount (bindfs) of a fresh directory that refuses extended attributes (`ENOTSUP`), as
/// NFS before 4.2 does; unmounted on drop.
struct NoXattrVolume {
    dir: crate::support::TempDir,
}

impl NoXattrVolume {
    fn mount() -> Result<NoXattrVolume, String> {
        let dir = crate::support::TempDir::new();
        let (backing, mount) = (dir.path().join("backing"), dir.path().join("mnt"));
        for d in [&backing, &mount] {
            fs::create_dir(d).map_err(|e| format!("mkdir: {e}"))?;
        }
        let out = Command::new("bindfs")
            .arg("--xattr-none")
            .arg(&backing)
            .arg(&mount)
            .output()
            .map_err(|e| format!("no bindfs ({e}): apt-get install bindfs"))?;
        if !out.status.success() {
            return Err(format!(
                "bindfs refused: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(NoXattrVolume { dir })
    }

    fn root(&self) -> std::path::PathBuf {
        self.dir.path().join("mnt")
    }
}

impl Drop for NoXattrVolume {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.root()).status();
    }
}

#[test]
fn on_a_volume_without_extended_attributes_digests_are_kept_in_hidden_records() {
    let volume = match NoXattrVolume::mount() {
        Ok(v) => v,
        Err(reason) => return crate::support::skip(&reason),
    };
    let mut s = Server::start_on(&volume.root(), &[]);
    let data = random_bytes(200_000, 14);
    let asked = ["Want-Repr-Digest: sha-256=1"];
    s.send(
        "POST",
        "/file/a/f",
        &data,
        &[&format!("Content-Digest: {}", sha256_field(&data))],
    )
    .assert_ok_json();
    assert_eq!(
        s.get_with("/file/a/f", &asked).header("repr-digest"),
        Some(sha256_field(&data).as_str())
    );
    // Appends extend it (a sha-256 Repr-Digest is verified from the record).
    let more = b"more bytes\n";
    let whole = [data.clone(), more.to_vec()].concat();
    s.send(
        "PUT",
        "/file/a/f",
        more,
        &[&format!("Repr-Digest: {}", sha256_field(&data))],
    )
    .assert_error(400);
    s.send(
        "PUT",
        "/file/a/f",
        more,
        &[&format!("Repr-Digest: {}", sha256_field(&whole))],
    )
    .assert_ok_json();
    // A move carries it; a restart (its sweep) keeps it; the listing shows no record.
    s.put_json("/file/a/f", r#"{"path": "b/g"}"#).assert_ok_json();
    s.restart();
    let moved = s.get_with("/file/b/g", &asked);
    moved.assert_ok_body(&whole);
    assert_eq!(
        moved.header("repr-digest"),
        Some(sha256sum(&volume.root().join("b/g")).as_str())
    );
    assert_eq!(s.get("/file/b").text(), "g\n");
    // A replace leaves one record, not two; another writer's change drops the digest.
    s.post("/file/b/g", "new version\n").assert_ok_json();
    let records = |dir: &str| {
        fs::read_dir(volume.root().join(dir))
            .expect("list")
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().starts_with(".http-nas-digest-"))
            })
            .count()
    };
    assert_eq!(records("b"), 1);
    assert_eq!(records("a"), 0, "the move took the record along");
    thread::sleep(std::time::Duration::from_millis(20));
    fs::write(volume.root().join("b/g"), "new version, changed\n").expect("write behind the server");
    assert_eq!(
        s.get_with("/file/b/g", &["Want-Repr-Digest: crc32c=1"])
            .header("repr-digest"),
        None
    );
}

/// `POST` (or with `append`, `PUT`) `/file/{target}/concat` of `sources`, with `headers`.
fn concat(s: &Server, target: &str, sources: &[&str], append: bool, headers: &[&str]) -> crate::support::Response {
    let method = if append { "PUT" } else { "POST" };
    s.send(
        method,
        &format!("/file/{target}/concat"),
        &concat_body(sources),
        headers,
    )
}

/// The JSON body naming `sources`.
fn concat_body(sources: &[&str]) -> Vec<u8> {
    let list: Vec<String> = sources.iter().map(|p| format!("{p:?}")).collect();
    format!("{{\"sources\": [{}]}}", list.join(", ")).into_bytes()
}

/// Parts uploaded through the service (so each keeps its digest): sizes around the memory
/// spool's and a sha-256 block's edges. Returns their names and `cat` of them.
fn upload_parts(s: &Server, prefix: &str, seed: u64) -> (Vec<String>, Vec<u8>) {
    let (mut names, mut all) = (Vec::new(), Vec::new());
    for (i, len) in [0usize, 1, 63, 64, 65, 4096, 300_001, 17].into_iter().enumerate() {
        let name = format!("{prefix}/part-{i}");
        let data = random_bytes(len, seed + i as u64);
        s.post(&format!("/file/{name}"), &data).assert_ok_json();
        all.extend_from_slice(&data);
        names.push(name);
    }
    (names, all)
}

/// `cat` of the sources under the root, run by the shell.
fn cat(s: &Server, sources: &[&str]) -> Vec<u8> {
    let out = Command::new("cat")
        .current_dir(s.root())
        .args(sources)
        .output()
        .expect("run cat");
    assert!(out.status.success(), "cat failed");
    out.stdout
}

#[test]
fn a_concatenation_answers_the_repr_digest_of_cat_of_its_sources_and_sha256_when_asked() {
    let s = Server::start();
    let (names, _) = upload_parts(&s, "run", 100);
    let sources: Vec<&str> = names.iter().map(String::as_str).collect();
    let want = cat(&s, &sources);
    // POST: crc32c always (combined from the parts' kept ones), matching `cat | crc32c`.
    let r = concat(&s, "out/all.bin", &sources, false, &[]);
    r.assert_ok_json();
    assert_eq!(s.read("out/all.bin"), want);
    assert_eq!(r.header("repr-digest"), Some(crc32c_field(&want).as_str()));
    // Asked for sha-256: that too, matching sha256sum of the file.
    let r = concat(&s, "out/all.bin", &sources, false, &["Want-Repr-Digest: sha-256=1"]);
    r.assert_ok_json();
    let sha = sha256sum(&s.root().join("out/all.bin"));
    assert_eq!(
        r.header("repr-digest"),
        Some(format!("{sha}, {}", crc32c_field(&want)).as_str())
    );
    // Right claims are verified and accepted: Repr-Digest of the result, Content-Digest of the
    // JSON body.
    let claims = [
        format!("Repr-Digest: {}, {}", sha256_field(&want), crc32c_field(&want)),
        format!("Content-Digest: {}", sha256_field(&concat_body(&sources))),
    ];
    let r = concat(&s, "out/all.bin", &sources, false, &[&claims[0], &claims[1]]);
    r.assert_ok_json();
    assert!(
        r.header("repr-digest").is_some_and(|v| v.contains(&sha)),
        "{:?}",
        r.headers
    );
    // PUT: the target's kept crc32c extended by the gathered bytes'.
    let r = concat(&s, "out/all.bin", &sources[..3], true, &[]);
    r.assert_ok_json();
    let whole = [want.clone(), cat(&s, &sources[..3])].concat();
    assert_eq!(s.read("out/all.bin"), whole);
    assert_eq!(r.header("repr-digest"), Some(crc32c_field(&whole).as_str()));
    // A sha-256 Content-Digest (of the JSON) alone: the answer carries the file's sha-256 too,
    // as every write that carries a sha-256 digest does.
    let r = concat(&s, "out/all.bin", &sources, false, &[&claims[1]]);
    r.assert_ok_json();
    assert_eq!(
        r.header("repr-digest"),
        Some(format!("{sha}, {}", crc32c_field(&want)).as_str())
    );
    // A Content-Digest of the sources' bytes is not one of the JSON body: refused.
    let wrong = format!("Content-Digest: {}", crc32c_field(&want));
    concat(&s, "out/other.bin", &sources, false, &[&wrong]).assert_error(400);
    assert!(!s.exists("out/other.bin"));
}

#[test]
fn a_wrong_repr_digest_on_a_concatenation_leaves_the_target_byte_identical_and_no_temp_file() {
    let s = Server::start();
    let (names, _) = upload_parts(&s, "run", 200);
    let sources: Vec<&str> = names.iter().map(String::as_str).collect();
    let old = random_bytes(5_000, 7);
    // Kept with its sha-256, so a sha-256 Repr-Digest of an append to it can be verified.
    s.send("POST", "/file/target.bin", &old, &["Want-Repr-Digest: sha-256=1"])
        .assert_ok_json();
    let want = cat(&s, &sources);
    let appended = [old.clone(), want.clone()].concat();
    for append in [false, true] {
        for field in [
            format!("Repr-Digest: {}", crc32c_field(b"x")),
            format!("Repr-Digest: {}", sha256_field(b"x")),
            // The sources' bytes' digest is not the file's after an append.
            format!("Repr-Digest: {}", crc32c_field(if append { &want } else { &appended })),
            format!("Repr-Digest: {}, {}", crc32c_field(&want), sha256_field(b"x")),
        ] {
            let r = concat(&s, "target.bin", &sources, append, &[&field]);
            r.assert_error(400);
            assert!(r.text().contains("digest_mismatch"), "{field}: {}", r.text());
            assert_eq!(s.read("target.bin"), old, "append {append}, {field}");
            assert_eq!(internal_files(&s), Vec::<String>::new(), "append {append}, {field}");
        }
        let r = concat(&s, "target.bin", &sources, append, &["Repr-Digest: md5=:AAAA:"]);
        r.assert_error(400);
        assert!(r.text().contains("unsupported_digest"), "{}", r.text());
        assert!(r.header("want-content-digest").is_some(), "{:?}", r.headers);
        assert_eq!(s.read("target.bin"), old);
    }
    let r = concat(
        &s,
        "new.bin",
        &sources,
        true,
        &[&format!("Repr-Digest: {}", sha256_field(b"x"))],
    );
    r.assert_error(400);
    assert!(!s.exists("new.bin"));
    assert_eq!(internal_files(&s), Vec::<String>::new());
    // The right one commits.
    let right = format!("Repr-Digest: {}", sha256_field(&appended));
    concat(&s, "target.bin", &sources, true, &[&right]).assert_ok_json();
    assert_eq!(s.read("target.bin"), appended);
}

#[test]
fn want_repr_digest_after_a_concatenation_answers_from_the_kept_digest() {
    let s = Server::start();
    let (names, _) = upload_parts(&s, "run", 300);
    let sources: Vec<&str> = names.iter().map(String::as_str).collect();
    let asked = ["Want-Repr-Digest: sha-256=1, crc32c=1"];
    for (target, append) in [("posted.bin", false), ("created-by-put.bin", true)] {
        concat(&s, target, &sources, append, &["Want-Repr-Digest: sha-256=1"]).assert_ok_json();
        let data = s.read(target);
        let r = s.get_with(&format!("/file/{target}"), &asked);
        r.assert_ok_body(&data);
        assert_eq!(
            r.header("repr-digest"),
            Some(format!("{}, {}", sha256sum(&s.root().join(target)), crc32c_field(&data)).as_str()),
            "{target}"
        );
    }
    // Not asked for sha-256: the crc32c is kept, and answered.
    concat(&s, "plain.bin", &sources, false, &[]).assert_ok_json();
    let data = s.read("plain.bin");
    let r = s.get_with("/file/plain.bin", &asked);
    assert_eq!(r.header("repr-digest"), Some(crc32c_field(&data).as_str()));
}

#[test]
fn a_put_concatenation_extends_a_kept_sha256() {
    let s = Server::start();
    let (names, _) = upload_parts(&s, "run", 400);
    let sources: Vec<&str> = names.iter().map(String::as_str).collect();
    // 70 bytes: the kept state has a tail of 6 bytes not yet compressed.
    let first = random_bytes(70, 8);
    s.send("POST", "/file/log", &first, &["Want-Repr-Digest: sha-256=1"])
        .assert_ok_json();
    // Not asked this time: the kept sha-256 is extended all the same, as an append extends it.
    concat(&s, "log", &sources[..4], true, &[]).assert_ok_json();
    let asked = ["Want-Repr-Digest: sha-256=1"];
    let path = s.root().join("log");
    assert_eq!(
        s.get_with("/file/log", &asked).header("repr-digest"),
        Some(sha256sum(&path).as_str())
    );
    // Claimed: verified against the kept state extended, and answered.
    let whole = [s.read("log"), cat(&s, &sources)].concat();
    let claim = format!("Repr-Digest: {}", sha256_field(&whole));
    let r = concat(&s, "log", &sources, true, &[&claim]);
    r.assert_ok_json();
    assert_eq!(s.read("log"), whole);
    let sha = sha256sum(&path);
    assert_eq!(
        r.header("repr-digest"),
        Some(format!("{sha}, {}", crc32c_field(&whole)).as_str())
    );
    assert_eq!(
        s.get_with("/file/log", &asked).header("repr-digest"),
        Some(sha.as_str())
    );
}

#[test]
fn a_source_changed_behind_the_servers_back_still_gives_a_right_crc32c() {
    let s = Server::start();
    let (names, _) = upload_parts(&s, "run", 500);
    let sources: Vec<&str> = names.iter().map(String::as_str).collect();
    // Another writer of the volume appends to one part and rewrites a byte of another in place
    // (same size, a later modification time): their kept digests name versions that are gone.
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(s.root().join(sources[4]))
        .expect("open");
    std::io::Write::write_all(&mut f, b"foreign tail").expect("append");
    drop(f);
    thread::sleep(std::time::Duration::from_millis(20));
    let sixth = s.root().join(sources[6]);
    let f = fs::OpenOptions::new().write(true).open(&sixth).expect("open");
    std::os::unix::fs::FileExt::write_all_at(&f, b"Z", 1000).expect("rewrite");
    drop(f);
    // And one part was never written through the service.
    s.write("run/foreign", random_bytes(9_999, 9));
    let mut all = sources.clone();
    all.push("run/foreign");
    let want = cat(&s, &all);
    for append in [false, true] {
        let target = if append { "appended.bin" } else { "posted.bin" };
        if append {
            s.post("/file/appended.bin", b"head\n").assert_ok_json();
        }
        let r = concat(&s, target, &all, append, &[]);
        r.assert_ok_json();
        let data = s.read(target);
        assert!(data.ends_with(&want));
        assert_eq!(r.header("repr-digest"), Some(crc32c_field(&data).as_str()), "{target}");
        let got = s.get_with(&format!("/file/{target}"), &["Want-Repr-Digest: crc32c=1"]);
        assert_eq!(
            got.header("repr-digest"),
            Some(crc32c_field(&data).as_str()),
            "{target}"
        );
    }
}

/// The README's concatenation recipe, verbatim: the joined file's Repr-Digest checks out
/// against a download (it prints `verified`).
#[test]
fn the_readmes_concat_recipe_answers_a_repr_digest_that_a_download_checks() {
    let s = Server::start();
    s.post("/file/run/part-1.csv", random_bytes(100_000, 14))
        .assert_ok_json();
    s.post("/file/run/part-2.csv", random_bytes(3_000, 15)).assert_ok_json();
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("read README.md");
    let section = &readme[readme
        .find("### Fan-in and retention")
        .expect("README has the fan-in section")..];
    let start = section.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let block = &section[start..start + section[start..].find("```").expect("block end")];
    assert!(block.contains("/concat"), "{block}");
    let out = s.readme(&format!("set -e\nF=http://http-nas:3000/file\n{block}"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("verified"),
        "{}",
        out.stderr
    );
}

/// Rounds of [`kill9_during_a_concatenation_never_leaves_a_kept_digest_that_disagrees_with_the_data`]:
/// `HTTP_NAS_CRASH_ROUNDS` (as the crash tests), else 4.
fn crash_rounds() -> usize {
    std::env::var("HTTP_NAS_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4)
}

#[test]
fn kill9_during_a_concatenation_never_leaves_a_kept_digest_that_disagrees_with_the_data() {
    let disk = match crate::support::mounts::Mounted::throttled_disk() {
        Ok(disk) => disk,
        Err(reason) => return crate::support::skip(&reason),
    };
    let root = disk.root();
    let base = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() ^ u64::from(d.subsec_nanos()));
    eprintln!("concatenation kills from seed {base}");
    let mut s = Server::start_on(&root, &[]);
    let mut parts = Vec::new();
    for i in 0..4u64 {
        let part = random_bytes(6 << 20, 600 + i);
        s.post(&format!("/file/part-{i}"), &part).assert_ok_json();
        parts.extend(part);
    }
    let body = br#"{"sources": ["part-0", "part-1", "part-2", "part-3"]}"#;
    // Kills land anywhere in up to three times a concatenation's length on this disk (the
    // dirty pages a killed one leaves make the next slower).
    let started = std::time::Instant::now();
    s.send("POST", "/file/t/concat", body, &[]).assert_ok_json();
    let span = (started.elapsed().as_millis() as u64 * 3).max(1);
    eprintln!("a concatenation takes {} ms here", started.elapsed().as_millis());
    let (mut checked, mut outcomes) = (0, Vec::new());
    for round in 0..crash_rounds() * 2 {
        let append = round % 2 == 1;
        let old = random_bytes(1000 + round, 700 + round as u64);
        s.send("POST", "/file/t", &old, &["Want-Repr-Digest: sha-256=1"])
            .assert_ok_json();
        let method = if append { "PUT" } else { "POST" };
        let mut conn = s.connect();
        let head = format!(
            "{method} /file/t/concat HTTP/1.1\r\nHost: t\r\nWant-Repr-Digest: sha-256=1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        conn.send(head.as_bytes()).send(body);
        // Until the gathering shows (its temp file) or the target changed, then a random delay.
        let started = std::time::Instant::now();
        while started.elapsed() < std::time::Duration::from_secs(10)
            && internal_files(&s).is_empty()
            && fs::read(root.join("t")).is_ok_and(|t| t == old)
        {
            thread::sleep(std::time::Duration::from_millis(2));
        }
        let seed = (base ^ (round as u64 + 1)).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40;
        thread::sleep(std::time::Duration::from_millis(seed % span));
        s.signal(libc::SIGKILL);
        drop(conn);
        s.restart();
        let got = s.read("t");
        let whole = if append {
            [old.clone(), parts.clone()].concat()
        } else {
            parts.clone()
        };
        assert!(
            got == old || got == whole,
            "round {round} ({method}): the target is {} bytes, neither as before nor whole",
            got.len()
        );
        outcomes.push(if got == old { "cut" } else { "done" });
        // The kept digest, if any, is the data's: never one of another version.
        let r = s.get_with("/file/t", &["Want-Repr-Digest: sha-256=1, crc32c=1"]);
        if let Some(kept) = r.header("repr-digest") {
            assert_eq!(
                kept,
                format!("{}, {}", sha256_field(&got), crc32c_field(&got)),
                "round {round} ({method})"
            );
            checked += 1;
        }
        s.expect_no_temp_files();
    }
    eprintln!("outcomes {outcomes:?}; {checked} kept digests checked after restarts");
    assert!(
        checked > 0,
        "no kept digest survived any round: the check proved nothing"
    );
}

#[test]
fn a_sha256_repr_digest_of_an_append_to_a_file_keeping_no_sha256_says_so() {
    let s = Server::start();
    s.post("/file/run/part", b"part\n").assert_ok_json();
    s.post("/file/log", b"first\n").assert_ok_json();
    let whole = b"first\npart\n";
    let claim = format!("Repr-Digest: {}", sha256_field(whole));
    for r in [
        s.send("PUT", "/file/log", b"part\n", &[&claim]),
        concat(&s, "log", &["run/part"], true, &[&claim]),
    ] {
        r.assert_error(400);
        assert!(r.text().contains("keeps no sha-256"), "{}", r.text());
        assert_eq!(s.read("log"), b"first\n");
    }
}

#[test]
fn a_digest_field_on_two_lines_is_checked_whole_and_a_malformed_one_refused() {
    let s = Server::start();
    let sent = b"tampered bytes!\n".to_vec();
    let right = b"the right bytes\n".to_vec();
    // Two Content-Digest lines are one list (RFC 9110 §5.3): the second line's wrong sha-256
    // is a mismatch, as it is on one line.
    for field in ["Content-Digest", "Repr-Digest"] {
        let r = s.send(
            "POST",
            "/file/one",
            &sent,
            &[
                &format!("{field}: {}", crc32c_field(&sent)),
                &format!("{field}: {}", sha256_field(&right)),
            ],
        );
        r.assert_error(400);
        assert!(r.text().contains("digest_mismatch"), "{field}: {}", r.text());
        assert!(!s.exists("one"), "{field}");
    }
    // An unknown algorithm on the first line, a wrong sha-256 on the second: checked.
    let r = s.send(
        "POST",
        "/file/one",
        &sent,
        &[
            "Content-Digest: md5=:AAAA:",
            &format!("Content-Digest: {}", sha256_field(&right)),
        ],
    );
    r.assert_error(400);
    assert!(r.text().contains("digest_mismatch"), "{}", r.text());
    // A byte that is not UTF-8 in a digest field: 400, nothing stored.
    let raw = format!(
        "POST /file/two HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\nContent-Digest: sha-256=:\u{1}",
        sent.len()
    );
    let mut request = raw.into_bytes();
    request.pop();
    request.push(0xff);
    request.extend_from_slice(format!("{}:\r\n\r\n", b64(&sha2::Sha256::digest(&right))).as_bytes());
    request.extend_from_slice(&sent);
    let r = s.connect().send(&request).response();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(!s.exists("two"));
    // A trailer line with a space before its colon: 400, as in a head.
    let mut spaced = chunked_with_trailers(
        "POST",
        "/file/three",
        &sent,
        &[format!("Content-Digest: {}", sha256_field(&right))],
    );
    let at = spaced
        .windows(b"\r\nContent-Digest: sha".len())
        .rposition(|w| w == b"\r\nContent-Digest: sha")
        .expect("trailer line");
    spaced.insert(at + "\r\nContent-Digest".len(), b' ');
    let r = s.connect().send(&spaced).response();
    assert_eq!(r.status, 400, "{}", r.text());
    assert!(!s.exists("three"));
    // The right digests on two lines pass.
    s.send(
        "POST",
        "/file/four",
        &sent,
        &[
            &format!("Content-Digest: {}", crc32c_field(&sent)),
            &format!("Content-Digest: {}", sha256_field(&sent)),
        ],
    )
    .assert_ok_json();
}

#[test]
fn an_unsupported_repr_digest_is_answered_with_want_repr_digest() {
    let s = Server::start();
    s.post("/file/f", "old").assert_ok_json();
    for method in ["POST", "PUT"] {
        let r = s.send(method, "/file/f", b"new", &["Repr-Digest: md5=:AAAA:"]);
        r.assert_error(400);
        assert!(r.text().contains("unsupported_digest"), "{}", r.text());
        let want = r
            .header("want-repr-digest")
            .unwrap_or_else(|| r.fail("no Want-Repr-Digest"));
        assert!(want.contains("sha-256=") && !want.contains("sha-512"), "{want}");
        // The contract lists what the server has for bodies too.
        assert!(r.header("want-content-digest").is_some(), "{method}");
    }
    assert_eq!(s.read("f"), b"old");
}

#[test]
fn want_repr_digest_takes_the_last_preference_of_an_algorithm() {
    let s = Server::start();
    let data = random_bytes(1000, 21);
    s.send(
        "POST",
        "/file/f",
        &data,
        &[&format!("Content-Digest: {}", sha256_field(&data))],
    )
    .assert_ok_json();
    let crc = crc32c_field(&data);
    for (asked, answer) in [
        ("sha-256=1, sha-256=0", crc.clone()),
        ("sha-256=0, sha-256=3", sha256_field(&data)),
        ("sha-256=-1", crc.clone()),
        ("sha-256=?0", crc.clone()),
    ] {
        let r = s.get_with("/file/f", &[&format!("Want-Repr-Digest: {asked}")]);
        assert_eq!(r.header("repr-digest"), Some(answer.as_str()), "{asked}");
    }
    let two_lines = s.get_with(
        "/file/f",
        &["Want-Repr-Digest: crc32c=1", "Want-Repr-Digest: sha-256=1"],
    );
    assert_eq!(
        two_lines.header("repr-digest"),
        Some(format!("{}, {crc}", sha256_field(&data)).as_str())
    );
}

#[test]
fn a_sha256_repr_digest_on_an_append_to_a_file_keeping_crc32c_only_says_why() {
    let s = Server::start();
    s.post("/file/f", "part1\n").assert_ok_json();
    let r = s.send(
        "PUT",
        "/file/f",
        b"part2\n",
        &[&format!("Repr-Digest: {}", sha256_field(b"part1\npart2\n"))],
    );
    r.assert_error(400);
    let text = r.text();
    assert!(
        text.contains("keeps no sha-256") && text.contains("Want-Repr-Digest: sha-256") && !text.contains("trailer"),
        "{text}"
    );
    assert_eq!(s.read("f"), b"part1\n");
}

/// The `Repr-Digest` of `r`, if any, is `data`'s sha-256 (absent is fine: never wrong).
fn none_or_right(r: &crate::support::Response, data: &[u8], what: &str) {
    if let Some(repr) = r.header("repr-digest") {
        assert!(
            repr.contains(&crc32c_field(data)),
            "{what}: answered {repr}, the file is {}",
            crc32c_field(data)
        );
        if repr.contains("sha-256") {
            assert!(repr.contains(&sha256_field(data)), "{what}: {repr}");
        }
    }
}

/// Another writer changes a byte in place while an append commits (each sync made a second
/// long with strace, so the change lands, by turns, before the append's write and after it,
/// during the sync before its digest is kept): the append's answer and every later read give the file's true digest or
/// none, never the one extended from the version before the change.
#[test]
fn another_writers_change_during_an_append_leaves_no_wrong_digest() {
    let Some(wrapper) = crate::support::strace_injecting("fsync,fdatasync", "fsync,fdatasync:delay_enter=1000000")
    else {
        return;
    };
    let home = crate::support::TempDir::new();
    let root = home.path().join("root");
    fs::create_dir(&root).expect("root");
    let s = Server::start_wrapped_on(&root, &wrapper, &[]);
    let first = vec![b'A'; 4096];
    let body = random_bytes(1 << 20, 22);
    let journal_shows = || {
        fs::read_dir(&root).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(".http-nas-journal-"))
        })
    };
    // Whole, and then a while into the sync that follows the write (a second long): the
    // append's own stat right after its write is behind it.
    let grown = || {
        let whole = fs::metadata(root.join("f")).is_ok_and(|m| m.len() == (first.len() + body.len()) as u64);
        if whole {
            thread::sleep(std::time::Duration::from_millis(300));
        }
        whole
    };
    let when: [(&str, &dyn Fn() -> bool); 2] = [("before the write", &journal_shows), ("after the write", &grown)];
    for (moment, reached) in when {
        s.send(
            "POST",
            "/file/f",
            &first,
            &[&format!("Content-Digest: {}", sha256_field(&first))],
        )
        .assert_ok_json();
        let mut append = s.connect();
        let mut request = format!(
            "PUT /file/f HTTP/1.1\r\nHost: x\r\nWant-Repr-Digest: sha-256=1\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        request.extend_from_slice(&body);
        append.send(&request);
        assert!(
            crate::support::wait_until(std::time::Duration::from_secs(20), reached),
            "{moment}: the append never got there"
        );
        {
            use std::os::unix::fs::FileExt as _;
            let other = fs::OpenOptions::new().write(true).open(root.join("f")).expect("open");
            other.write_all_at(b"Z", 0).expect("another writer");
        }
        let r = append.response();
        r.assert_status(200);
        let data = fs::read(root.join("f")).expect("read");
        assert_eq!(data.len(), first.len() + body.len(), "{moment}");
        none_or_right(&r, &data, &format!("{moment}: the append's answer"));
        let read = s.get_with("/file/f", &["Want-Repr-Digest: sha-256=1"]);
        none_or_right(&read, &data, &format!("{moment}: a later read"));
    }
}

/// The kept digests' records in `dir`.
fn digest_records(dir: &std::path::Path) -> Vec<String> {
    fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".http-nas-digest-"))
        .collect()
}

/// On a volume without extended attributes: a DELETE takes the file's record with it (so its
/// directory, listing empty, can be removed, and an inode number reused later finds nothing),
/// and the start-up sweep removes the record of a file another writer deleted.
#[test]
fn a_deleted_files_digest_record_goes_with_it() {
    let volume = match NoXattrVolume::mount() {
        Ok(v) => v,
        Err(reason) => return crate::support::skip(&reason),
    };
    let mut s = Server::start_on(&volume.root(), &[]);
    let data = b"secret-v1\n";
    for name in ["d/f", "d/g", "e/h"] {
        s.send(
            "POST",
            &format!("/file/{name}"),
            data,
            &[&format!("Content-Digest: {}", sha256_field(data))],
        )
        .assert_ok_json();
    }
    assert_eq!(digest_records(&volume.root().join("d")).len(), 2);
    s.delete("/file/d/f").assert_ok_json();
    s.delete("/file/d/g").assert_ok_json();
    assert_eq!(digest_records(&volume.root().join("d")), Vec::<String>::new());
    assert_eq!(s.get("/file/d").text(), "", "lists empty");
    fs::remove_dir(volume.root().join("d")).expect("rmdir of a directory that lists empty");
    // Another writer deletes a file: its record is gone after the next start.
    fs::remove_file(volume.root().join("e/h")).expect("another writer deletes");
    assert_eq!(digest_records(&volume.root().join("e")).len(), 1);
    s.restart();
    assert_eq!(digest_records(&volume.root().join("e")), Vec::<String>::new());
}

/// ext4 with 128-byte inodes stamps modification times in whole seconds, so another writer's
/// same-size rewrite within the second of a commit looks like the commit: the service notices
/// the coarse timestamps at start (and logs it) and keeps no digest there. Uploads still answer
/// the body's digest; downloads and appends answer none, and an append's Repr-Digest is refused
/// as unverifiable rather than checked against a digest that may be stale.
#[test]
fn on_a_volume_with_one_second_timestamps_no_digest_is_kept() {
    let disk = match crate::support::mounts::Mounted::ext4(64, &["-I", "128"], None) {
        Ok(disk) => disk,
        Err(reason) => return crate::support::skip(&reason),
    };
    let s = Server::start_on(&disk.root(), &[]);
    let first = vec![b'A'; 100];
    let r = s.send(
        "POST",
        "/file/f",
        &first,
        &[&format!("Content-Digest: {}", sha256_field(&first))],
    );
    r.assert_ok_json();
    assert_eq!(
        r.header("repr-digest"),
        Some(format!("{}, {}", sha256_field(&first), crc32c_field(&first)).as_str()),
        "an upload answers its body's digest"
    );
    let asked = ["Want-Repr-Digest: sha-256=1"];
    assert_eq!(s.get_with("/file/f", &asked).header("repr-digest"), None);
    // Another writer, same size, within the second.
    let second = vec![b'0'; 100];
    {
        use std::os::unix::fs::FileExt as _;
        let other = fs::OpenOptions::new()
            .write(true)
            .open(disk.root().join("f"))
            .expect("open");
        other.write_all_at(&second, 0).expect("another writer");
    }
    let read = s.get_with("/file/f", &asked);
    read.assert_ok_body(&second);
    assert_eq!(read.header("repr-digest"), None);
    let tail = b"tail\n";
    let stale = [first.clone(), tail.to_vec()].concat();
    let r = s.send(
        "PUT",
        "/file/f",
        tail,
        &[&format!("Repr-Digest: {}", sha256_field(&stale))],
    );
    r.assert_error(400);
    assert!(r.text().contains("whole seconds"), "{}", r.text());
    let r = s.send("PUT", "/file/f", tail, &[]);
    r.assert_ok_json();
    assert_eq!(r.header("repr-digest"), None);
    assert_eq!(s.read("f"), [second, tail.to_vec()].concat());
    assert!(s.log().contains("whole seconds"), "{}", s.log());
}

/// An append to a file the service keeps no digest for (another program wrote it) answers the
/// whole file's crc32c, read once under the append's lock and kept: the next appends extend it
/// without reading the file again, and a download asking for it gets it.
#[test]
fn an_append_to_a_file_with_no_kept_digest_answers_its_crc32c_and_keeps_it() {
    let s = Server::start();
    let first = random_bytes(3_000_000, 23);
    fs::write(s.root().join("g"), &first).expect("another program writes the file");
    let mut whole = first.clone();
    for (i, part) in [b"part2\n".to_vec(), random_bytes(100_000, 24)].into_iter().enumerate() {
        whole.extend_from_slice(&part);
        let r = s.send("PUT", "/file/g", &part, &[]);
        r.assert_ok_json();
        assert_eq!(
            r.header("repr-digest"),
            Some(crc32c_field(&whole).as_str()),
            "append {i}"
        );
    }
    assert_eq!(s.read("g"), whole);
    let read = s.get_with("/file/g", &["Want-Repr-Digest: crc32c=1"]);
    assert_eq!(read.header("repr-digest"), Some(crc32c_field(&whole).as_str()));
}
