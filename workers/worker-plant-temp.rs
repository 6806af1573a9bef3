//! `worker-plant-temp PATH... [--marker X]`: edits the operation of the run that started
//! it (`TOM_LEDGER_DIR`, `TOM_LEDGER_OPERATION`) the way a hand-edited or hostile ledger
//! file would: appends temp resources naming each PATH exactly as given (no normalisation,
//! no refusal check), owned by the run's participant (`TOM_LEDGER_PARTICIPANT`). Then it
//! exits 1, so the run fails and its cleanup meets those paths.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::SystemTime;

use tom_dist_ledger::model::TempResource;
use tom_dist_ledger::store::{FileStore, FileStoreOptions, Store};
use tom_dist_ledger::{OperationId, ParticipantId};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        eprintln!("worker-plant-temp: {name} is not set");
        std::process::exit(2)
    })
}

fn main() {
    let mut paths: Vec<PathBuf> = Vec::new();
    let mut args = std::env::args_os().skip(1);
    while let Some(a) = args.next() {
        if a == OsString::from("--marker") {
            args.next();
        } else {
            paths.push(PathBuf::from(a));
        }
    }
    let dir = env("TOM_LEDGER_DIR");
    let op = OperationId::parse(env("TOM_LEDGER_OPERATION")).expect("operation id");
    let owner = ParticipantId::parse(env("TOM_LEDGER_PARTICIPANT")).expect("participant id");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let store = FileStore::open(&dir, FileStoreOptions::default()).expect("open ledger");
        let now = chrono::DateTime::<chrono::Utc>::from(SystemTime::now());
        store
            .modify(&op, &mut |data| {
                for p in &paths {
                    data.temp_resources.push(TempResource {
                        path: TempResource::encode_path(p),
                        owner: i64::from(std::process::id()),
                        registered_at: now,
                        owner_id: Some(owner.clone()),
                    });
                }
                Ok(())
            })
            .await
            .expect("plant temp resources");
    });
    println!("planted {}", paths.len());
    std::process::exit(1);
}
