//! Custom scenarios from a TOML file. Every error names `file:line:column`; nothing runs
//! unless the whole file is valid.
//!
//! ```toml
//! [[scenario]]
//! name = "bridge_dies_early"
//! description = "the bridge is killed as soon as its call is open"
//!
//! [[scenario.call]]                 # the initiator's call (its participant creates the operation)
//! name = "cli-main"
//! by = "cli"
//! temps = ["cli.tmp"]               # files created in the scratch dir, registered as temp resources
//! call = [                          # nested calls (`parallel = true`: all open at once)
//!   { name = "bridge-process", by = "bridge", temps = ["bridge.tmp"] },
//! ]
//!
//! [[scenario.fault]]                # crash | hang | abort | error (with message) | timeout
//! participant = "bridge"
//! kind = "crash"
//! at = "started:bridge-process"     # joined:P | started:CALL | ended:CALL | cleanup:CALL
//!
//! [scenario.expect]
//! state = "failed"                  # completed | failed | cleanup | running
//! saw_failed = ["cli"]
//! order = ["fault", "failed:cli"]
//! temps_gone = ["cli.tmp", "bridge.tmp"]
//! exit = { cli = 1, bridge = "SIGKILL" }
//! ```
//!
//! A call may wait for an external answer: `external = { responder = "copilot", call =
//! "copilot-chat" }`.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;

use crate::error::{Error, Result};
use crate::model::OperationState;

