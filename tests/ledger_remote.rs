//! The ledger behaviour suite through `tom-ledger serve`: every participant connects
//! with `Connect::remote` to a real server process on a loopback port, serving a file
//! ledger in a temp directory.

mod common;
mod ledger_suite;

use common::server::ServerProcess;
use ledger_suite::Backend;
use tom_dist_ledger::Connect;

struct RemoteBackend {
    server: ServerProcess,
}

impl RemoteBackend {
    fn new() -> Self {
        Self {
            server: ServerProcess::start(),
        }
    }
}

impl Backend for RemoteBackend {
    fn connect(&self, _participant: &str) -> Connect {
        Connect::remote(&self.server.url).token(&self.server.token)
    }

    fn shared_location(&self) -> Option<(&'static str, String)> {
        Some(("TOM_LEDGER_URL", self.server.url.clone()))
    }
}

ledger_suite!(remote: RemoteBackend::new());
