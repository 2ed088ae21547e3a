//! The rdq benchmark binary (DESIGN.md §9).
//!
//! `cargo run --release -p rdq-bench -- [IDS...] [--quick]` runs each scenario
//! and prints one JSON object per line.

mod alloc;
mod b1;
mod b2;
mod b3;
mod b4;
mod b6;
mod b8;
mod report;

use std::process::ExitCode;

#[global_allocator]
static ALLOC: alloc::Counting = alloc::Counting;

fn main() -> ExitCode {
    let mut quick = false;
    let mut ids = Vec::new();
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--quick" => quick = true,
            "-h" | "--help" => {
                println!("usage: rdq-bench [B1 B2 B3 ...] [--quick]");
                return ExitCode::SUCCESS;
            }
            id if id.starts_with('B') => ids.push(id.to_owned()),
            other => {
                eprintln!("rdq-bench: unknown argument {other:?}; expected scenario ids like B1 or --quick");
                return ExitCode::from(2);
            }
        }
    }
    if ids.is_empty() {
        ids = ["B1", "B2", "B3", "B4", "B6", "B8"]
            .map(String::from)
            .to_vec();
    }
    for id in ids {
        match id.as_str() {
            "B1" => b1::run(quick).print(),
            "B2" => b2::run(quick).print(),
            "B3" => b3::run(quick).print(),
            "B4" => b4::run(quick).print(),
            "B6" => b6::run(quick).print(),
            "B8" => b8::run(quick).print(),
            other => {
                eprintln!("rdq-bench: no scenario {other}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}
