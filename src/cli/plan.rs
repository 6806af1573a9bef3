//! The plan of `tom-ledger run --plan FILE`: TOML `[[worker]]` tables, an optional
//! `[defaults]` table, validated completely before anything starts.
//!
//! ```toml
//! [defaults]
//! timeout = "2m"
//!
//! [[worker]]
//! name = "gen"
//! cmd = ["./gen.sh", "out/gen.json"]
//! kind = "file"
//! result_file = "out/gen.json"
//! temp = ["out/gen.tmp"]
//!
//! [[worker]]
//! name = "build"
//! cmd = ["make", "-j2"]
//! after = ["gen"]
//! retries = 1
//! ```
//!
//! Relative `cwd` values are taken from the plan file's directory; `result_file` and `temp`
//! paths from the worker's `cwd`. Every error names `file:line:column`.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use tom_dist_ledger::Error;

use super::error::CommandError;

type Result<T, E = CommandError> = std::result::Result<T, E>;
use toml::Spanned;

use super::args::{check_duration_seconds, parse_duration};

/// What the result of a worker is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// The exit status.
    #[default]
    Command,
    /// JSON on stdout.
    Stdio,
    /// A result file, complete when the worker exits.
    File,
}

/// A worker, resolved and checked.
#[derive(Clone, Debug, PartialEq)]
pub struct WorkerSpec {
    pub name: String,
    /// The program: resolved on `PATH` when it is a bare name; a path (it holds a `/`)
    /// taken from `cwd` and looked at only when the worker starts, so an earlier worker
    /// may build it.
    pub program: PathBuf,
    /// The command as written (program first), passed to the program as bytes.
    pub command: Vec<OsString>,
    pub kind: Kind,
    /// Absolute, for `kind = "file"`.
    pub result_file: Option<PathBuf>,
    /// Indexes of the workers this one waits for.
    pub after: Vec<usize>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    /// Absolute paths registered as temp resources before the worker starts.
    pub temp: Vec<PathBuf>,
    /// Whether this worker failing fails the run (default true).
    pub fail_on_crash: bool,
    /// Absolute working directory.
    pub cwd: PathBuf,
    /// Variables added to the inherited environment.
    pub env: BTreeMap<String, String>,
}

/// A validated plan.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub workers: Vec<WorkerSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPlan {
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    worker: Vec<RawWorker>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    kind: Option<Kind>,
    timeout: Option<Spanned<RawDuration>>,
    retries: Option<u32>,
    temp: Option<Vec<String>>,
    fail_on_crash: Option<bool>,
    cwd: Option<Spanned<String>>,
    env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorker {
    name: Spanned<String>,
    cmd: Spanned<Vec<String>>,
    kind: Option<Spanned<Kind>>,
    result_file: Option<Spanned<String>>,
    #[serde(default)]
    after: Vec<Spanned<String>>,
    timeout: Option<Spanned<RawDuration>>,
    retries: Option<u32>,
    temp: Option<Vec<String>>,
    fail_on_crash: Option<bool>,
    cwd: Option<Spanned<String>>,
    env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum RawDuration {
    Seconds(u64),
    Text(String),
}

/// Source text and file name, to turn byte spans into `file:line:column`.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
}

impl Source<'_> {
    fn at(&self, span: Option<Range<usize>>) -> String {
        let Some(span) = span else {
            return self.file.display().to_string();
        };
        let before = &self.text[..span.start.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.chars().rev().take_while(|&c| c != '\n').count() + 1;
        format!("{}:{line}:{column}", self.file.display())
    }

    fn error(&self, span: Option<Range<usize>>, message: impl Into<String>) -> CommandError {
        CommandError::Plan {
            location: self.at(span),
            message: message.into(),
        }
    }
}

impl Plan {
    /// Read and validate a plan file.
    pub fn load(file: &Path) -> Result<Plan> {
        let text = std::fs::read_to_string(file).map_err(|e| CommandError::Plan {
            location: file.display().to_string(),
            message: format!("cannot read the plan: {e}"),
        })?;
        let base = std::path::absolute(file)
            .ok()
            .and_then(|f| f.parent().map(Path::to_path_buf))
            .unwrap_or_else(|| PathBuf::from("."));
        Plan::parse(file, &text, &base)
    }

