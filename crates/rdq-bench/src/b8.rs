//! B8: durable single puts over HTTP on loopback, 64 concurrent clients.
//!
//! The server runs in this process (same binary, its own runtime threads),
//! on a temporary SQLite file at the default sync level (each put answered
//! after its fsync). Its queue is paused, so the work measured is the put
//! alone. The load is bounded: 3 s (0.5 s with `--quick`) or 200,000 puts,
//! whichever comes first, and only on 127.0.0.1. The clients are plain
//! hyper HTTP/1.1 connections (a general client such as reqwest spent a
//! quarter of the shared CPU on itself, parsing URLs and pooling).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rdq_server::config::{Config, ExecutorConfig, QueueConfig};
use rdq_server::executor::http::HttpSpec;

use crate::report::Report;

const CLIENTS: usize = 64;
const MOST: usize = 200_000;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

async fn load(duration: Duration) -> (usize, Duration, Vec<Duration>) {
    let dir = std::env::temp_dir().join(format!("rdq-bench-b8-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let config = Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        db: dir.join("b8.db"),
        queues: vec![QueueConfig {
            name: "load".into(),
            width: 1,
            rate: None,
            timeout: None,
            warn_after: None,
            max_attempts: 3,
            backoff: rdq_store::Backoff::default(),
            retention: Duration::from_secs(3600),
            paused: true,
            executor: ExecutorConfig::Http(HttpSpec {
                url: "http://127.0.0.1:9/unused".into(),
                headers: Default::default(),
            }),
        }],
        ..Config::default()
    };
    let running = rdq_server::serve::start(config)
        .await
        .expect("server starts");
    let uri: hyper::Uri = format!("http://{}/api/v1/queues/load/jobs", running.addr)
        .parse()
        .expect("uri");
    let count = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (uri, count, addr) = (uri.clone(), count.clone(), running.addr);
            tokio::spawn(async move {
                // One keep-alive HTTP/1.1 connection per client, requests
                // built from a parsed URI: a lean generator, so that the two
                // cores it shares with the server go mostly to the server.
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                stream.set_nodelay(true).expect("nodelay");
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream))
                        .await
                        .expect("handshake");
                tokio::spawn(conn);
                let mut latencies = Vec::new();
                let mut i = 0u64;
                while Instant::now() < deadline && count.fetch_add(1, Ordering::Relaxed) < MOST {
                    let body = format!(r#"{{"args":{{"client":{c},"i":{i}}}}}"#);
                    let request = hyper::Request::post(uri.clone())
                        .header(hyper::header::HOST, "127.0.0.1")
                        .header(hyper::header::CONTENT_TYPE, "application/json")
                        .body(Full::new(Bytes::from(body)))
                        .expect("request");
                    let t0 = Instant::now();
                    sender.ready().await.expect("connection ready");
                    let resp = sender.send_request(request).await.expect("put sent");
                    assert_eq!(resp.status().as_u16(), 201, "put failed");
                    resp.into_body().collect().await.expect("reply read");
                    latencies.push(t0.elapsed());
                    i += 1;
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client task"));
    }
    let wall = start.elapsed();
    running.stop().await.expect("server stops");
    let _ = std::fs::remove_dir_all(&dir);
    (all.len(), wall, all)
}

pub(crate) fn run(quick: bool) -> Report {
    let duration = if quick {
        Duration::from_millis(500)
    } else {
        Duration::from_secs(3)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (n, wall, mut lat) = rt.block_on(load(duration));
    lat.sort();
    let rate = n as f64 / wall.as_secs_f64();
    let mut detail = serde_json::Map::new();
    detail.insert("clients".into(), CLIENTS.into());
    detail.insert("puts".into(), n.into());
    detail.insert(
        "p50_ms".into(),
        ((percentile(&lat, 0.5) * 1000.0).round() / 1000.0).into(),
    );
    detail.insert(
        "p99_ms".into(),
        ((percentile(&lat, 0.99) * 1000.0).round() / 1000.0).into(),
    );
    detail.insert(
        "sync".into(),
        "full (each put answered after the fsync of its commit)".into(),
    );
    detail.insert(
        "server".into(),
        "in process, loopback, keep-alive connections".into(),
    );
    Report {
        id: "B8",
        metric: "puts_per_s",
        value: rate.round(),
        baseline: None,
        ratio: None,
        target: ">= 20,000 durable puts/s with 64 clients".into(),
        pass: rate >= 20_000.0,
        detail,
    }
}
