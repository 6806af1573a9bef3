//! A supervised multi-process run on the embedded file ledger, through the library.
//!
//! Creates an operation in `./_ai/operation_ledger`, runs four worker processes as
//! spawned calls, registers a temp file, waits for all of them, prints what the ledger
//! recorded and completes the operation (which archives it to `backup/`).
//!
//! ```text
//! cargo run --example quickstart
//! ```

use std::time::Duration;

use tom_dist_ledger::ledger::{
    CallOptions, Connect, Ledger, OperationOptions, SyncOptions, TrackedCall,
};
use tom_dist_ledger::{CleanupHandler, Error, ParticipantId};

#[tokio::main]
async fn main() -> Result<(), Error> {
    // Opt in to the signal cleanup: Ctrl+C stops the workers, deletes the temp file,
    // archives the operation as failed and exits with 130. Without it the library
    // leaves signals alone.
    CleanupHandler::global().install()?;
    let ledger = Ledger::connect(
        Connect::local("_ai/operation_ledger").participant(ParticipantId::parse("quickstart")?),
    )
    .await?;
    let op = ledger
        .create_operation(OperationOptions::new().description("quickstart: four workers"))
        .await?;
    println!("operation {}", op.operation_id());

    let scratch = std::env::temp_dir().join(format!("quickstart-{}.tmp", std::process::id()));
    std::fs::write(&scratch, "intermediate").map_err(|e| Error::io("write", &scratch, e))?;
    op.register_temp_resource(&scratch).await?;

    let workers: Vec<_> = (1..=4)
        .map(|n| {
            op.spawn_call(
                CallOptions::new().description(format!("worker {n}")),
                move |ctx| async move {
                    let out = tokio::process::Command::new("sh")
                        .arg("-c")
                        .arg(format!("sleep 0.{n}; echo result-{n}"))
                        .env("TOM_LEDGER_CALL", ctx.call_id.as_str())
                        .kill_on_drop(true)
                        .output()
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok::<_, String>(String::from_utf8_lossy(&out.stdout).trim().to_string())
                },
            )
        })
        .collect();
    let tracked: Vec<&dyn TrackedCall> = workers.iter().map(|w| w as &dyn TrackedCall).collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let open = op.refresh().await?.call_frames.len();
    println!("{open} calls open in the ledger while the workers run");
    let result = op.sync(&tracked, SyncOptions::new()).await;
    for w in &workers {
        println!("{} -> {}", w.call_id(), w.result_or("failed".into()));
    }
    println!("{result}");

    op.unregister_temp_resource(&scratch).await?;
    let _ = std::fs::remove_file(&scratch);
    let id = op.operation_id().clone();
    op.complete().await?;
    let (log, _) = ledger
        .store()
        .read_log(
            &id,
            tom_dist_ledger::store::LogKind::Main,
            tom_dist_ledger::store::LogCursor::START,
        )
        .await?;
    println!("--- operation log ---\n{log}");
    Ok(())
}
