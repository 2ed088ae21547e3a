//! What leaves the server on the wire when the request is too broken for the
//! router to see it (hyper's own answers), or too large: still the API's JSON
//! error shape, with its status.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;

use crate::support::TestServer;

/// Serves the router on a loopback port the way `rdq serve` does.
async fn listen(s: &TestServer) -> std::net::SocketAddr {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = tcp.local_addr().unwrap();
    let router = s.router.clone();
    tokio::spawn(async move {
        axum::serve(rdq_server::api::JsonErrorListener::new(tcp), router)
            .await
            .unwrap()
    });
    addr
}

/// Sends `head` then `body` (on a blocking thread, with a deadline) and
/// reads the answer until the server closes; its status and JSON body.
async fn exchange(addr: std::net::SocketAddr, head: Vec<u8>, body: Vec<u8>) -> (u16, Value) {
    let raw = tokio::task::spawn_blocking(move || {
        let mut tcp = TcpStream::connect(addr).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        tcp.set_write_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        tcp.write_all(&head).unwrap();
        tcp.write_all(&body)
            .expect("the server reads the whole body");
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).expect("an answer");
        answer
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{text:?}"
    );
    let value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {text:?}"));
    (status, value)
}

#[tokio::test]
async fn protocol_errors_are_json() {
    let s = TestServer::start(|_| {}).await;
    let addr = listen(&s).await;
    let long_uri = format!(
        "GET /api/v1/queues/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    let many_headers = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\n{}\r\n",
        (0..120)
            .map(|i| format!("X-{i}: 1\r\n"))
            .collect::<String>()
    );
    for (request, status, code) in [
        (long_uri, 414, "uri_too_long"),
        (many_headers, 431, "headers_too_large"),
        (
            "G@T / HTTP/1.1\r\nHost: x\r\n\r\n".to_owned(),
            400,
            "bad_request",
        ),
    ] {
        let (got, body) = tokio::time::timeout(
            Duration::from_secs(20),
            exchange(addr, request.into_bytes(), Vec::new()),
        )
        .await
        .expect("answered in time");
        assert_eq!(
            (got, body["error"]["code"].as_str()),
            (status, Some(code)),
            "{body}"
        );
    }
}

#[tokio::test]
async fn an_oversize_body_is_read_and_answered_413() {
    // The test server's max_body is 64 KiB: send 8 MiB, which a socket
    // buffer cannot absorb if the server stops reading.
    let s = TestServer::start(|_| {}).await;
    let addr = listen(&s).await;
    let body = format!(r#"{{"args": "{}"}}"#, "x".repeat(8 << 20)).into_bytes();
    let head = format!(
        "POST /api/v1/queues/sms/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let (status, reply) = tokio::time::timeout(
        Duration::from_secs(20),
        exchange(addr, head.into_bytes(), body),
    )
    .await
    .expect("answered in time");
    assert_eq!(status, 413, "{reply}");
    assert_eq!(reply["error"]["code"], "payload_too_large");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(message.contains("65536"), "names the limit: {message}");
    assert_eq!(s.counts().await["pending"], 0);
}
