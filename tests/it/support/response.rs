//! The [`Response`] every request helper returns, from curl or off a raw socket, and the
//! assertions tests make on it; a failed one prints the response with the command or bytes that
//! produced it.

use super::bytes::preview;

/// One HTTP response, from curl or parsed off a raw socket.
#[derive(Debug)]
pub struct Response {
    /// 0 when curl got no response at all.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// What produced this response (command, curl stderr, raw bytes), for failure messages.
    pub context: String,
}

impl Response {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let found = self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name));
        found.map(|(_, v)| v.as_str())
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Panics with `what`, this response and its context.
    #[track_caller]
    pub fn fail(&self, what: &str) -> ! {
        panic!(
            "{what}\nstatus: {}\nheaders: {:?}\nbody: {}\n{}",
            self.status,
            self.headers,
            preview(&self.body),
            self.context
        )
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) -> &Self {
        if self.status != status {
            self.fail(&format!("expected status {status}, got {}", self.status));
        }
        self
    }

    /// Status 200 and exactly `expected` as the body.
    #[track_caller]
    pub fn assert_ok_body(&self, expected: impl AsRef<[u8]>) -> &Self {
        self.assert_status(200);
        if self.body != expected.as_ref() {
            self.fail(&format!("expected body {}", preview(expected.as_ref())));
        }
        self
    }

    /// Status 200 and a JSON body (the success reply of writes, moves and deletes).
    #[track_caller]
    pub fn assert_ok_json(&self) -> serde_json::Value {
        self.assert_status(200);
        serde_json::from_slice(&self.body).unwrap_or_else(|e| self.fail(&format!("body is not JSON: {e}")))
    }

    /// Status `status` with the contract's error body: `application/json`
    /// `{"error": KIND, "message": TEXT}`; a 404 is the seed's `text/plain` `Not Found`
    /// (or, asked for with `Accept: application/json`, KIND `not_found`).
    #[track_caller]
    pub fn assert_error(&self, status: u16) -> &Self {
        if let Some(problem) = self.error_problem(status) {
            self.fail(&problem);
        }
        self
    }

    /// Why this is not a well-formed error response with `status`, if it is not.
    pub fn error_problem(&self, status: u16) -> Option<String> {
        if self.status != status {
            return Some(format!("expected status {status}, got {}", self.status));
        }
        let ctype = self.header("Content-Type").unwrap_or("");
        if status == 404 && ctype.starts_with("text/plain") {
            return (self.body != b"Not Found")
                .then(|| format!("a 404's text body should be `Not Found`, got {}", preview(&self.body)));
        }
        if !ctype.starts_with("application/json") {
            return Some(format!("expected Content-Type application/json, got {ctype:?}"));
        }
        let json: serde_json::Value = match serde_json::from_slice(&self.body) {
            Ok(json) => json,
            Err(e) => return Some(format!("error body is not JSON: {e}")),
        };
        let (Some(kind), Some(_)) = (json["error"].as_str(), json["message"].as_str()) else {
            return Some("error body lacks string `error` and `message` keys".to_string());
        };
        if status == 404 && kind != "not_found" {
            return Some(format!("a 404's error kind should be `not_found`, got {kind:?}"));
        }
        None
    }
}
