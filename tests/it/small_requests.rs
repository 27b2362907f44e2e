//! Many small requests on kept-alive connections: a worker may keep a connection for a moment
//! after answering (so a client's next request skips the reactor), but an idle kept-alive
//! client must never keep a worker from a request that waits for one.

use crate::support::Server;

/// With one worker, a kept-alive client that goes quiet after each answer never keeps another
/// client's request from that worker: each other request is answered 200 (a worker that kept
/// the idle connection until its idle timeout would leave them queued past the queue timeout,
/// then answered 503).
#[test]
fn an_idle_kept_alive_connection_never_keeps_the_only_worker_from_another_request() {
    const ROUNDS: usize = 20;
    let s = Server::start_prepared(
        |root| std::fs::write(root.join("small.txt"), b"small\n").unwrap(),
        &["--workers", "1", "--queue-timeout", "2", "--idle-timeout", "60"],
    );
    let mut kept = s.connect();
    for round in 0..ROUNDS {
        kept.send(b"GET /file/small.txt HTTP/1.1\r\nHost: t\r\n\r\n");
        kept.response().assert_ok_body(b"small\n");
        // The kept connection is now idle and open; another client asks at once.
        let mut other = s.connect();
        other.send(b"GET /file/small.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        let resp = other.response();
        assert_eq!(resp.status, 200, "round {round}: {}", resp.text());
    }
    kept.send(b"GET /file/small.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    kept.response().assert_ok_body(b"small\n");
}

/// With one worker and a queue of one, two clients each sending its next request as soon as
/// its last is answered never have more requests in flight than the worker and the queue
/// hold, so none is refused: a worker that is only waiting for its connection's next request,
/// or has just handed the connection back, counts as free. Before, a request that came on a
/// connection the worker had just handed back (or was lingering on) could find it still
/// counted busy and the queue full, and got 503.
#[test]
fn kept_alive_clients_no_more_than_workers_and_queue_are_never_refused() {
    const CLIENTS: usize = 2;
    const REQUESTS: usize = 400;
    let s = Server::start_prepared(
        |root| std::fs::write(root.join("small.txt"), b"small\n").unwrap(),
        &["--workers", "1", "--queue", "1"],
    );
    let statuses: Vec<Vec<u16>> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                scope.spawn(|| {
                    let mut conn = s.connect();
                    let mut refused = Vec::new();
                    for _ in 0..REQUESTS {
                        conn.send(b"GET /file/small.txt HTTP/1.1\r\nHost: t\r\n\r\n");
                        let resp = conn.response();
                        if resp.status != 200 {
                            refused.push(resp.status);
                            // A refusal closes the connection: carry on on a new one.
                            conn = s.connect();
                        }
                    }
                    refused
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("a client thread"))
            .collect()
    });
    let refused: Vec<u16> = statuses.into_iter().flatten().collect();
    assert!(
        refused.is_empty(),
        "refused {} of {} requests: {refused:?}",
        refused.len(),
        CLIENTS * REQUESTS
    );
}
