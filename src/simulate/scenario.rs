//! What a scenario is: the participants' calls and their nesting, the faults injected at
//! named points, and the outcome it expects.
//!
//! A scenario names participants by role (`cli`, `bridge`, `vscode`, `copilot`, or any
//! name a custom scenario gives); the first call's participant is the initiator, which
//! creates the operation. Every participant is its own OS process.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::OperationState;

/// One scenario: calls, faults, expectation.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    /// The top-level calls, walked in order (the first one's participant initiates).
    pub calls: Vec<CallSpec>,
    pub faults: Vec<Fault>,
    pub expect: Expectation,
}

/// One call of the tree, made by one participant, holding its nested calls open.
#[derive(Clone, Debug, PartialEq)]
pub struct CallSpec {
    /// The call's name (its frame's description), unique in the scenario.
    pub name: String,
    /// The participant that makes the call.
    pub by: String,
    /// Temp files this participant creates in the scratch directory and registers as
    /// temp resources of the operation when the call starts.
    pub temps: Vec<String>,
    /// Whether this call's crash fails the whole operation (the library's default).
    pub fail_on_crash: bool,
    /// Nested calls run at the same time (really concurrent) instead of one by one.
    pub parallel: bool,
    /// The call waits for an answer from an external participant.
    pub external: Option<External>,
    pub nested: Vec<CallSpec>,
}

impl CallSpec {
    /// A call with the library's defaults (fails the operation when it crashes).
    pub fn new(name: &str, by: &str) -> Self {
        CallSpec {
            name: name.into(),
            by: by.into(),
            temps: Vec::new(),
            fail_on_crash: true,
            parallel: false,
            external: None,
            nested: Vec::new(),
        }
    }

    pub fn temp(mut self, name: &str) -> Self {
        self.temps.push(name.into());
        self
    }

    pub fn nested(mut self, call: CallSpec) -> Self {
        self.nested.push(call);
        self
    }

    pub fn parallel(mut self) -> Self {
        self.parallel = true;
        self
    }

    pub fn external(mut self, responder: &str, call: &str) -> Self {
        self.external = Some(External {
            responder: responder.into(),
            call: call.into(),
        });
        self
    }

    /// This call and all calls below it, depth first.
    pub fn walk(&self) -> Vec<&CallSpec> {
        let mut out = vec![self];
        for n in &self.nested {
            out.extend(n.walk());
        }
        out
    }
}

/// An external call: the caller waits (up to the scenario's response deadline) for the
/// responder's call to answer through a response file in the scratch directory.
#[derive(Clone, Debug, PartialEq)]
pub struct External {
    /// The participant that answers (the original's Copilot).
    pub responder: String,
    /// The responder's call that produces the answer.
    pub call: String,
}

/// A fault injected into one participant when the run reaches a named point.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    pub participant: String,
    pub kind: FaultKind,
    pub at: Point,
}

/// What is done to the participant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// SIGKILL.
    Crash,
    /// SIGSTOP (resumed with SIGCONT once the others are done with it).
    Hang,
    /// SIGINT, as a user's Ctrl+C (the initiator only).
    Abort,
    /// The participant fails its call at the point with this message.
    Error(String),
    /// The participant never answers: its caller's real deadline passes.
    Timeout,
}

impl FaultKind {
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Crash => "crash",
            FaultKind::Hang => "hang",
            FaultKind::Abort => "abort",
            FaultKind::Error(_) => "error",
            FaultKind::Timeout => "timeout",
        }
    }
}

/// A named point of the run.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Point {
    /// The participant has joined (or created) the operation, before its first call.
    Joined(String),
    /// The call's frame is open.
    Started(String),
    /// The call has ended; its participant is still in the operation.
    Ended(String),
    /// The call's participant is running its cleanup (`on_cleanup`) after the call failed.
    Cleanup(String),
}

impl Point {
    /// Parse `joined:P`, `started:CALL`, `ended:CALL` or `cleanup:CALL`.
    pub fn parse(text: &str) -> Option<Point> {
        let (kind, name) = text.split_once(':')?;
        if name.is_empty() {
            return None;
        }
        let name = name.to_string();
        Some(match kind {
            "joined" => Point::Joined(name),
            "started" => Point::Started(name),
            "ended" => Point::Ended(name),
            "cleanup" => Point::Cleanup(name),
            _ => return None,
        })
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Point::Joined(p) => write!(f, "joined:{p}"),
            Point::Started(c) => write!(f, "started:{c}"),
            Point::Ended(c) => write!(f, "ended:{c}"),
            Point::Cleanup(c) => write!(f, "cleanup:{c}"),
        }
    }
}

/// How a participant's process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitExpect {
    /// Exited with this code (0 success, 1 failure, 124 timeout, 130 abort).
    Code(i32),
    /// Killed by this signal (a crash: SIGKILL).
    Signal(i32),
}

impl fmt::Display for ExitExpect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitExpect::Code(c) => write!(f, "{c}"),
            ExitExpect::Signal(s) => match nix::sys::signal::Signal::try_from(*s) {
                Ok(sig) => write!(f, "{sig}"),
                Err(_) => write!(f, "signal {s}"),
            },
        }
    }
}

