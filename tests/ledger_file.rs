//! The ledger behaviour suite on the embedded file store.

mod common;
mod ledger_suite;

use std::path::PathBuf;

use ledger_suite::Backend;
use tom_dist_ledger::Connect;

struct FileBackend {
    dir: tempfile::TempDir,
}

impl FileBackend {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }
}

impl Backend for FileBackend {
    fn connect(&self, _participant: &str) -> Connect {
        Connect::local(self.dir.path())
    }

    fn dir(&self) -> Option<PathBuf> {
        Some(self.dir.path().to_path_buf())
    }
}

ledger_suite!(FileBackend::new());
