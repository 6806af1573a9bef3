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
pub async fn file_json<T: DeserializeOwned>(
    path: impl AsRef<Path>,
    options: &PollOptions,
) -> Result<T> {
    let path = path.as_ref().to_path_buf();
    let shown = path.display().to_string();
    file_with(&path, options, move |s| {
        serde_json::from_str(s)
            .map_err(|e| Error::invalid(format!("json in `{shown}`"), e.to_string()))
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
        out.push(
            file_with(
                path,
                &PollOptions {
                    timeout: Some(Duration::ZERO),
                    ..options.clone()
                },
                &deserialize,
            )
            .await?,
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    fn fast() -> PollOptions {
        PollOptions::default()
            .interval(Duration::from_millis(5))
            .timeout(Duration::from_secs(20))
    }

    #[tokio::test]
    async fn file_waits_for_the_file_and_deletes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("response.txt");
        let writer = {
            let path = path.clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                std::fs::write(path, "hello").unwrap();
            })
        };
        let text = file(&path, &fast().delete(true)).await.unwrap();
        writer.await.unwrap();
        assert_eq!(text, "hello");
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn file_json_and_deserializer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        std::fs::write(&path, r#"{"n": 3}"#).unwrap();
        let v: serde_json::Value = file_json(&path, &fast()).await.unwrap();
        assert_eq!(v["n"], 3);
        assert!(path.exists(), "kept without delete");
        let n = file_with(&path, &fast(), |s| Ok(s.len())).await.unwrap();
        assert_eq!(n, 8);
        std::fs::write(&path, "not json").unwrap();
        let err = file_json::<serde_json::Value>(&path, &fast())
            .await
            .unwrap_err();
        assert!(err.to_string().contains("r.json"), "{err}");
    }

    #[tokio::test]
    async fn file_times_out_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("never.txt");
        let options = PollOptions::default()
            .interval(Duration::from_millis(1))
            .timeout(Duration::from_millis(20));
        let err = file(&path, &options).await.unwrap_err().to_string();
        assert!(
            err.contains("never.txt") && err.contains("timed out"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn until_polls_and_times_out() {
        let mut n = 0;
        let v = until(
            || {
                n += 1;
                let done = n >= 3;
                async move { done.then_some(n) }
            },
            &fast(),
        )
        .await
        .unwrap();
        assert_eq!(v, 3);
        let options = PollOptions::default()
            .interval(Duration::from_millis(1))
            .timeout(Duration::from_millis(10));
        let err = until(|| async { None::<()> }, &options).await.unwrap_err();
        assert!(err.to_string().contains("timed out"));
    }

    #[tokio::test]
    async fn files_waits_for_all_in_order_and_names_the_missing() {
        let dir = tempfile::tempdir().unwrap();
        let paths: Vec<PathBuf> = ["a", "b"].iter().map(|n| dir.path().join(n)).collect();
        std::fs::write(&paths[1], "second").unwrap();
        let writer = {
            let first = paths[0].clone();
            tokio::spawn(async move {
                tokio::task::yield_now().await;
                std::fs::write(first, "first").unwrap();
            })
        };
        let got = files(&paths, &fast().delete(true), |s| Ok(s.to_string()))
            .await
            .unwrap();
        writer.await.unwrap();
        assert_eq!(got, vec!["first", "second"]);
        assert!(paths.iter().all(|p| !p.exists()));
        let options = PollOptions::default()
            .interval(Duration::from_millis(1))
            .timeout(Duration::from_millis(10));
        let err = files(&paths, &options, |s| Ok(s.to_string()))
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("/a") && err.contains("/b"), "{err}");
    }
}