/// The outcome a scenario expects. Every field is checked after the run; that no
/// process of the scenario is left is always checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Expectation {
    /// The operation's final state. `Running` means it was left for recovery (nobody
    /// alive to clean up); the others are read from the archive.
    pub state: OperationState,
    /// Exactly these of the participants that were not faulted saw `failed()`.
    pub saw_failed: Vec<String>,
    /// Exactly these of the participants that were not faulted saw `aborted()`.
    pub saw_aborted: Vec<String>,
    /// Observations that must have happened in this order: `fault` (the first injected
    /// fault), `failed:P`, `aborted:P`, `detected:P` (P's call saw a callee crash),
    /// `archived` (the runner saw the operation leave the live ledger).
    pub order: Vec<String>,
    /// Temp files that must be gone at the end.
    pub temps_gone: Vec<String>,
    /// Temp files that must still exist at the end.
    pub temps_kept: Vec<String>,
    /// Text the recorded failure reason must contain.
    pub reason_contains: Option<String>,
    /// Calls that must have been open in the ledger at the same time.
    pub concurrent: Vec<String>,
    /// Every participant that was started, and how its process must end.
    pub exits: BTreeMap<String, ExitExpect>,
}

impl Default for Expectation {
    fn default() -> Self {
        Expectation {
            state: OperationState::Completed,
            saw_failed: Vec::new(),
            saw_aborted: Vec::new(),
            order: Vec::new(),
            temps_gone: Vec::new(),
            temps_kept: Vec::new(),
            reason_contains: None,
            concurrent: Vec::new(),
            exits: BTreeMap::new(),
        }
    }
}

impl Scenario {
    /// Every call of the scenario, depth first, external responders' calls included.
    pub fn all_calls(&self) -> Vec<&CallSpec> {
        self.calls.iter().flat_map(CallSpec::walk).collect()
    }

    /// The participant that creates the operation.
    pub fn initiator(&self) -> Option<&str> {
        self.calls.first().map(|c| c.by.as_str())
    }

    /// Every participant named by a call or an external call, in order of appearance.
    pub fn participants(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |p: &str| {
            if !out.iter().any(|o| o == p) {
                out.push(p.to_string());
            }
        };
        for c in self.all_calls() {
            add(&c.by);
            if let Some(e) = &c.external {
                add(&e.responder);
            }
        }
        out
    }

    /// The participant of a call named `name` (an external responder's call included).
    pub fn owner_of(&self, call: &str) -> Option<String> {
        for c in self.all_calls() {
            if c.name == call {
                return Some(c.by.clone());
            }
            if let Some(e) = &c.external
                && e.call == call
            {
                return Some(e.responder.clone());
            }
        }
        None
    }

