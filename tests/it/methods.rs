//! Methods: a method a path does not take is 405 with `Allow`, and `OPTIONS` answers 204 with
//! the `Allow` of that path (the root takes only what the root takes).

use crate::support::Server;
use crate::support::headers::required;

#[test]
fn wrong_method_is_405_with_allow() {
    let s = Server::start();
    s.write("x", "x");
    for (method, path) in [("PATCH", "/file/x"), ("POST", "/healthz"), ("DELETE", "/file/x/wc")] {
        let response = s.curl(&["-X", method, &s.url(path)]);
        response.assert_error(405);
        let allow = required(&response, "Allow");
        let listed: Vec<&str> = allow.split(',').map(str::trim).collect();
        if !listed.contains(&"GET") || listed.contains(&method) {
            response.fail(&format!(
                "{method} {path}: Allow {allow:?} should list GET and not {method}"
            ));
        }
    }
}

#[test]
fn options_on_the_root_lists_only_what_the_root_takes() {
    let s = Server::start();
    let response = s.curl(&["-X", "OPTIONS", &s.url("/file/")]);
    response.assert_status(204);
    assert_eq!(
        required(&response, "Allow"),
        "GET, HEAD, OPTIONS",
        "{}",
        response.context
    );
}

#[test]
fn options_is_204_with_allow() {
    let s = Server::start();
    let response = s.curl(&["-X", "OPTIONS", &s.url("/file/x")]);
    response.assert_status(204);
    let allow = required(&response, "Allow");
    for method in ["GET", "HEAD", "POST", "PUT", "DELETE"] {
        if !allow.split(',').any(|m| m.trim() == method) {
            response.fail(&format!("Allow {allow:?} lacks {method}"));
        }
    }
}
