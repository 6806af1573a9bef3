//! `worker-exit CODE [--message TEXT]`: writes TEXT to stderr, exits with CODE.
mod common;

fn main() {
    let args = common::args();
    let code = common::positional(&args, &["--message"])
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    if let Some(msg) = common::value::<String>(&args, "--message") {
        eprintln!("{msg}");
    }
    std::process::exit(code);
}
