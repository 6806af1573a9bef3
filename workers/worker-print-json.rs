//! Prints a JSON object to stdout (the result) and a log line to stderr.
//! `worker-print-json [--value N]` prints `{"value":N,"pid":PID}`.
mod common;

fn main() {
    let args = common::args();
    let value: i64 = common::value(&args, "--value").unwrap_or(42);
    eprintln!("computing value {value}");
    println!("{{\"value\":{value},\"pid\":{}}}", std::process::id());
}
