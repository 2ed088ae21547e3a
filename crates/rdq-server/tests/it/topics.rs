//! Topics and consumers on the real `rdq` binary: publish fans a message out
//! to every subscribed consumer's durable queue in one commit; kill -9 after
//! the answer loses nothing; full consumers reject, drop their oldest, or
//! block; the consumers view, the metrics, and the config errors.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};

use crate::e2e::{rdq, Server};
use crate::support::{Answer, Target};

/// `rdq.toml` with topics `orders.created`, `orders.paid`, `users.new`;
/// consumer `audit` (every `orders.*`) and consumer `billing`
/// (`orders.paid`), both posting to `target`; `billing` takes `extra`.
fn config(dir: &Path, target: &str, server: &str, billing: &str) -> PathBuf {
    let path = dir.join("rdq.toml");
    std::fs::write(
        &path,
        format!(
            r#"topics = ["orders.created", "orders.paid", "users.new"]

[server]
shutdown_grace = "2s"
{server}

[consumers.audit]
subscribe = ["orders.*"]
width = 2
max_attempts = 5
backoff_base = "50ms"
[consumers.audit.executor]
type = "http"
url = "{target}"

[consumers.billing]
subscribe = ["orders.paid"]
max_attempts = 5
backoff_base = "50ms"
{billing}
[consumers.billing.executor]
type = "http"
url = "{target}"
"#
        ),
    )
    .unwrap();
    path
}

/// A server on [`config`] in a fresh directory, posting to a fresh
/// target: the directory, the target, the config file and the server.
async fn start(server: &str, billing: &str) -> (tempfile::TempDir, Target, PathBuf, Server) {
    let dir = tempfile::tempdir().unwrap();
    let target = Target::start().await;
    let path = config(dir.path(), &target.url, server, billing);
    let s = Server::start(dir.path(), &path);
    (dir, target, path, s)
}

async fn publish(s: &Server, topic: &str, body: Value) -> (u16, Value) {
    s.call(
        "POST",
        &format!("/api/v1/topics/{topic}/messages"),
        Some(body),
    )
    .await
}

/// The job id each consumer got, by consumer name.
fn job_of(reply: &Value, consumer: &str) -> i64 {
    reply["delivered"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["consumer"] == consumer)
        .unwrap_or_else(|| panic!("{consumer} not delivered: {reply}"))["job"]
        .as_i64()
        .unwrap()
}

async fn consumer(s: &Server, name: &str) -> Value {
    let (status, c) = s
        .call("GET", &format!("/api/v1/consumers/{name}"), None)
        .await;
    assert_eq!(status, 200, "{c}");
    c
}

