//! Many small requests on kept-alive connections: an idle worker waits on the parked
//! connections and serves the one that becomes readable itself (so a client's next request
//! skips the reactor), but an idle or slow kept-alive client must never keep a worker from a
//! request that waits for one, and every parked connection is served in its turn.

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

/// With one worker, the next head on a kept-alive connection arriving a few bytes at a time
/// (each piece a separate readiness event, taken by the worker waiting on the parked set or by
/// the reactor) is kept, piece by piece, and served once whole; meanwhile the head in progress
/// never holds the only worker: another client's requests between the pieces are answered.
#[test]
fn a_head_arriving_in_pieces_across_many_wakes_is_served_and_holds_no_worker() {
    const PIECE: usize = 3;
    let s = Server::start_prepared(
        |root| std::fs::write(root.join("small.txt"), b"small\n").unwrap(),
        &["--workers", "1", "--head-timeout", "60"],
    );
    let mut slow = s.connect();
    slow.send(b"GET /file/small.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    slow.response().assert_ok_body(b"small\n");
    let head = b"GET /file/small.txt HTTP/1.1\r\nHost: t\r\nX-Sent-In: pieces\r\n\r\n";
    let pieces: Vec<&[u8]> = head.chunks(PIECE).collect();
    for (i, piece) in pieces.iter().enumerate() {
        slow.send(piece);
        std::thread::sleep(std::time::Duration::from_millis(20));
        if i % 4 == 0 && i + 1 < pieces.len() {
            let mut other = s.connect();
            other.send(b"GET /file/small.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
            let resp = other.response();
            assert_eq!(resp.status, 200, "after piece {i}: {}", resp.text());
        }
    }
    slow.response().assert_ok_body(b"small\n");
    // Still kept alive, and served again.
    slow.send(b"GET /file/small.txt HTTP/1.1\r\nHost: t\r\n\r\n");
    slow.response().assert_ok_body(b"small\n");
}

/// Three hundred kept-alive connections on two workers, each asked in turn (one request at a
/// time, so every other connection is parked meanwhile), then all at once: every request is
/// answered 200 on its own connection, none refused or lost.
#[test]
fn three_hundred_kept_alive_connections_are_each_served_in_turn() {
    const CONNECTIONS: usize = 300;
    const ROUNDS: usize = 3;
    let s = Server::start_prepared(
        |root| std::fs::write(root.join("small.txt"), b"small\n").unwrap(),
        &["--workers", "2", "--queue", "400", "--max-connections", "400"],
    );
    let mut conns: Vec<_> = (0..CONNECTIONS).map(|_| s.connect()).collect();
    let request = b"GET /file/small.txt HTTP/1.1\r\nHost: t\r\n\r\n";
    for round in 0..ROUNDS {
        for (i, c) in conns.iter_mut().enumerate() {
            c.send(request);
            let resp = c.response();
            assert_eq!(resp.status, 200, "round {round}, connection {i}: {}", resp.text());
            resp.assert_ok_body(b"small\n");
        }
    }
    for c in conns.iter_mut() {
        c.send(request);
    }
    for (i, c) in conns.iter_mut().enumerate() {
        let resp = c.response();
        assert_eq!(resp.status, 200, "all at once, connection {i}: {}", resp.text());
        resp.assert_ok_body(b"small\n");
    }
}