use super::scenario::{
    CallSpec, ExitExpect, Expectation, External, Fault, FaultKind, Point, Scenario,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    scenario: Vec<RawScenario>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    #[serde(default)]
    call: Vec<RawCall>,
    #[serde(default)]
    fault: Vec<RawFault>,
    expect: Option<Spanned<RawExpect>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCall {
    name: String,
    by: String,
    #[serde(default)]
    temps: Vec<String>,
    fail_on_crash: Option<bool>,
    #[serde(default)]
    parallel: bool,
    external: Option<RawExternal>,
    #[serde(default)]
    call: Vec<RawCall>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExternal {
    responder: String,
    call: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFault {
    participant: String,
    kind: Spanned<String>,
    at: Spanned<String>,
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    state: Spanned<String>,
    #[serde(default)]
    saw_failed: Vec<String>,
    #[serde(default)]
    saw_aborted: Vec<String>,
    #[serde(default)]
    order: Vec<String>,
    #[serde(default)]
    temps_gone: Vec<String>,
    #[serde(default)]
    temps_kept: Vec<String>,
    reason_contains: Option<String>,
    #[serde(default)]
    concurrent: Vec<String>,
    #[serde(default)]
    exit: BTreeMap<String, Spanned<RawExit>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawExit {
    Code(i64),
    Signal(String),
}

/// The file's text and name, to turn byte spans into `file:line:column`.
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
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        format!("{}:{line}:{column}", self.file.display())
    }

    fn error(&self, span: Option<Range<usize>>, reason: impl Into<String>) -> Error {
        Error::ScenarioFile {
            location: self.at(span),
            reason: reason.into(),
        }
    }
}

/// Read and check the scenarios of `file`.
pub fn load_file(file: &Path) -> Result<Vec<Scenario>> {
    let text = std::fs::read_to_string(file).map_err(|e| Error::ScenarioFile {
        location: file.display().to_string(),
        reason: format!("cannot read it: {e}"),
    })?;
    parse(file, &text)
}

/// Parse and check scenario text (`file` names it in errors).
pub fn parse(file: &Path, text: &str) -> Result<Vec<Scenario>> {
    let src = Source { file, text };
    let raw: RawFile = toml::from_str(text).map_err(|e| {
        let message = e.message().trim().replace('\n', " ");
        src.error(e.span(), message)
    })?;
    if raw.scenario.is_empty() {
        return Err(src.error(None, "no [[scenario]] in the file"));
    }
    let mut out: Vec<Scenario> = Vec::new();
    for s in raw.scenario {
        let name_span = Some(s.name.span());
        let scenario = convert(&src, s)?;
        if out.iter().any(|o| o.name == scenario.name) {
            return Err(src.error(
                name_span,
                format!("scenario `{}` is defined twice", scenario.name),
            ));
        }
        scenario.validate().map_err(|reason| {
            src.error(
                name_span.clone(),
                format!("scenario `{}`: {reason}", scenario.name),
            )
        })?;
        out.push(scenario);
    }
    Ok(out)
}

fn convert(src: &Source<'_>, s: RawScenario) -> Result<Scenario> {
    let name_span = s.name.span();
    let name = s.name.into_inner();
    let Some(expect) = s.expect else {
        return Err(src.error(
            Some(name_span),
            format!("scenario `{name}` has no [scenario.expect]"),
        ));
    };
    let mut faults = Vec::new();
    for f in s.fault {
        faults.push(fault(src, f)?);
    }
    Ok(Scenario {
        name,
        description: s.description,
        calls: s.call.into_iter().map(call).collect(),
        faults,
        expect: expectation(src, expect.into_inner())?,
    })
}

fn call(c: RawCall) -> CallSpec {
    CallSpec {
        name: c.name,
        by: c.by,
        temps: c.temps,
        fail_on_crash: c.fail_on_crash.unwrap_or(true),
        parallel: c.parallel,
        external: c.external.map(|e| External {
            responder: e.responder,
            call: e.call,
        }),
        nested: c.call.into_iter().map(call).collect(),
    }
}

fn fault(src: &Source<'_>, f: RawFault) -> Result<Fault> {
    let kind = match (f.kind.get_ref().as_str(), f.message) {
        ("crash", None) => FaultKind::Crash,
        ("hang", None) => FaultKind::Hang,
        ("abort", None) => FaultKind::Abort,
        ("timeout", None) => FaultKind::Timeout,
        ("error", Some(m)) => FaultKind::Error(m),
        ("error", None) => {
            return Err(src.error(Some(f.kind.span()), "an `error` fault needs a `message`"));
        }
        ("crash" | "hang" | "abort" | "timeout", Some(_)) => {
            return Err(src.error(
                Some(f.kind.span()),
                "only an `error` fault takes a `message`",
            ));
        }
        (other, _) => {
            return Err(src.error(
                Some(f.kind.span()),
                format!("unknown fault kind `{other}` (crash, hang, abort, error, timeout)"),
            ));
        }
    };
    let at = Point::parse(f.at.get_ref()).ok_or_else(|| {
        src.error(
            Some(f.at.span()),
            format!(
                "`{}` is not a point (joined:PARTICIPANT, started:CALL, ended:CALL, cleanup:CALL)",
                f.at.get_ref()
            ),
        )
    })?;
    Ok(Fault {
        participant: f.participant,
        kind,
        at,
    })
}

fn expectation(src: &Source<'_>, e: RawExpect) -> Result<Expectation> {
    let state = match e.state.get_ref().as_str() {
        "completed" => OperationState::Completed,
        "failed" => OperationState::Failed,
        "cleanup" => OperationState::Cleanup,
        "running" => OperationState::Running,
        other => {
            return Err(src.error(
                Some(e.state.span()),
                format!("unknown state `{other}` (completed, failed, cleanup, running)"),
            ));
        }
    };
    let mut exits = BTreeMap::new();
    for (who, value) in e.exit {
        let span = value.span();
        let exit = match value.into_inner() {
            RawExit::Code(c) if (0..=255).contains(&c) => ExitExpect::Code(c as i32),
            RawExit::Code(c) => {
                return Err(src.error(Some(span), format!("exit code {c} is not 0..=255")));
            }
            RawExit::Signal(name) => {
                match name.parse::<nix::sys::signal::Signal>() {
                    Ok(sig) => ExitExpect::Signal(sig as i32),
                    Err(_) => {
                        return Err(src.error(
                        Some(span),
                        format!("`{name}` is neither an exit code nor a signal name like \"SIGKILL\""),
                    ));
                    }
                }
            }
        };
        exits.insert(who, exit);
    }
    Ok(Expectation {
        state,
        saw_failed: e.saw_failed,
        saw_aborted: e.saw_aborted,
        order: e.order,
        temps_gone: e.temps_gone,
        temps_kept: e.temps_kept,
        reason_contains: e.reason_contains,
        concurrent: e.concurrent,
        exits,
    })
}