    /// Every call name, external responders' calls included.
    pub fn call_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        for c in self.all_calls() {
            out.push(c.name.clone());
            if let Some(e) = &c.external {
                out.push(e.call.clone());
            }
        }
        out
    }

    /// Every temp file name of the scenario.
    pub fn temp_names(&self) -> Vec<String> {
        self.all_calls()
            .iter()
            .flat_map(|c| c.temps.iter().cloned())
            .collect()
    }

    /// The faults injected at `point`.
    pub fn faults_at(&self, point: &Point) -> Vec<&Fault> {
        self.faults.iter().filter(|f| &f.at == point).collect()
    }

    /// Whether the scenario is consistent: known participants and calls, unique names,
    /// an abort only for the initiator. The message names the first problem.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.name.is_empty()
            || self.name.len() > 64
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            return Err(format!(
                "name `{}` must be 1 to 64 of a-z, 0-9, `_` and `-`",
                self.name
            ));
        }
        let Some(initiator) = self.initiator() else {
            return Err("a scenario needs at least one call".into());
        };
        if self.calls.len() > 1 && self.calls.iter().any(|c| c.by != initiator) {
            return Err("every top-level call is the initiator's".into());
        }
        let names = self.call_names();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(format!("call `{n}` is named twice"));
            }
        }
        let participants = self.participants();
        for p in &participants {
            crate::ids::ParticipantId::parse(p.as_str()).map_err(|e| e.to_string())?;
        }
        for c in self.all_calls() {
            if let Some(e) = &c.external
                && e.responder == c.by
            {
                return Err(format!(
                    "call `{}` cannot wait for its own participant",
                    c.name
                ));
            }
        }
        let temps = self.temp_names();
        for (i, t) in temps.iter().enumerate() {
            if temps[..i].contains(t) {
                return Err(format!("temp file `{t}` is named twice"));
            }
            if t.is_empty() || t.contains('/') || t == "." || t == ".." {
                return Err(format!("temp file `{t}` must be a plain file name"));
            }
        }
        for f in &self.faults {
            if !participants.contains(&f.participant) {
                return Err(format!(
                    "fault names unknown participant `{}`",
                    f.participant
                ));
            }
            match &f.at {
                Point::Joined(p) if !participants.contains(p) => {
                    return Err(format!("point `{}` names unknown participant `{p}`", f.at));
                }
                Point::Started(c) | Point::Ended(c) | Point::Cleanup(c) if !names.contains(c) => {
                    return Err(format!("point `{}` names unknown call `{c}`", f.at));
                }
                _ => {}
            }
            let own_call = |point: &Point| match point {
                Point::Started(c) => self.owner_of(c).as_deref() == Some(f.participant.as_str()),
                _ => false,
            };
            if matches!(f.kind, FaultKind::Error(_)) && !own_call(&f.at) {
                return Err(format!(
                    "an error fault fails a call of `{}` as it starts: its point is started:CALL with one of its calls",
                    f.participant
                ));
            }
            if f.kind == FaultKind::Timeout {
                let answers = match &f.at {
                    Point::Started(c) => self
                        .all_calls()
                        .iter()
                        .any(|call| call.external.as_ref().is_some_and(|e| &e.call == c)),
                    _ => false,
                };
                if !own_call(&f.at) || !answers {
                    return Err(format!(
                        "a timeout fault stops `{}` answering: its point is started:CALL with the external call it answers",
                        f.participant
                    ));
                }
            }
            if f.kind == FaultKind::Abort && f.participant != initiator {
                return Err(format!(
                    "an abort is a SIGINT to the initiator `{initiator}`, not `{}`",
                    f.participant
                ));
            }
            if let Point::Cleanup(c) = &f.at
                && !self.faults.iter().any(|g| {
                    matches!(g.kind, FaultKind::Error(_)) && g.at == Point::Started(c.clone())
                })
            {
                return Err(format!(
                    "point `{}` is reached only when an error fault fails `{c}` at `started:{c}`",
                    f.at
                ));
            }
        }
        let check_names = |what: &str, list: &[String], known: &[String]| {
            for n in list {
                if !known.contains(n) {
                    return Err(format!("expect.{what} names unknown `{n}`"));
                }
            }
            Ok(())
        };
        check_names("saw_failed", &self.expect.saw_failed, &participants)?;
        check_names("saw_aborted", &self.expect.saw_aborted, &participants)?;
        check_names("temps_gone", &self.expect.temps_gone, &temps)?;
        check_names("temps_kept", &self.expect.temps_kept, &temps)?;
        check_names("concurrent", &self.expect.concurrent, &names)?;
        let exit_names: Vec<String> = self.expect.exits.keys().cloned().collect();
        check_names("exit", &exit_names, &participants)?;
        for o in &self.expect.order {
            let ok = match o.split_once(':') {
                None => o == "fault" || o == "archived",
                Some(("failed" | "aborted" | "detected", p)) => participants.iter().any(|x| x == p),
                Some(_) => false,
            };
            if !ok {
                return Err(format!(
                    "expect.order entry `{o}` is not `fault`, `archived`, or failed:/aborted:/detected: with a participant"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::builtin;
    use super::*;

    #[test]
    fn every_built_in_scenario_is_valid() {
        for s in builtin::all() {
            assert_eq!(s.validate(), Ok(()), "{}", s.name);
        }
    }

    #[test]
    fn points_parse_and_print_back() {
        for text in ["joined:cli", "started:a-b", "ended:x", "cleanup:y"] {
            assert_eq!(
                Point::parse(text).map(|p| p.to_string()).as_deref(),
                Some(text)
            );
        }
        for bad in ["", "joined:", "during:x", "started"] {
            assert_eq!(Point::parse(bad), None, "{bad}");
        }
    }

    fn broken(change: impl Fn(&mut Scenario)) -> String {
        let mut s = builtin::find("copilot_error").expect("built-in");
        change(&mut s);
        s.validate().expect_err("refused")
    }

    #[test]
    fn inconsistent_scenarios_are_refused_naming_the_problem() {
        assert_eq!(
            broken(|s| s.name = "Bad Name".into()),
            "name `Bad Name` must be 1 to 64 of a-z, 0-9, `_` and `-`"
        );
        assert_eq!(
            broken(|s| s.calls[0].nested[0].name = "cli-main".into()),
            "call `cli-main` is named twice"
        );
        assert!(broken(|s| s.calls[0].by = "../x".into()).starts_with("invalid participant id"));
        assert_eq!(
            broken(|s| s.faults[0].participant = "bridge".into()),
            "an error fault fails a call of `bridge` as it starts: its point is started:CALL with one of its calls"
        );
        assert_eq!(
            broken(|s| s.faults[0].kind = FaultKind::Abort),
            "an abort is a SIGINT to the initiator `cli`, not `copilot`"
        );
        assert_eq!(
            broken(|s| s.faults[0].at = Point::Started("nowhere".into())),
            "point `started:nowhere` names unknown call `nowhere`"
        );
        assert_eq!(
            broken(|s| s.expect.temps_gone.push("other.tmp".into())),
            "expect.temps_gone names unknown `other.tmp`"
        );
        assert_eq!(
            broken(|s| s.calls[0].temps = vec!["../x".into()]),
            "temp file `../x` must be a plain file name"
        );
    }
}