/// Polls `check` every 20 ms until it returns `Some`, for at most 20 s.
async fn within<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_reaches_both_subscribers_and_both_jobs_run() {
    let (_dir, target, _path, s) = start("", "").await;
    let (status, reply) = publish(
        &s,
        "orders.paid",
        json!({"message": {"order": 17, "total": 9.5}, "priority": 2}),
    )
    .await;
    assert_eq!(status, 201, "{reply}");
    assert_eq!(reply["rejected"], json!([]));
    assert_eq!(reply["delivered"].as_array().unwrap().len(), 2, "{reply}");
    for name in ["audit", "billing"] {
        let job = s.finished(job_of(&reply, name)).await;
        assert_eq!(job["state"], "succeeded", "{job}");
        assert_eq!(
            (&job["queue"], &job["kind"], job["priority"].as_i64()),
            (&json!(name), &json!("orders.paid"), Some(2))
        );
        assert_eq!(job["args"], json!({"order": 17, "total": 9.5}));
    }
    // The executor saw the topic as the kind, the message as the args.
    let seen = target.seen();
    assert_eq!(seen.len(), 2);
    for (doc, _) in seen {
        assert_eq!(doc["kind"], "orders.paid");
        assert_eq!(doc["args"]["order"], 17);
    }
    // A topic only `audit` subscribes to reaches only `audit`.
    let (status, reply) = publish(&s, "orders.created", json!({"message": "x"})).await;
    assert_eq!(status, 201, "{reply}");
    let names: Vec<&str> = reply["delivered"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["consumer"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit"]);
    // A declared topic nobody subscribes to: 200, delivered nowhere.
    let (status, reply) = publish(&s, "users.new", json!({"message": 1})).await;
    assert_eq!((status, &reply["delivered"]), (200, &json!([])), "{reply}");
    // The topics listing names the subscribers.
    let (_, topics) = s.call("GET", "/api/v1/topics", None).await;
    assert_eq!(
        topics["topics"][1],
        json!({"topic": "orders.paid", "subscribers": ["audit", "billing"]})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_the_answer_loses_neither_job() {
    let (dir, target, path, s) = start("", "").await;
    // Slow answers: the jobs are still waiting or underway at the kill.
    target.script((0..4).map(|_| Answer {
        delay: Duration::from_millis(300),
        ..Answer::status(200)
    }));
    let (status, reply) = publish(&s, "orders.paid", json!({"message": {"n": 1}})).await;
    assert_eq!(status, 201, "{reply}");
    s.signal(libc::SIGKILL);
    assert_eq!(s.exit(), None, "killed by a signal");
    let s = Server::start(dir.path(), &path);
    for name in ["audit", "billing"] {
        let job = s.finished(job_of(&reply, name)).await;
        assert_eq!(job["state"], "succeeded", "{name}: {job}");
    }
    // Each job reached the target at least once (at-least-once: a job
    // underway at the kill runs again).
    let seen = target.seen();
    for name in ["audit", "billing"] {
        assert!(
            seen.iter().any(|(doc, _)| doc["queue"] == name),
            "{name} never ran: {seen:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_publishes_answer_404_400_413_and_429_naming_the_full_consumer() {
    let (_dir, _target, _path, s) = start("max_body = \"1KiB\"", "paused = true\nbound = 1").await;

    let (status, err) = publish(&s, "orders.shipped", json!({"message": 1})).await;
    assert_eq!(status, 404, "{err}");
    assert_eq!(err["error"]["code"], "unknown_topic");
    let message = err["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("orders.created") && message.contains("users.new"),
        "{message}"
    );

    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/topics/orders.paid/messages", s.base))
        .header("content-type", "application/json")
        .body("{\"message\": ")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    let big = "x".repeat(4096);
    let (status, err) = publish(&s, "orders.paid", json!({"message": big})).await;
    assert_eq!(
        (status, &err["error"]["code"]),
        (413, &json!("payload_too_large"))
    );

    let (status, reply) = publish(&s, "orders.paid", json!({"message": 1})).await;
    assert_eq!(status, 201, "{reply}");
    let (status, reply) = publish(&s, "orders.paid", json!({"message": 2})).await;
    assert_eq!(status, 429, "{reply}");
    assert_eq!(reply["error"]["code"], "consumer_full");
    assert!(
        reply["error"]["message"]
            .as_str()
            .unwrap()
            .contains("billing"),
        "{reply}"
    );
    assert_eq!(
        reply["rejected"],
        json!([{"consumer": "billing", "reason": "full", "bound": 1, "waited_seconds": null}])
    );
    // audit still got it, and runs it.
    let job = s.finished(job_of(&reply, "audit")).await;
    assert_eq!(job["args"], 2);
    let billing = consumer(&s, "billing").await;
    assert_eq!(
        (billing["depth"].as_u64(), billing["rejected"].as_u64()),
        (Some(1), Some(1)),
        "{billing}"
    );
    // Nothing was written for billing: its one job is the first message.
    let (_, jobs) = s.call("GET", "/api/v1/jobs?queue=billing", None).await;
    assert_eq!(jobs["jobs"].as_array().unwrap().len(), 1, "{jobs}");
    assert_eq!(jobs["jobs"][0]["args"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_oldest_cancels_the_oldest_waiting_message_to_take_the_new_one() {
    let (_dir, _target, _path, s) =
        start("", "paused = true\nbound = 2\noverflow = \"drop_oldest\"").await;
    let mut ids = Vec::new();
    for n in 1..=3 {
        let (status, reply) = publish(&s, "orders.paid", json!({"message": n})).await;
        assert_eq!(status, 201, "{reply}");
        let dropped: &[Value] = if n == 3 { &[json!("billing")] } else { &[] };
        assert_eq!(reply["dropped"].as_array().unwrap(), dropped, "{reply}");
        ids.push(job_of(&reply, "billing"));
    }
    let (_, first) = s
        .call("GET", &format!("/api/v1/jobs/{}", ids[0]), None)
        .await;
    assert_eq!(first["state"], "cancelled", "{first}");
    for id in &ids[1..] {
        let (_, job) = s.call("GET", &format!("/api/v1/jobs/{id}"), None).await;
        assert_eq!(job["state"], "pending", "{job}");
    }
    let billing = consumer(&s, "billing").await;
    assert_eq!(
        (
            billing["depth"].as_u64(),
            billing["dropped"].as_u64(),
            billing["enqueued"].as_u64(),
            billing["rejected"].as_u64()
        ),
        (Some(2), Some(1), Some(3), Some(0)),
        "{billing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_times_out_into_a_rejection_and_succeeds_when_room_appears() {
    let (dir, target, _path, s) = start(
        "",
        "paused = true\nbound = 1\noverflow = \"block\"\nblock_timeout = \"300ms\"",
    )
    .await;
    let (status, _) = publish(&s, "orders.paid", json!({"message": 1})).await;
    assert_eq!(status, 201);
    // Full and paused: the publish waits its 300 ms, then billing is rejected.
    let (status, reply) = publish(&s, "orders.paid", json!({"message": 2})).await;
    assert_eq!(status, 429, "{reply}");
    assert_eq!(reply["rejected"][0]["consumer"], "billing");
    let waited = reply["rejected"][0]["waited_seconds"].as_f64().unwrap();
    assert!(waited >= 0.3, "{reply}");
    job_of(&reply, "audit");

    // Now a blocked publish, and room made while it waits: it gets in.
    let path = config(
        dir.path(),
        &target.url,
        "",
        "paused = true\nbound = 1\noverflow = \"block\"\nblock_timeout = \"20s\"",
    );
    s.signal(libc::SIGTERM);
    assert_eq!(s.exit(), Some(0));
    let s = std::sync::Arc::new(Server::start(dir.path(), &path));
    let publisher = {
        let s = s.clone();
        tokio::spawn(async move { publish(&s, "orders.paid", json!({"message": 3})).await })
    };
    within("the publish to wait for room", || async {
        (consumer(&s, "billing").await["blocked_publishers"] == 1).then_some(())
    })
    .await;
    let (status, patched) = s
        .call(
            "PATCH",
            "/api/v1/queues/billing",
            Some(json!({"paused": false})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    let (status, reply) = publisher.await.unwrap();
    assert_eq!(status, 201, "{reply}");
    let job = s.finished(job_of(&reply, "billing")).await;
    assert_eq!(
        (&job["state"], &job["args"]),
        (&json!("succeeded"), &json!(3))
    );
    assert_eq!(consumer(&s, "billing").await["blocked_publishers"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumers_view_and_the_metrics_show_the_backlog() {
    let (_dir, _target, _path, s) = start("", "paused = true\nstatus_window = \"2s\"").await;
    for n in 0..3 {
        let (status, reply) = publish(&s, "orders.paid", json!({"message": n})).await;
        assert_eq!(status, 201, "{reply}");
        let audit_job = job_of(&reply, "audit");
        s.finished(audit_job).await;
    }
    let (status, list) = s.call("GET", "/api/v1/consumers", None).await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["audit", "billing"]);
    // billing is paused with 3 waiting: it is not catching up, and after
    // two samples with depth and nothing running or finishing, it is STOP.
    let billing = within("billing to be reported stopped", || async {
        let c = consumer(&s, "billing").await;
        (c["status"] == "stop").then_some(c)
    })
    .await;
    assert_eq!(
        (
            billing["depth"].as_u64(),
            billing["in_flight"].as_u64(),
            billing["paused"].as_bool(),
            billing["bound"].as_u64(),
            billing["overflow"].as_str()
        ),
        (
            Some(3),
            Some(0),
            Some(true),
            Some(10_000),
            Some("reject_newest")
        ),
        "{billing}"
    );
    assert!(billing["oldest_pending_age_seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(billing["catch_up_seconds"], Value::Null, "{billing}");
    assert_eq!(billing["subscribe"], json!(["orders.paid"]));
    assert!(billing["current_episode"]["peak_depth"].as_u64() >= Some(1));
    // audit drained everything: depth 0, catch-up 0, three processed.
    let audit = within("audit's attempts to be counted", || async {
        let c = consumer(&s, "audit").await;
        (c["processed"]["ok"] == 3).then_some(c)
    })
    .await;
    assert_eq!(
        (audit["depth"].as_u64(), audit["catch_up_seconds"].as_f64()),
        (Some(0), Some(0.0)),
        "{audit}"
    );
    assert!(audit["mean_processing_seconds"].as_f64().unwrap() > 0.0);
    assert!(audit["arrival_rate"].as_f64().unwrap() > 0.0);

    let (status, unknown) = s.call("GET", "/api/v1/consumers/nobody", None).await;
    assert_eq!(status, 404);
    assert_eq!(unknown["error"]["code"], "unknown_consumer");

    let text = reqwest::get(format!("{}/metrics", s.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        "rdq_consumer_depth{consumer=\"billing\"} 3\n",
        "rdq_consumer_in_flight{consumer=\"billing\"} 0\n",
        "rdq_consumer_width{consumer=\"billing\"} 1\n",
        "rdq_consumer_oldest_pending_age_seconds{consumer=\"billing\"}",
        "rdq_consumer_catch_up_seconds{consumer=\"billing\"} +Inf\n",
        "rdq_consumer_catch_up_seconds{consumer=\"audit\"} 0\n",
        "rdq_consumer_arrival_rate{consumer=\"audit\"}",
        "rdq_consumer_status{consumer=\"billing\",status=\"stop\"} 1\n",
        "rdq_consumer_status{consumer=\"billing\",status=\"ok\"} 0\n",
        "rdq_consumer_enqueued_total{consumer=\"audit\"} 3\n",
        "rdq_consumer_processed_total{consumer=\"audit\",outcome=\"ok\"} 3\n",
        "rdq_consumer_rejected_total{consumer=\"billing\"} 0\n",
        "rdq_consumer_dropped_total{consumer=\"billing\"} 0\n",
        "rdq_backlog_episode_seconds_bucket{consumer=\"audit\",le=\"+Inf\"}",
        "rdq_consumer_wait_seconds_count{consumer=\"audit\"} 3\n",
        "rdq_consumer_processing_seconds_sum{consumer=\"audit\"}",
        "# HELP rdq_consumer_depth ",
        "# TYPE rdq_consumer_enqueued counter",
        "# TYPE rdq_backlog_episode_seconds histogram",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(text.trim_end().ends_with("# EOF"), "{text}");
}

#[test]
fn config_errors_exit_2_with_the_line_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let exec = "[consumers.c.executor]\ntype = \"http\"\nurl = \"http://127.0.0.1:9/\"\n";
    let topics = "topics = [\"orders.paid\", \"users.new\"]\n";
    let cases = [
        (format!("{topics}[consumers.c]\nsubscribe = [\"orders.*.x\"]\n{exec}"), 3, "trailing \".*\""),
        (format!("{topics}[consumers.c]\nwidth = 2\n{exec}"), 2, "subscribes to nothing"),
        (format!("{topics}[consumers.c]\nsubscribe = [\"users.new\"]\n{exec}[consumers.c]\nwidth = 1\n"), 7, "duplicate key"),
        (format!("{topics}[queues.c]\n[queues.c.executor]\ntype = \"http\"\nurl = \"http://x\"\n[consumers.c]\nsubscribe = [\"users.new\"]\n{exec}"), 6, "a queue is named \"c\" too"),
        (format!("{topics}[consumers.c]\nsubscribe = [\"users.new\"]\nbound = 0\n{exec}"), 4, "a bound of 0"),
        (format!("{topics}[consumers.c]\nsubscribe = [\"user.*\"]\n{exec}"), 3, "matches no declared topic"),
        (format!("{topics}[consumers.c]\nsubscribe = [\"users.new\"]\nblock_timeout = \"1s\"\n{exec}"), 4, "set overflow = \"block\""),
    ];
    let db = dir.path().join("x.db");
    for (i, (text, line, words)) in cases.iter().enumerate() {
        let file = dir.path().join(format!("bad{i}.toml"));
        std::fs::write(&file, text).unwrap();
        let (code, err) = rdq(
            &[
                "serve",
                "--config",
                file.to_str().unwrap(),
                "--db",
                db.to_str().unwrap(),
            ],
            &[],
        );
        assert_eq!(code, Some(2), "{text}: {err}");
        assert!(
            err.contains(&format!("bad{i}.toml:{line}:")) && err.contains(words),
            "{text}: {err}"
        );
    }
}

/// `rdq publish` and `rdq consumers`, against the real server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_publishes_and_shows_the_consumers() {
    let (_dir, _target, _path, s) = start("", "paused = true\nbound = 1").await;
    let cli = |args: &'static [&'static str]| {
        let base = s.base.clone();
        tokio::task::spawn_blocking(move || crate::cli::rdq_with(&base, args))
    };
    let run = cli(&[
        "publish",
        "orders.paid",
        "{\"order\": 1}",
        "--priority",
        "-1",
    ])
    .await
    .unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stdout.contains("CONSUMER")
            && run.stdout.contains("billing")
            && run.stdout.contains("delivered"),
        "{run:?}"
    );
    // billing is full now: the second publish names it and exits 1.
    let run = cli(&["publish", "orders.paid", "2"]).await.unwrap();
    assert!(run.stdout.contains("rejected: full (bound 1)"), "{run:?}");
    run.failed(1, "billing (bound 1)");
    let run = cli(&["publish", "orders.paid", "not json"]).await.unwrap();
    run.failed(2, "the message is not JSON");
    let run = cli(&["publish", "nope", "1"]).await.unwrap();
    run.failed(1, "the declared topics are");

    let run = cli(&["consumers"]).await.unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    for column in [
        "NAME",
        "DEPTH",
        "RUNNING/WIDTH",
        "OLDEST",
        "CATCH-UP",
        "STATUS",
    ] {
        assert!(lines[0].contains(column), "{run:?}");
    }
    let billing = lines.iter().find(|l| l.starts_with("billing")).unwrap();
    assert!(
        billing.contains("0/1 paused") && billing.contains("never"),
        "{run:?}"
    );
    let run = cli(&["consumers", "billing", "--json"]).await.unwrap();
    assert_eq!(run.code, 0, "{run:?}");
    let view: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(
        (view["depth"].as_u64(), view["rejected"].as_u64()),
        (Some(1), Some(1))
    );
    let run = cli(&["consumers", "nobody"]).await.unwrap();
    run.failed(1, "no consumer named \"nobody\"");
}

/// `rdq consumers --watch` draws the table again every second until it is
/// interrupted, then exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_watch_redraws_until_interrupted() {
    use std::io::{BufRead as _, BufReader};
    let (_dir, _target, _path, s) = start("", "").await;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_rdq"))
        .args(["consumers", "--watch", "--server", &s.base])
        .env_remove("RDQ_TOKEN")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let headers = tokio::task::spawn_blocking(move || {
        let mut lines = BufReader::new(stdout).lines();
        let mut headers = 0;
        while headers < 2 {
            let line = lines.next().expect("more output").unwrap();
            headers += usize::from(line.starts_with("NAME"));
        }
        headers
    });
    let headers = tokio::time::timeout(Duration::from_secs(20), headers)
        .await
        .expect("two tables within 20 s")
        .unwrap();
    assert_eq!(headers, 2);
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
