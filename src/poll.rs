//! Polling helpers for work that waits on something outside the ledger: a file another
//! process writes, or any condition.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// How to poll.
#[derive(Clone, Debug)]
pub struct PollOptions {
    pub interval: Duration,
    /// Give up after this long (`None`: wait forever).
    pub timeout: Option<Duration>,
    /// Delete the file(s) after reading.
    pub delete: bool,
}

impl Default for PollOptions {
    fn default() -> Self {
        Self {
            interval: Duration::from_millis(100),
            timeout: None,
            delete: false,
        }
    }
}

impl PollOptions {
    pub fn interval(mut self, d: Duration) -> Self {
        self.interval = d;
        self
    }

    pub fn timeout(mut self, d: Duration) -> Self {
        self.timeout = Some(d);
        self
    }

    pub fn delete(mut self, on: bool) -> Self {
        self.delete = on;
        self
    }
}

/// Call `check` until it returns `Some`.
pub async fn until<T, F, Fut>(mut check: F, options: &PollOptions) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        if let Some(limit) = options.timeout
            && start.elapsed() >= limit
        {
            return Err(Error::Timeout {
                what: "condition".into(),
                after: limit,
            });
        }
        tokio::time::sleep(options.interval).await;
    }
}

/// Wait for a file to appear and return its text (deleted afterwards with `delete`).
pub async fn file(path: impl AsRef<Path>, options: &PollOptions) -> Result<String> {
    file_with(path, options, |s| Ok(s.to_string())).await
}

/// Wait for a file and parse it as JSON.
pub async fn file_json<T: DeserializeOwned>(path: impl AsRef<Path>, options: &PollOptions) -> Result<T> {
    let path = path.as_ref().to_path_buf();
    let shown = path.display().to_string();
    file_with(&path, options, move |s| {
        serde_json::from_str(s).map_err(|e| Error::invalid(format!("json in `{shown}`"), e.to_string()))
    })
    .await
}

/// Wait for a file and turn its text into a value with `deserialize`.
pub async fn file_with<T>(
    path: impl AsRef<Path>,
    options: &PollOptions,
    deserialize: impl Fn(&str) -> Result<T>,
) -> Result<T> {
    let path = path.as_ref();
    let text = match until(|| async { read_if_present(path) }, options).await {
        Ok(r) => r?,
        Err(Error::Timeout { after, .. }) => {
            return Err(Error::Timeout {
                what: format!("file `{}` to appear", path.display()),
                after,
            });
        }
        Err(e) => return Err(e),
    };
    if options.delete {
        std::fs::remove_file(path).map_err(|e| Error::io("delete", path, e))?;
    }
    deserialize(&text)
}

/// Wait for every file; results in the order of `paths`.
pub async fn files<T>(
    paths: &[PathBuf],
    options: &PollOptions,
    deserialize: impl Fn(&str) -> Result<T>,
) -> Result<Vec<T>> {
    let check = || async {
        if paths.iter().all(|p| p.exists()) {
            Some(())
        } else {
            None
        }
    };
    if let Err(e) = until(check, options).await {
        let missing: Vec<String> = paths
            .iter()
            .filter(|p| !p.exists())
            .map(|p| p.display().to_string())
            .collect();
        return Err(match e {
            Error::Timeout { after, .. } => Error::Timeout {
                what: format!("files {}", missing.join(", ")),
                after,
            },
            other => other,
        });
    }
    let mut out = Vec::with_capacity(paths.len());
    for path in paths {
        out.push(file_with(path, &PollOptions { timeout: Some(Duration::ZERO), ..options.clone() }, &deserialize).await?);
    }
    Ok(out)
}

fn read_if_present(path: &Path) -> Option<Result<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Some(Ok(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => Some(Err(Error::io("read", path, e))),
    }
}
