//! The stall watchdog, as a user meets it: a small report-making service
//! where one job, by mistake, calls blocking code on the async runtime.
//!
//! ```text
//! cargo run --release -p rdq --features watchdog --example stall
//! ```
//!
//! The queue `reports` makes six reports, three at a time. Five of them fetch
//! their data with `.await` (a timer stands in for the network): the runtime
//! thread is free while they wait. The sixth, for customer "acme", renders
//! its PDF with a blocking library call (`std::thread::sleep` stands in for
//! it) and holds a runtime thread for 1.2 s: every other task scheduled on
//! that thread waits too.
//!
//! The watchdog (threshold 500 ms, tick 100 ms) reports that poll while it
//! still runs: the job id and queue, the blocking call, the first function of
//! this program on the stack (`stall::render_pdf_blocking`), the cause
//! (`blocked in clock_nanosleep`) and the whole stack; then its final
//! duration when it ends. Meanwhile the program prints the watchdog's dump
//! (what every running job is doing), and at the end the culprit table.

use std::time::{Duration, Instant};

use rdq::DispatchQueue;
use rdq_watchdog::{StallEvent, Watchdog};

/// One report to make.
#[derive(Clone, Debug)]
struct Report {
    customer: &'static str,
    /// How long fetching its data takes.
    fetch: Duration,
}

/// The job: fetch, then render.
async fn make_report(report: Report) -> Result<usize, String> {
    // Waiting the async way: the thread is free meanwhile.
    tokio::time::sleep(report.fetch).await;
    let pages = if report.customer == "acme" {
        render_pdf_blocking(report.customer)
    } else {
        report.customer.len()
    };
    Ok(pages)
}

/// The mistake: a blocking call inside an async job.
#[inline(never)]
fn render_pdf_blocking(customer: &str) -> usize {
    std::thread::sleep(Duration::from_millis(1200));
    std::hint::black_box(customer.len() * 3)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let t0 = Instant::now();
    let watchdog = Watchdog::builder()
        .threshold(Duration::from_millis(500))
        .tick(Duration::from_millis(100))
        .on_stall(move |event| match event {
            StallEvent::Detected(stall) => println!(
                "[{:4.2}s] stall {} detected: job {} of {} has held its thread for {:?} ({})",
                t0.elapsed().as_secs_f64(),
                stall.seq,
                stall.job,
                stall.label.as_deref().unwrap_or("-"),
                stall.duration,
                stall.kind
            ),
            StallEvent::Reported(stall) => {
                println!(
                    "[{:4.2}s] the watchdog reports:\n{stall}",
                    t0.elapsed().as_secs_f64()
                );
            }
            StallEvent::Ended(stall) => println!(
                "[{:4.2}s] stall {} ended: job {} held its thread for {:?} in all\n",
                t0.elapsed().as_secs_f64(),
                stall.seq,
                stall.job,
                stall.duration
            ),
        })
        .start()?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    // What every running job is doing, while the stall goes on: asked from
    // a plain thread, as an operator's request would be; the runtime's own
    // timers are late while one of its threads is blocked.
    let dumper = {
        let watchdog = watchdog.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(900));
            let mut text = format!(
                "[{:4.2}s] the dump (every watched job now):\n",
                t0.elapsed().as_secs_f64()
            );
            for task in watchdog.dump() {
                let now = match (task.in_poll, task.idle) {
                    (Some(d), _) => format!("inside a poll for {d:?} (holding its thread)"),
                    (None, Some(d)) => format!("waiting for a wake-up for {d:?}"),
                    (None, None) => "idle".to_owned(),
                };
                text += &format!(
                    "  job {} of {}: running for {:?}, {} polls, last poll {:?}; {now}\n",
                    task.id,
                    task.label.as_deref().unwrap_or("-"),
                    task.age,
                    task.polls,
                    task.last_poll
                );
            }
            println!("{text}");
        })
    };
    runtime.block_on(async {
        let queue: DispatchQueue<Report, usize, String> = DispatchQueue::builder(make_report)
            .name("reports")
            .width(3)
            .build();
        let customers = ["globex", "initech", "acme", "umbrella", "hooli", "stark"];
        let handles: Vec<_> = customers
            .iter()
            .enumerate()
            .map(|(i, customer)| {
                let report = Report {
                    customer,
                    fetch: Duration::from_millis(200 + 150 * i as u64),
                };
                queue.put(report, 0).map(|h| (*customer, h))
            })
            .collect::<Result<_, _>>()
            .map_err(|e| e.to_string())?;

        for (customer, handle) in handles {
            let job = handle.await;
            println!(
                "[{:4.2}s] report for {customer:<9} job {}: {:?} after running {:?}",
                t0.elapsed().as_secs_f64(),
                job.id,
                job.outcome,
                job.run_time().unwrap_or_default()
            );
        }
        Ok::<(), String>(())
    })?;

    dumper.join().map_err(|_| "the dump thread panicked")?;
    // Give the monitor a tick to record the end of the last stall.
    std::thread::sleep(Duration::from_millis(250));
    println!("\nculprits (stalls per function):");
    for c in watchdog.culprits() {
        println!(
            "  {}: {} stall(s), {:?} in all, longest {:?}",
            c.culprit, c.count, c.total, c.max
        );
    }
    Ok(())
}