    /// Validate plan text; `base` is where relative `cwd` values start.
    pub fn parse(file: &Path, text: &str, base: &Path) -> Result<Plan> {
        let src = Source { file, text };
        let raw: RawPlan = toml::from_str(text).map_err(|e| {
            let message = e.message().trim().replace('\n', "; ");
            src.error(e.span(), message)
        })?;
        if raw.worker.is_empty() {
            return Err(src.error(None, "the plan has no [[worker]] table"));
        }
        let mut index: HashMap<&str, usize> = HashMap::new();
        for (i, w) in raw.worker.iter().enumerate() {
            let name = w.name.get_ref().as_str();
            if let Err(e) = tom_dist_ledger::ids::validate("worker", name, 128) {
                return Err(src.error(Some(w.name.span()), worker_name_reason(&e)));
            }
            if index.insert(name, i).is_some() {
                return Err(src.error(
                    Some(w.name.span()),
                    format!("duplicate worker name `{name}`"),
                ));
            }
        }
        let d = &raw.defaults;
        let default_timeout = match &d.timeout {
            Some(t) => Some(duration(&src, t)?),
            None => None,
        };
        let default_cwd = match &d.cwd {
            Some(c) => base.join(c.get_ref()),
            None => base.to_path_buf(),
        };
        if let Some(c) = &d.cwd
            && !default_cwd.is_dir()
        {
            return Err(src.error(
                Some(c.span()),
                format!("`cwd` `{}` is not a directory", c.get_ref()),
            ));
        }
        let mut workers = Vec::with_capacity(raw.worker.len());
        for w in &raw.worker {
            workers.push(resolve_worker(
                &src,
                w,
                d,
                &index,
                default_timeout,
                &default_cwd,
                base,
            )?);
        }
        let plan = Plan { workers };
        if let Some(cycle) = plan.find_cycle() {
            let names: Vec<&str> = cycle
                .iter()
                .map(|&i| plan.workers[i].name.as_str())
                .collect();
            let first = &raw.worker[cycle[0]];
            return Err(src.error(
                Some(first.name.span()),
                format!("cycle in `after`: {}", names.join(" -> ")),
            ));
        }
        Ok(plan)
    }

    /// One command run as the whole operation (`run -- CMD`, `exec -- CMD`): nothing
    /// can build its program first, so it must exist now.
    pub fn single(command: &[OsString], cwd: &Path) -> Result<Plan> {
        let Some(first) = command.first() else {
            return Err(Error::invalid("the command", "is empty").into());
        };
        let program = resolve_program(first, cwd, None)?;
        let name = Path::new(first)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| tom_dist_ledger::ids::validate("worker", n, 128).is_ok())
            .unwrap_or_else(|| "command".to_string());
        Ok(Plan {
            workers: vec![WorkerSpec {
                name,
                program,
                command: command.to_vec(),
                kind: Kind::Command,
                result_file: None,
                after: Vec::new(),
                timeout: None,
                retries: 0,
                temp: Vec::new(),
                fail_on_crash: true,
                cwd: cwd.to_path_buf(),
                env: BTreeMap::new(),
            }],
        })
    }

    /// A cycle in `after`, as worker indexes with the first repeated at the end.
    fn find_cycle(&self) -> Option<Vec<usize>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Open,
            Done,
        }
        fn visit(
            plan: &Plan,
            i: usize,
            marks: &mut [Mark],
            path: &mut Vec<usize>,
        ) -> Option<Vec<usize>> {
            marks[i] = Mark::Open;
            path.push(i);
            for &dep in &plan.workers[i].after {
                match marks[dep] {
                    Mark::Open => {
                        let start = path.iter().position(|&p| p == dep).unwrap_or(0);
                        let mut cycle = path[start..].to_vec();
                        cycle.push(dep);
                        return Some(cycle);
                    }
                    Mark::New => {
                        if let Some(c) = visit(plan, dep, marks, path) {
                            return Some(c);
                        }
                    }
                    Mark::Done => {}
                }
            }
            path.pop();
            marks[i] = Mark::Done;
            None
        }
        let mut marks = vec![Mark::New; self.workers.len()];
        for i in 0..self.workers.len() {
            if marks[i] == Mark::New
                && let Some(c) = visit(self, i, &mut marks, &mut Vec::new())
            {
                return Some(c);
            }
        }
        None
    }
}

fn worker_name_reason(e: &Error) -> String {
    match e {
        Error::InvalidId { value, reason, .. } => format!("worker name `{value}` {reason}"),
        other => other.to_string(),
    }
}

fn duration(src: &Source<'_>, d: &Spanned<RawDuration>) -> Result<Duration> {
    match d.get_ref() {
        RawDuration::Seconds(s) => check_duration_seconds(&s.to_string(), *s as f64)
            .map_err(|m| src.error(Some(d.span()), m)),
        RawDuration::Text(t) => parse_duration(t).map_err(|m| src.error(Some(d.span()), m)),
    }
}

