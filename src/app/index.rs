//! `GET /`: the service's front page. A script or `helm test` gets a short text naming the
//! entry points; a browser (`Accept: text/html`) gets the root's browse page instead, which
//! lists files, so it asks for a token where tokens are set, like `/file/` does, and sends a
//! scoped token to its first directory.

use super::auth::{Access, Denial};
use super::error::Error;
use super::{App, files, wants_html};
use crate::http::{Head, Response, ResponseBody};
use crate::path::RelPath;

/// The `GET /` page: what this is and where its entry points are (the seed chart's `helm test`
/// fetches `/`).
const INDEX_PAGE: &str = "\
http-nas: shared storage for jobs over plain HTTP

GET    /file/{path}          download a file, or list a directory (one name per line)
HEAD   /file/{path}          a file's headers
POST   /file/{path}          upload: create or replace, atomically
PUT    /file/{path}          append (Upload-Offset: N to append only at size N)
PUT    /file/{path}/mv       move; body {\"path\": \"new/name\"}
DELETE /file/{path}          delete a file or a directory tree
GET    /file/{path}/wc       line count
GET    /file/{path}/check    stat as JSON
GET    /file                 OK while the storage is there
GET    /healthz  /readyz  /metrics
";

/// The front page: the text above, or for a browser the root's browse page.
pub(super) fn front_page(app: &App, head: &Head) -> Result<Response, Error> {
    if !wants_html(head) {
        return Ok(Response::text(200, INDEX_PAGE));
    }
    let authorization = head.header("authorization");
    let grant = app.tokens.check(authorization);
    match (grant.access, grant.home()) {
        (Access::Denied, _) => Err(Error::Unauthorized(Denial::of(authorization))),
        (_, Some(home)) => {
            Ok(Response::new(303, ResponseBody::Empty).with_header("Location", format!("/file/{home}/")))
        }
        _ => files::read(app, head, &RelPath::root(), grant),
    }
}
