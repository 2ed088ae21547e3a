//! B8: durable single puts over HTTP on loopback, 64 concurrent clients.
//!
//! The server runs in this process but on its own Tokio runtime, on a thread
//! of its own, as `rdq serve` runs it (a default multi-thread runtime); the
//! clients run on the bench's runtime. Each round starts a fresh server on
//! a new SQLite file (on disk: see [`crate::disk`]) at the default sync
//! level, so each put is answered after the fsync of its commit. Its queue
//! is paused, so the work measured is the put alone. A round is bounded: 3 s
//! (0.5 s with `--quick`) or 200,000 puts, whichever comes first, and only
//! on 127.0.0.1. Five rounds (two with `--quick`); `value` is the median,
//! the range is in `detail`. The clients are plain hyper HTTP/1.1
//! connections (a general client such as reqwest spent a quarter of the
//! shared CPU on itself, parsing URLs and pooling).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use rdq_server::config::{Config, ExecutorConfig, QueueConfig};
use rdq_server::executor::http::HttpSpec;

use crate::disk::{fs_type, BenchDir};
use crate::report::{median_with_range, Report};

const CLIENTS: usize = 64;
const MOST: usize = 200_000;

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// A server on a runtime of its own, on its own thread.
struct Server {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(config: Config) -> Server {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Runtime::new().expect("server runtime");
            rt.block_on(async move {
                let running = rdq_server::serve::start(config)
                    .await
                    .expect("server starts");
                addr_tx.send(running.addr).expect("bench waits");
                let _ = stop_rx.await;
                running.stop().await.expect("server stops");
            });
        });
        let addr = addr_rx.recv().expect("server started");
        Server {
            addr,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            thread.join().expect("server thread");
        }
    }
}

fn config(dir: &BenchDir) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().expect("address"),
        db: dir.db(),
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
    }
}

/// One round against a server at `addr`: puts, wall time, latencies.
async fn load(addr: std::net::SocketAddr, duration: Duration) -> (usize, Duration, Vec<Duration>) {
    let uri: hyper::Uri = format!("http://{addr}/api/v1/queues/load/jobs")
        .parse()
        .expect("uri");
    let count = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let (uri, count) = (uri.clone(), count.clone());
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
    (all.len(), wall, all)
}

pub(crate) fn run(quick: bool) -> Result<Report, String> {
    let (duration, rounds) = if quick {
        (Duration::from_millis(500), 2)
    } else {
        (Duration::from_secs(3), 5)
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rates = Vec::new();
    let mut lat = Vec::new();
    let mut puts = 0;
    let mut fs = String::new();
    for round in 0..rounds {
        let dir = BenchDir::new(&format!("b8-{round}"))?;
        fs = fs_type(dir.path());
        let server = Server::start(config(&dir));
        let (n, wall, l) = rt.block_on(load(server.addr, duration));
        server.stop();
        rates.push(n as f64 / wall.as_secs_f64());
        lat.extend(l);
        puts += n;
    }
    lat.sort();
    let mut detail = serde_json::Map::new();
    let rate = median_with_range(&mut rates, "range_puts_per_s", &mut detail);
    detail.insert("clients".into(), CLIENTS.into());
    detail.insert("rounds".into(), rounds.into());
    detail.insert("round_s".into(), duration.as_secs_f64().into());
    detail.insert("puts".into(), puts.into());
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
        "full (each put answered after the fdatasync of its commit)".into(),
    );
    detail.insert("fs".into(), fs.into());
    detail.insert(
        "server".into(),
        "in process on its own runtime and thread, loopback, keep-alive connections".into(),
    );
    Ok(Report {
        id: "B8",
        metric: "puts_per_s",
        value: rate.round(),
        baseline: None,
        ratio: None,
        target: ">= 20,000 durable puts/s with 64 clients (value: median of rounds)".into(),
        pass: Some(rate >= 20_000.0),
        detail,
    })
}
