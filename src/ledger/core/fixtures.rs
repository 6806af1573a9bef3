//! Building blocks of the core's unit tests.

use chrono::TimeZone;

use crate::clock::Timestamp;
use crate::ids::{CallId, OperationId, ParticipantId};
use crate::model::{
    CallFrame, FrameState, LedgerData, Participant, ParticipantState, ProcessRecord, TempResource,
};

use super::Here;

pub fn at(secs: i64) -> Timestamp {
    chrono::Utc
        .timestamp_opt(1_700_000_000 + secs, 0)
        .single()
        .expect("valid time")
}

pub fn pid(s: &str) -> ParticipantId {
    ParticipantId::parse(s).expect("valid id")
}

pub fn call(s: &str) -> CallId {
    CallId::parse(s).expect("valid id")
}

pub fn here() -> Here {
    Here {
        host: "here".into(),
        uid: 1000,
    }
}

pub fn participant(os_pid: i32, epoch: u64) -> Participant {
    Participant {
        pid: os_pid,
        start_ticks: Some(7),
        host: "here".into(),
        boot_id: Some("boot".into()),
        pid_namespace: Some(1),
        uid: Some(1000),
        epoch,
        last_heartbeat: at(0),
        joined_at: at(0),
        state: ParticipantState::Active,
        spawned_by: None,
        paused_at: None,
    }
}

/// An operation created by `init` (epoch 1), with `others` joined at epochs 2, 3, ...
pub fn operation(init: &str, others: &[&str]) -> LedgerData {
    let mut data = LedgerData::new(OperationId::parse("op").expect("id"), pid(init), at(0));
    data.participants.insert(pid(init), participant(100, 1));
    data.next_epoch = 2;
    for (n, who) in others.iter().enumerate() {
        let epoch = data.next_epoch;
        data.participants
            .insert(pid(who), participant(101 + n as i32, epoch));
        data.next_epoch += 1;
    }
    data
}

pub fn frame(owner: &str, id: &str, fail_on_crash: bool) -> CallFrame {
    CallFrame {
        participant_id: pid(owner),
        call_id: call(id),
        pid: 100,
        start_time: at(0),
        last_heartbeat: at(0),
        state: FrameState::Active,
        description: None,
        resources: Vec::new(),
        fail_on_crash,
        session_id: Some(1),
        parent_call_id: None,
        process: None,
    }
}

pub fn worker(os_pid: i32) -> ProcessRecord {
    ProcessRecord {
        pid: os_pid,
        pgid: os_pid,
        start_ticks: 9,
        boot_id: Some("boot".into()),
        pid_namespace: Some(1),
        command: vec!["w".into()],
        cgroup: None,
    }
}

pub fn temp(path: &str, owner: Option<&str>) -> TempResource {
    TempResource {
        path: path.into(),
        owner: 100,
        registered_at: at(0),
        owner_id: owner.map(pid),
    }
}