fn resolve_worker(
    src: &Source<'_>,
    w: &RawWorker,
    d: &RawDefaults,
    index: &HashMap<&str, usize>,
    default_timeout: Option<Duration>,
    default_cwd: &Path,
    base: &Path,
) -> Result<WorkerSpec> {
    let name = w.name.get_ref().clone();
    let in_worker = |m: String| format!("worker `{name}`: {m}");
    let cwd = match &w.cwd {
        Some(c) => {
            let dir = base.join(c.get_ref());
            if !dir.is_dir() {
                let m = format!("`cwd` `{}` is not a directory", c.get_ref());
                return Err(src.error(Some(c.span()), in_worker(m)));
            }
            dir
        }
        None => default_cwd.to_path_buf(),
    };
    let mut env = d.env.clone().unwrap_or_default();
    env.extend(w.env.clone().unwrap_or_default());
    if let Err(m) = check_env(&env) {
        return Err(src.error(Some(w.name.span()), in_worker(m)));
    }
    let command = w.cmd.get_ref().clone();
    if let Some(arg) = command.iter().find(|a| a.contains('\0')) {
        let m = format!("`cmd` argument {arg:?} holds a NUL byte");
        return Err(src.error(Some(w.cmd.span()), in_worker(m)));
    }
    let Some(program) = command.first() else {
        return Err(src.error(Some(w.cmd.span()), in_worker("`cmd` is empty".into())));
    };
    let program = if program.contains('/') {
        // Looked at when the worker starts: an earlier worker may build it.
        cwd.join(program)
    } else {
        resolve_program(program.as_ref(), &cwd, env.get("PATH").map(OsString::from))
            .map_err(|e| src.error(Some(w.cmd.span()), in_worker(e.to_string())))?
    };
    let command = command.into_iter().map(OsString::from).collect();
    let kind = w
        .kind
        .as_ref()
        .map(|k| *k.get_ref())
        .or(d.kind)
        .unwrap_or_default();
    let result_file = match (&w.result_file, kind) {
        (Some(f), Kind::File) => Some(cwd.join(f.get_ref())),
        (None, Kind::File) => {
            let span = w.kind.as_ref().map(|k| k.span()).unwrap_or(w.name.span());
            let m = "`kind = \"file\"` needs `result_file`".to_string();
            return Err(src.error(Some(span), in_worker(m)));
        }
        (Some(f), _) => {
            let m = "`result_file` is only for `kind = \"file\"`".to_string();
            return Err(src.error(Some(f.span()), in_worker(m)));
        }
        (None, _) => None,
    };
    let mut after = Vec::with_capacity(w.after.len());
    for a in &w.after {
        match index.get(a.get_ref().as_str()) {
            Some(&i) => after.push(i),
            None => {
                let m = format!("unknown worker `{}` in `after`", a.get_ref());
                return Err(src.error(Some(a.span()), in_worker(m)));
            }
        }
    }
    let timeout = match &w.timeout {
        Some(t) => Some(duration(src, t)?),
        None => default_timeout,
    };
    let temps = || d.temp.iter().flatten().chain(w.temp.iter().flatten());
    if let Some(p) = temps().find(|p| p.contains('\0')) {
        let m = format!("`temp` path {p:?} holds a NUL byte");
        return Err(src.error(Some(w.name.span()), in_worker(m)));
    }
    if let Some(f) = w
        .result_file
        .as_ref()
        .filter(|f| f.get_ref().contains('\0'))
    {
        let m = format!("`result_file` {:?} holds a NUL byte", f.get_ref());
        return Err(src.error(Some(f.span()), in_worker(m)));
    }
    let temp = temps().map(|p| cwd.join(p)).collect();
    Ok(WorkerSpec {
        name,
        program,
        command,
        kind,
        result_file,
        after,
        timeout,
        retries: w.retries.or(d.retries).unwrap_or(0),
        temp,
        fail_on_crash: w.fail_on_crash.or(d.fail_on_crash).unwrap_or(true),
        cwd,
        env,
    })
}

/// Find a program as a shell would: on `PATH` (or the worker's own `PATH`), or, when it
/// holds a `/`, relative to the working directory.
pub fn resolve_program(
    program: &std::ffi::OsStr,
    cwd: &Path,
    path: Option<OsString>,
) -> Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let path = path.or_else(|| std::env::var_os("PATH"));
    which::which_in(program, path, cwd).map_err(|_| CommandError::ExecutableNotFound {
        program: program.to_string_lossy().into_owned(),
        cwd: program
            .as_bytes()
            .contains(&b'/')
            .then(|| cwd.to_path_buf()),
    })
}

/// A command as one line of text, for descriptions and messages (bytes that are not
/// UTF-8 shown as U+FFFD).
pub fn command_line(command: &[OsString]) -> String {
    command
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Variables the environment can hold: a name that is not empty and holds no `=`, and
/// no NUL byte anywhere (it could not be passed to the program).
fn check_env(env: &BTreeMap<String, String>) -> std::result::Result<(), String> {
    for (key, value) in env {
        if key.is_empty() {
            return Err("`env` has an empty variable name".into());
        }
        if key.contains('=') {
            return Err(format!("`env` variable name {key:?} holds `=`"));
        }
        if key.contains('\0') {
            return Err(format!("`env` variable name {key:?} holds a NUL byte"));
        }
        if value.contains('\0') {
            return Err(format!("`env` value of `{key}` holds a NUL byte"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
