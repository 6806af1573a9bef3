//! The checker: what a scenario expected against what its run saw. Each difference is
//! one line, `what: expected X, saw Y`.

use std::collections::BTreeSet;

use super::observed::{Ended, Observed};
use super::protocol::Event;
use super::scenario::{Expectation, Scenario};

/// Every difference between the expectation and the run; empty when it passed.
pub fn check(scenario: &Scenario, seen: &Observed) -> Vec<String> {
    let expect = &scenario.expect;
    let mut out = Vec::new();
    check_state(expect, seen, &mut out);
    check_seen(expect, seen, &mut out);
    check_order(expect, seen, &mut out);
    check_temps(expect, seen, &mut out);
    check_exits(expect, seen, &mut out);
    check_concurrent(expect, seen, &mut out);
    for problem in &seen.problems {
        out.push(format!("run: {problem}"));
    }
    out
}

fn check_state(expect: &Expectation, seen: &Observed, out: &mut Vec<String>) {
    match seen.state {
        Some(state) if state == expect.state => {}
        Some(state) => out.push(format!(
            "final state: expected {}, saw {}{}",
            expect.state,
            state,
            seen.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )),
        None => out.push(format!(
            "final state: expected {}, saw no operation",
            expect.state
        )),
    }
    if let Some(text) = &expect.reason_contains {
        match &seen.reason {
            Some(reason) if reason.contains(text.as_str()) => {}
            Some(reason) => out.push(format!(
                "failure reason: expected it to contain `{text}`, saw `{reason}`"
            )),
            None => out.push(format!(
                "failure reason: expected it to contain `{text}`, saw none recorded"
            )),
        }
    }
}

fn names(set: &BTreeSet<String>) -> String {
    if set.is_empty() {
        "nobody".into()
    } else {
        set.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Who saw `failed()` and `aborted()`, among the participants that were started and
/// not faulted (a killed, stopped or interrupted participant is not judged).
fn check_seen(expect: &Expectation, seen: &Observed, out: &mut Vec<String>) {
    let faulted = seen.faulted();
    let judged = |set: BTreeSet<String>| -> BTreeSet<String> {
        set.into_iter().filter(|p| !faulted.contains(p)).collect()
    };
    for (what, expected, pick) in [
        (
            "saw failed()",
            &expect.saw_failed,
            (|e: &Event| matches!(e, Event::Failed { .. })) as fn(&Event) -> bool,
        ),
        ("saw aborted()", &expect.saw_aborted, |e: &Event| {
            matches!(e, Event::Aborted { .. })
        }),
    ] {
        let expected_all: BTreeSet<String> = judged(expected.iter().cloned().collect());
        let actual = judged(seen.who(pick));
        if actual != expected_all {
            out.push(format!(
                "{what}: expected {}, saw {}",
                names(&expected_all),
                names(&actual)
            ));
        }
    }
}

/// When a named observation happened (Unix nanoseconds).
fn when(seen: &Observed, entry: &str) -> Option<u64> {
    match entry.split_once(':') {
        None if entry == "fault" => seen.first_fault(),
        None if entry == "archived" => seen.archived_at,
        Some(("failed", p)) => seen.first(p, |e| matches!(e, Event::Failed { .. })),
        Some(("aborted", p)) => seen.first(p, |e| matches!(e, Event::Aborted { .. })),
        Some(("detected", p)) => seen.first(p, |e| matches!(e, Event::Detected { .. })),
        _ => None,
    }
}

fn check_order(expect: &Expectation, seen: &Observed, out: &mut Vec<String>) {
    let mut previous: Option<(&str, u64)> = None;
    for entry in &expect.order {
        let Some(at) = when(seen, entry) else {
            out.push(format!("order: expected `{entry}` to happen, it never did"));
            return;
        };
        if let Some((before, t)) = previous
            && at < t
        {
            out.push(format!(
                "order: expected `{before}` before `{entry}`, saw `{entry}` {:.1} ms earlier",
                (t - at) as f64 / 1e6
            ));
        }
        previous = Some((entry, at));
    }
}

fn check_temps(expect: &Expectation, seen: &Observed, out: &mut Vec<String>) {
    for name in &expect.temps_gone {
        if seen.temps_exist.get(name).copied().unwrap_or(false) {
            out.push(format!("temp `{name}`: expected gone, saw it still there"));
        }
    }
    for name in &expect.temps_kept {
        if !seen.temps_exist.get(name).copied().unwrap_or(false) {
            out.push(format!("temp `{name}`: expected kept, saw it gone"));
        }
    }
}

fn check_exits(expect: &Expectation, seen: &Observed, out: &mut Vec<String>) {
    for (name, ended) in &seen.ended {
        match (expect.exits.get(name), ended) {
            (_, Ended::Leftover) => out.push(format!(
                "process `{name}`: expected it gone, saw it still running at the end (killed)"
            )),
            (Some(want), Ended::Exit(got)) if want == got => {}
            (Some(want), Ended::Exit(got)) => {
                out.push(format!("exit of `{name}`: expected {want}, saw {got}"))
            }
            (None, Ended::Exit(got)) => out.push(format!(
                "exit of `{name}`: expected it never to start, saw it end with {got}"
            )),
        }
    }
    for (name, want) in &expect.exits {
        if !seen.ended.contains_key(name) {
            out.push(format!(
                "exit of `{name}`: expected {want}, saw it never started"
            ));
        }
    }
}

fn check_concurrent(expect: &Expectation, seen: &Observed, out: &mut Vec<String>) {
    if expect.concurrent.is_empty() {
        return;
    }
    let wanted: BTreeSet<String> = expect.concurrent.iter().cloned().collect();
    if !seen.open_together.iter().any(|open| wanted.is_subset(open)) {
        let best = seen
            .open_together
            .iter()
            .map(names)
            .collect::<Vec<_>>()
            .join("; ");
        out.push(format!(
            "concurrent calls: expected {} open at once, saw {}",
            names(&wanted),
            if best.is_empty() {
                "no moment with them all open".into()
            } else {
                best
            }
        ));
    }
}
