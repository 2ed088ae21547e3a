//! The rdq benchmark binary (DESIGN.md §9).
//!
//! `cargo run --release -p rdq-bench -- [IDS...] [--quick] [--markdown]`
//! runs each scenario and prints one JSON object per line. With
//! `--markdown`, the JSON lines go to stderr as each scenario ends, and
//! stdout gets only the Markdown table that the README's Benchmarks section
//! is made of (see `scripts/bench-table`).

mod alloc;
mod b1;
mod b2;
mod b3;
mod b6;
mod b7;
mod b8;
mod disk;
mod durable;
mod pg;
mod report;

use std::process::ExitCode;

use report::Report;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

/// Every scenario, in the order a full run takes them.
const ALL: [&str; 16] = [
    "B1",
    "B2",
    "B3",
    "B4",
    "W1-single",
    "W1-bulk",
    "W1-process",
    "W2",
    "B5",
    "W1-pg-single",
    "W1-pg-bulk",
    "W1-pg-process",
    "W2-pg",
    "B6",
    "B7",
    "B8",
];

fn run(id: &str, quick: bool) -> Result<Report, String> {
    match id {
        "B1" => Ok(b1::run(quick)),
        "B2" => Ok(b2::run(quick)),
        "B3" => b3::run(quick),
        "B4" => durable::b4(quick),
        "W1-single" => durable::w1_single(quick),
        "W1-bulk" => durable::w1_bulk(quick),
        "W1-process" => durable::w1_process(quick),
        "W2" => durable::w2(quick),
        "B5" => pg::b5(quick),
        "W1-pg-single" => pg::w1_single(quick),
        "W1-pg-bulk" => pg::w1_bulk(quick),
        "W1-pg-process" => pg::w1_process(quick),
        "W2-pg" => pg::w2(quick),
        "B6" => Ok(b6::run(quick)),
        "B7" => Ok(b7::run(quick)),
        "B8" => b8::run(quick),
        other => Err(format!("no scenario {other}")),
    }
}

/// One line about the machine: cores and load when the run began.
fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    format!("{cores} cores, load average {load} at the start")
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let [flag, n] = args.as_slice() {
        if flag == "--b3-child" {
            let Ok(n) = n.parse() else {
                eprintln!("rdq-bench: --b3-child takes a number of jobs, not {n:?}");
                return ExitCode::from(2);
            };
            b3::child_main(n);
            return ExitCode::SUCCESS;
        }
    }
    if let [flag, url, schema, node] = args.as_slice() {
        if flag == "--b5-node" {
            return match pg::node_main(url, schema, node) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("rdq-bench --b5-node {node}: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    let mut quick = false;
    let mut markdown = false;
    let mut ids = Vec::new();
    for arg in args {
        match arg.as_str() {
            "--quick" => quick = true,
            "--markdown" => markdown = true,
            "-h" | "--help" => {
                println!(
                    "usage: rdq-bench [{}] [--quick] [--markdown]",
                    ALL.join(" ")
                );
                return ExitCode::SUCCESS;
            }
            id if ALL.contains(&id) => ids.push(id.to_owned()),
            other => {
                eprintln!(
                    "rdq-bench: unknown argument {other:?}; expected scenario ids ({}), --quick or --markdown",
                    ALL.join(", ")
                );
                return ExitCode::from(2);
            }
        }
    }
    if ids.is_empty() {
        ids = ALL.map(String::from).to_vec();
    }
    let machine = machine();
    let started = std::time::Instant::now();
    let mut reports = Vec::new();
    for id in &ids {
        match run(id, quick) {
            Ok(report) => {
                if markdown {
                    eprintln!("{}", report.json());
                } else {
                    println!("{}", report.json());
                }
                reports.push(report);
            }
            Err(e) => {
                eprintln!("rdq-bench: {id}: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if markdown {
        let command = format!(
            "`cargo run --release -p rdq-bench --{}{} --markdown`",
            if ids.len() == ALL.len() {
                String::new()
            } else {
                format!(" {}", ids.join(" "))
            },
            if quick { " --quick" } else { "" }
        );
        print!(
            "{}",
            report::markdown(
                &reports,
                &[format!(
                    "Made by {command} in {:.0} s; {machine}.",
                    started.elapsed().as_secs_f64()
                )]
            )
        );
    }
    ExitCode::SUCCESS
}
