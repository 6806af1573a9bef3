//! `tom-ledger serve`: the ledger directory over HTTP until SIGINT, SIGTERM or SIGHUP.
//! Everything but parsing and printing is the library's (`tom_dist_ledger::server`).

use std::net::SocketAddr;
use std::sync::Arc;

use tom_dist_ledger::server::{self, Auth, ServeOptions, auth};
use tom_dist_ledger::store::FileStore;

use super::Context;
use super::args::ServeArgs;
use super::exit::{CliResult, Exit, Failure};
use super::signals::Signals;

pub async fn serve(ctx: &Context, args: ServeArgs) -> CliResult {
    let bind = SocketAddr::new(args.bind, args.port);
    let mut signals = Signals::install()?;
    let store = FileStore::open(&ctx.ledger_dir, ctx.store_options.clone())?;
    if ctx.remote.is_some() {
        return Err(Failure::usage(
            "serve serves a ledger directory (`--ledger DIR`), not another server",
        ));
    }
    let (auth, token_note) = if args.no_auth {
        if ctx.token_file.is_some() {
            return Err(Failure::usage(
                "--no-auth and --token-file exclude each other",
            ));
        }
        auth::check_open_bind(args.bind)?;
        (Auth::Open, "no token (--no-auth)".to_string())
    } else if let Some(file) = &ctx.token_file {
        let token = auth::read_token(file)?;
        (
            Auth::Token(token.into()),
            format!("token from {}", file.display()),
        )
    } else {
        let path = auth::token_path(&ctx.ledger_dir);
        let token = auth::write_token(&path)?;
        (
            Auth::Token(token.into()),
            format!("token in {}", path.display()),
        )
    };
    let mut options = ServeOptions::new(bind, auth);
    options.ledger_dir = Some(ctx.ledger_dir.clone());
    let running = server::start(Arc::new(store), options).await?;
    let url = running.url();
    if ctx.json {
        let event = serde_json::json!({
            "event": "listening",
            "url": url,
            "ledger": ctx.ledger_dir.display().to_string(),
            "auth": token_note,
        });
        println!("{event}");
    } else {
        println!(
            "serving {} on {url} ({token_note})",
            ctx.ledger_dir.display()
        );
    }
    let signal = signals.next_stop().await;
    running.shutdown().await;
    Ok(Exit::Signal(signal))
}
