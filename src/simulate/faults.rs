//! Injecting a scenario's faults when the run reaches their points: real signals
//! (SIGKILL, SIGSTOP, SIGINT), a command that fails a call, or, for a timeout, nothing
//! at all (the participant is never told to answer).

use crate::process::Signal;

use super::observed::Injected;
use super::protocol::{Command, now_nanos};
use super::runner::Run;
use super::scenario::{Fault, FaultKind, Point};

impl Run<'_> {
    pub(super) async fn inject_at(&mut self, point: &Point) {
        let faults: Vec<(usize, Fault)> = self
            .scenario
            .faults
            .iter()
            .enumerate()
            .filter(|(i, f)| &f.at == point && !self.injected.contains(i))
            .map(|(i, f)| (i, f.clone()))
            .collect();
        for (i, fault) in faults {
            self.injected.insert(i);
            // Taken before the signal goes: whatever it causes happens after this.
            let at = now_nanos();
            let delivered = self.inject(&fault.participant, &fault.kind, point).await;
            self.observed.faults.push(Injected {
                participant: fault.participant.clone(),
                kind: fault.kind.clone(),
                point: point.to_string(),
                at,
                delivered,
            });
        }
    }

    /// Do it: a real signal, or a command that fails the call, or nothing (a timeout:
    /// the participant is simply never told to answer).
    pub(super) async fn inject(&mut self, who: &str, kind: &FaultKind, point: &Point) -> bool {
        let Some(proc) = self.procs.get_mut(who) else {
            self.observed.problems.push(format!(
                "fault for `{who}` at {point}: it was never started"
            ));
            return false;
        };
        match kind {
            FaultKind::Crash => proc.signal(Signal::SIGKILL),
            FaultKind::Abort => proc.signal(Signal::SIGINT),
            FaultKind::Hang => proc.hang().await,
            FaultKind::Timeout => true,
            FaultKind::Error(message) => {
                let call = match point {
                    Point::Started(c) | Point::Ended(c) | Point::Cleanup(c) => c.clone(),
                    Point::Joined(_) => return false,
                };
                proc.send(&Command::Fail {
                    call,
                    message: message.clone(),
                })
                .await
            }
        }
    }
}
