//! The result of a scenario and how it is shown: a table with pass/fail, detection and
//! cleanup latency per scenario (and each mismatch, expected versus seen, below it), or
//! one JSON object per scenario.

use serde_json::{Value, json};

use super::observed::Observed;
use super::protocol::Event;

/// One scenario's run, checked.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub name: String,
    pub observed: Observed,
    /// Expected versus seen, one line each; empty when the scenario passed.
    pub mismatches: Vec<String>,
}

impl Outcome {
    pub fn passed(&self) -> bool {
        self.mismatches.is_empty()
    }
}

fn ms(value: Option<f64>) -> String {
    match value {
        Some(v) => format!("{v:.0} ms"),
        None => "-".into(),
    }
}

/// The table of a run: a header, one row per scenario, then every mismatch.
pub fn table(outcomes: &[Outcome]) -> String {
    let width = outcomes
        .iter()
        .map(|o| o.name.len())
        .chain(["SCENARIO".len()])
        .max()
        .unwrap_or(8);
    let mut out = format!(
        "{:<width$}  {:<6}  {:>10}  {:>10}  {:>10}\n",
        "SCENARIO", "RESULT", "DETECTION", "CLEANUP", "TOTAL"
    );
    for o in outcomes {
        out.push_str(&format!(
            "{:<width$}  {:<6}  {:>10}  {:>10}  {:>10}\n",
            o.name,
            if o.passed() { "pass" } else { "FAIL" },
            ms(o.observed.detection_ms()),
            ms(o.observed.cleanup_ms()),
            ms(Some(o.observed.duration_ms())),
        ));
    }
    let passed = outcomes.iter().filter(|o| o.passed()).count();
    out.push_str(&format!("{passed} of {} passed\n", outcomes.len()));
    for o in outcomes.iter().filter(|o| !o.passed()) {
        out.push_str(&format!("\n{}:\n", o.name));
        for m in &o.mismatches {
            out.push_str(&format!("  {m}\n"));
        }
        for note in &o.observed.notes {
            out.push_str(&format!("  note: {note}\n"));
        }
        for (who, lines) in &o.observed.stderr {
            for line in lines {
                out.push_str(&format!("  stderr of {who}: {line}\n"));
            }
        }
    }
    out
}

/// One scenario as one JSON object.
pub fn json(o: &Outcome) -> Value {
    let seen = &o.observed;
    let who = |pick: fn(&Event) -> bool| -> Vec<String> { seen.who(pick).into_iter().collect() };
    json!({
        "scenario": o.name,
        "passed": o.passed(),
        "ledger": seen.ledger,
        "state": seen.state.map(|s| s.to_string()),
        "reason": seen.reason,
        "detection_ms": seen.detection_ms(),
        "cleanup_ms": seen.cleanup_ms(),
        "duration_ms": seen.duration_ms(),
        "faults": seen.faults.iter().map(|f| json!({
            "participant": f.participant,
            "kind": f.kind.name(),
            "at": f.point,
            "delivered": f.delivered,
        })).collect::<Vec<_>>(),
        "saw_failed": who(|e| matches!(e, Event::Failed { .. })),
        "saw_aborted": who(|e| matches!(e, Event::Aborted { .. })),
        "exits": seen.ended.iter().map(|(p, e)| (p.clone(), Value::String(e.to_string()))).collect::<serde_json::Map<_, _>>(),
        "temps": seen.temps_exist.iter().map(|(t, exists)| (t.clone(), Value::String(if *exists { "kept" } else { "gone" }.into()))).collect::<serde_json::Map<_, _>>(),
        "mismatches": o.mismatches,
        "notes": seen.notes,
    })
}
