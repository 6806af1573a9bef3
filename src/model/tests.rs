use super::*;
use crate::model::time;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/original/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn reads_an_original_running_operation() {
    let data = LedgerData::from_json(&fixture("running.operation.json")).unwrap();
    assert_eq!(
        data.operation_id.as_str(),
        "20260122T14:30:45.123-cli-a1b2c3d4"
    );
    assert_eq!(data.initiator_id.as_str(), "cli");
    assert_eq!(data.operation_state, OperationState::Running);
    assert_eq!(data.call_frames.len(), 2);
    let bridge = &data.call_frames[1];
    assert_eq!(bridge.pid, -1);
    assert_eq!(bridge.state, FrameState::CleaningUp);
    assert!(!bridge.fail_on_crash);
    assert_eq!(bridge.description, None);
    assert_eq!(data.temp_resources[0].owner, 222);
    assert_eq!(data.seq, 0);
    assert!(data.participants.is_empty());
    // Local time without offset is read as local time.
    assert_eq!(
        data.start_time,
        time::parse("2026-01-22T14:30:45.123456").unwrap()
    );
}

#[test]
fn reads_the_legacy_stack_key_and_applies_defaults() {
    let data = LedgerData::from_json(&fixture("legacy_stack.operation.json")).unwrap();
    assert_eq!(data.initiator_id.as_str(), "unknown");
    assert_eq!(data.operation_state, OperationState::Running);
    assert!(!data.aborted);
    assert_eq!(data.call_frames.len(), 1);
    let frame = &data.call_frames[0];
    assert!(
        frame.fail_on_crash,
        "failOnCrash defaults to true when missing"
    );
    assert_eq!(frame.state, FrameState::Active);
    assert!(frame.resources.is_empty());
    assert!(data.temp_resources.is_empty());
    // Writing never emits the legacy key.
    let out = String::from_utf8(data.to_json()).unwrap();
    assert!(out.contains("\"callFrames\""));
    assert!(!out.contains("\"stack\""));
}

#[test]
fn reads_null_state_and_timestamps() {
    let data = LedgerData::from_json(&fixture("cleanup.operation.json")).unwrap();
    assert_eq!(data.operation_state, OperationState::Running);
    assert!(data.aborted);
    assert_eq!(data.call_frames[0].state, FrameState::Crashed);
    assert!(data.detection_timestamp.is_some());
    assert!(data.removal_timestamp.is_none());
}

#[test]
fn round_trips_with_original_field_names_and_utc() {
    let now = time::parse("2026-03-01T10:00:00.250Z").unwrap();
    let op = OperationId::parse("op1").unwrap();
    let cli = ParticipantId::parse("cli").unwrap();
    let mut data = LedgerData::new(op.clone(), cli.clone(), now);
    data.description = Some("build".into());
    data.call_frames.push(CallFrame {
        participant_id: cli.clone(),
        call_id: CallId::parse("call_cli_1_abcd").unwrap(),
        pid: 42,
        start_time: now,
        last_heartbeat: now,
        state: FrameState::Active,
        description: None,
        resources: vec![],
        fail_on_crash: false,
        session_id: Some(1),
        parent_call_id: None,
        process: Some(ProcessRecord {
            pid: 43,
            pgid: 43,
            start_ticks: 99,
            boot_id: None,
            pid_namespace: None,
            command: vec!["true".into()],
            cgroup: None,
        }),
    });
    data.temp_resources.push(TempResource {
        path: "/tmp/x".into(),
        owner: 42,
        registered_at: now,
        owner_id: Some(cli),
    });
    let json = String::from_utf8(data.to_json()).unwrap();
    // Streamed (as the file store writes it), the same bytes.
    let mut streamed = Vec::new();
    data.write_json(std::io::BufWriter::with_capacity(7, &mut streamed))
        .unwrap();
    assert_eq!(streamed, json.as_bytes());
    for key in [
        "\"operationId\"",
        "\"initiatorId\"",
        "\"startTime\": \"2026-03-01T10:00:00.250Z\"",
        "\"operationState\": \"running\"",
        "\"aborted\"",
        "\"lastHeartbeat\"",
        "\"callFrames\"",
        "\"failOnCrash\": false",
        "\"tempResources\"",
        "\"registeredAt\"",
        "\"detectionTimestamp\": null",
        "\"removalTimestamp\": null",
        "\"state\": \"active\"",
    ] {
        assert!(json.contains(key), "missing {key} in {json}");
    }
    assert_eq!(LedgerData::from_json(json.as_bytes()).unwrap(), data);
    assert!(!data.is_empty());
}

#[test]
fn refuses_bad_ids_and_garbage_in_files() {
    let bad = br#"{"operationId": "../../etc/passwd"}"#;
    let err = LedgerData::from_json(bad).unwrap_err().to_string();
    assert!(err.contains("invalid operation id"), "{err}");
    assert!(LedgerData::from_json(b"{\"operationId\": \"x\", \"callFrames\": [{").is_err());
    assert!(LedgerData::from_json(b"").is_err());
    let bad_ts = br#"{"operationId": "x", "startTime": "yesterday"}"#;
    assert!(
        LedgerData::from_json(bad_ts)
            .unwrap_err()
            .to_string()
            .contains("yesterday")
    );
}

#[test]
fn frames_are_removed_by_id_last_first() {
    let now = time::now();
    let p = ParticipantId::parse("p").unwrap();
    let mut data = LedgerData::new(OperationId::parse("o").unwrap(), p.clone(), now);
    let frame = |id: &str, desc: &str| CallFrame {
        participant_id: p.clone(),
        call_id: CallId::parse(id).unwrap(),
        pid: 1,
        start_time: now,
        last_heartbeat: now,
        state: FrameState::Active,
        description: Some(desc.into()),
        resources: vec![],
        fail_on_crash: true,
        session_id: None,
        parent_call_id: None,
        process: None,
    };
    data.call_frames.push(frame("a", "first"));
    data.call_frames.push(frame("b", "b"));
    data.call_frames.push(frame("a", "second"));
    let removed = data.remove_frame(&CallId::parse("a").unwrap()).unwrap();
    assert_eq!(removed.description.as_deref(), Some("second"));
    assert_eq!(data.call_frames.len(), 2);
    assert!(data.remove_frame(&CallId::parse("zz").unwrap()).is_none());
}
