//! The store suite on the client store of a ledger server: every handle is a
//! `RemoteStore` talking to one real `tom-ledger serve` process over loopback.

#[macro_use]
mod store_suite;
mod common;

use std::sync::Arc;

use common::server::ServerProcess;
use store_suite::TestLedger;
use tom_dist_ledger::store::Store;
use tom_dist_ledger::store::remote::RemoteStore;

async fn remote_ledger() -> TestLedger {
    let server = ServerProcess::start();
    let (url, token) = (server.url.clone(), server.token.clone());
    TestLedger::new(server, move || {
        Arc::new(RemoteStore::new(&url, Some(token.clone())).expect("remote store"))
            as Arc<dyn Store>
    })
}

mod suite {
    store_suite!(super::remote_ledger);
}
