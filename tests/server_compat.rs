//! The original's HTTP protocol on `tom-ledger serve`: requests built by hand from the
//! original's endpoint list, as its client sends them, against a real server process,
//! with the library reading and writing the same ledger directory meanwhile.

mod cli_common;
mod server_common;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use cli_common::Env;
use server_common::{Auth, Server};
use tom_dist_ledger::ledger::{CallOptions, OperationOptions};
use tom_dist_ledger::model::{OperationState, ParticipantState};
use tom_dist_ledger::{Connect, Ledger, OperationId, ParticipantId};

/// Longest wait for something pushed to the library (an abort, a failure).
const PUSH_BOUND: Duration = Duration::from_secs(30);

async fn library(env: &Env, who: &str) -> Ledger {
    Ledger::connect(Connect::local(&env.ledger).participant(ParticipantId::parse(who).expect("id")))
        .await
        .expect("library connects to the served directory")
}

fn op_id(v: &Value) -> OperationId {
    OperationId::parse(v["operationId"].as_str().expect("operationId")).expect("valid id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_client_runs_an_operation_that_the_library_sees() {
    let env = Env::new();
    let server = Server::start(&env, Auth::NoAuth);
    let created = server
        .ok(
            "/operation/create",
            json!({"participantId": "orig", "participantPid": 4242, "description": "compat run"}),
        )
        .await;
    assert_eq!(created["participantId"], "orig");
    assert_eq!(created["isInitiator"], true);
    assert_eq!(created["sessionId"], 1);
    assert!(
        created["startTime"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z'))
    );
    let op = op_id(&created);

    let lib = library(&env, "lib").await;
    let (data, archived) = lib.read_operation(&op).await.expect("read");
    assert!(!archived);
    assert_eq!(data.initiator_id.as_str(), "orig");
    assert_eq!(data.description.as_deref(), Some("compat run"));
    let orig = &data.participants[&ParticipantId::parse("orig").unwrap()];
    assert_eq!(orig.pid, 4242);
    let joined = lib
        .join_operation(&op, OperationOptions::new())
        .await
        .expect("library joins");

    // A call of the original client: its frame is its own, under its id and pid.
    let started = server
        .ok(
            "/call/start",
            json!({"operationId": op.as_str(), "sessionId": 1, "description": "step", "failOnCrash": true}),
        )
        .await;
    let call = started["callId"].as_str().expect("callId").to_string();
    assert!(call.starts_with("call_orig_"), "{call}");
    let (data, _) = lib.read_operation(&op).await.unwrap();
    let frame = data.call_frames.iter().find(|f| f.call_id.as_str() == call);
    let frame = frame.expect("the frame is in the ledger");
    assert_eq!((frame.participant_id.as_str(), frame.pid), ("orig", 4242));
    assert_eq!(frame.description.as_deref(), Some("step"));

    // Its heartbeat (only the operation id, as the original sends it) is stamped by the
    // server and judges the library participant alive.
    let before = data.participants[&ParticipantId::parse("orig").unwrap()].last_heartbeat;
    let beat = server
        .ok("/operation/heartbeat", json!({"operationId": op.as_str()}))
        .await;
    assert_eq!(beat["success"], true);
    assert_eq!(beat["abortFlag"], false);
    assert_eq!(beat["callFrameCount"], 1);
    assert_eq!(beat["staleParticipants"], json!([]));
    assert_eq!(beat["participants"], json!(["lib", "orig"]));
    let (data, _) = lib.read_operation(&op).await.unwrap();
    let orig = &data.participants[&ParticipantId::parse("orig").unwrap()];
    assert!(orig.last_heartbeat >= before);
    assert_eq!(data.call_frames[0].last_heartbeat, orig.last_heartbeat);

    let state = server
        .get(&format!("/operation/state?operationId={op}"))
        .await;
    assert_eq!(state.0, StatusCode::OK);
    assert_eq!(state.1["state"], "running");
    assert_eq!(state.1["callFrameCount"], 1);

    server
        .ok(
            "/call/end",
            json!({"operationId": op.as_str(), "callId": call}),
        )
        .await;
    server
        .ok(
            "/operation/log",
            json!({"operationId": op.as_str(), "message": "hello from the original", "level": "WARNING"}),
        )
        .await;
    let (data, _) = lib.read_operation(&op).await.unwrap();
    assert!(data.call_frames.is_empty());

    // The abort reaches the library participant through its change notification.
    server
        .ok("/operation/abort", json!({"operationId": op.as_str()}))
        .await;
    tokio::time::timeout(PUSH_BOUND, joined.aborted())
        .await
        .expect("the abort reaches the library");

    joined.leave(false).await.expect("library leaves");
    server
        .ok("/operation/complete", json!({"operationId": op.as_str()}))
        .await;
    let (data, archived) = lib.read_operation(&op).await.unwrap();
    assert!(archived, "completed operations are archived");
    assert_eq!(data.operation_state, OperationState::Completed);
    let log = std::fs::read_to_string(
        env.ledger
            .join("backup")
            .join(op.as_str())
            .join("operation.log"),
    )
    .expect("archived log");
    for line in [
        "OPERATION_CREATED initiator=orig",
        &format!("CALL_STARTED callId={call} participant=orig"),
        &format!("CALL_ENDED callId={call}"),
        "[WARNING] hello from the original",
        "ABORT_REQUESTED",
        "OPERATION_COMPLETED",
    ] {
        assert!(log.contains(line), "{line:?} in {log}");
    }
    // The original's answer for a ledger that is gone.
    let gone = server
        .ok("/operation/heartbeat", json!({"operationId": op.as_str()}))
        .await;
    assert_eq!(gone, json!({"success": false, "reason": "No ledger"}));
    lib.dispose().await;
    server.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_acts_for_the_client_that_sent_it() {
    let env = Env::new();
    let server = Server::start(&env, Auth::NoAuth);
    let op = op_id(
        &server
            .ok(
                "/operation/create",
                json!({"participantId": "first", "participantPid": 10}),
            )
            .await,
    );
    let o = op.as_str();
    let second = server
        .ok(
            "/operation/join",
            json!({"operationId": o, "participantId": "second", "participantPid": 20}),
        )
        .await;
    assert_eq!(second["isInitiator"], false);
    let session = second["sessionId"].as_u64().expect("session");
    assert_eq!(session, 2);

    // The second client's call is the second client's (the original wrote it under the
    // first client's id and pid).
    let call = server
        .ok(
            "/call/start",
            json!({"operationId": o, "sessionId": session}),
        )
        .await;
    let call = call["callId"].as_str().unwrap().to_string();
    assert!(call.starts_with("call_second_"), "{call}");

    // A beat naming nobody is not guessed among two clients; a named one refreshes only
    // its sender.
    let (status, refused) = server
        .post("/operation/heartbeat", json!({"operationId": o}))
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("several participants")
    );
    let lib = library(&env, "reader").await;
    let (before, _) = lib.read_operation(&op).await.unwrap();
    let (status, beat) = server
        .post_as("second", "/operation/heartbeat", json!({"operationId": o}))
        .await;
    assert_eq!(status, StatusCode::OK, "{beat}");
    let (after, _) = lib.read_operation(&op).await.unwrap();
    let first = ParticipantId::parse("first").unwrap();
    let second_id = ParticipantId::parse("second").unwrap();
    assert_eq!(
        after.participants[&first].last_heartbeat,
        before.participants[&first].last_heartbeat
    );
    assert!(
        after.participants[&second_id].last_heartbeat
            > before.participants[&second_id].last_heartbeat
    );

    // Another process taking the id of a live client is refused.
    let (status, taken) = server
        .post(
            "/operation/join",
            json!({"operationId": o, "participantId": "second", "participantPid": 99}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{taken}");
    assert!(
        taken["error"].as_str().unwrap().contains("already held"),
        "{taken}"
    );

    // Only the initiator completes, and not while a call runs; leaving with a running
    // call is refused unless it is cancelled.
    let (status, e) = server
        .post_as("second", "/operation/complete", json!({"operationId": o}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    let (status, e) = server
        .post("/operation/complete", json!({"operationId": o}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    assert!(e["error"].as_str().unwrap().contains(&call), "{e}");
    let (status, e) = server
        .post(
            "/operation/leave",
            json!({"operationId": o, "sessionId": session}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    server
        .ok(
            "/operation/leave",
            json!({"operationId": o, "sessionId": session, "cancelPendingCalls": true}),
        )
        .await;
    let (data, _) = lib.read_operation(&op).await.unwrap();
    assert!(
        data.call_frames.is_empty(),
        "the cancelled call's frame is gone"
    );
    assert!(
        !data.participants.contains_key(&second_id),
        "the second client left"
    );
    // Its session is over: a call under it is refused.
    let (status, e) = server
        .post(
            "/call/start",
            json!({"operationId": o, "sessionId": session}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{e}");
    // The flag is set from outside and cleared again, as the original allowed.
    server
        .ok("/operation/abort", json!({"operationId": o}))
        .await;
    let state = server
        .ok("/operation/state", json!({"operationId": o}))
        .await;
    assert_eq!(state["aborted"], true);
    server
        .ok(
            "/operation/abort",
            json!({"operationId": o, "value": false}),
        )
        .await;
    let state = server
        .ok("/operation/state", json!({"operationId": o}))
        .await;
    assert_eq!(state["aborted"], false);
    server
        .ok("/operation/complete", json!({"operationId": o}))
        .await;
    lib.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_library_runs_an_operation_that_an_original_client_drives_with_a_token() {
    let env = Env::new();
    let server = Server::start(&env, Auth::Token);
    let lib = library(&env, "lib").await;
    let op = lib
        .create_operation(OperationOptions::new().description("library run"))
        .await
        .expect("create");
    let id = op.operation_id().clone();
    let o = id.as_str();
    let call = op
        .start_call::<()>(CallOptions::new().description("lib step"))
        .await
        .expect("call");

    // Without the token: 401, whatever the path says.
    let bare = reqwest::Client::new();
    let sent = bare
        .post(format!("{}/operation/state", server.url))
        .json(&json!({"operationId": o}))
        .send()
        .await;
    let (status, _) = server_common::answer(sent).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, state) = server
        .post("/operation/state", json!({"operationId": o}))
        .await;
    assert_eq!(status, StatusCode::OK, "{state}");
    assert_eq!(state["state"], "running");
    assert_eq!(state["callFrameCount"], 1);
    assert_eq!(state["participants"], json!(["lib"]));

    let joined = server
        .ok(
            "/operation/join",
            json!({"operationId": o, "participantId": "orig", "participantPid": 7}),
        )
        .await;
    assert_eq!(joined["isInitiator"], false);
    let session = joined["sessionId"].as_u64().unwrap();
    let frame = server
        .ok(
            "/callframe/create",
            json!({"operationId": o, "callId": "orig_frame_1", "participantId": "orig"}),
        )
        .await;
    assert_eq!(frame["callId"], "orig_frame_1");
    assert_eq!(
        frame["data"]["callFrames"].as_array().map(Vec::len),
        Some(2)
    );
    let beat = server
        .ok("/operation/heartbeat", json!({"operationId": o}))
        .await;
    assert_eq!(beat["participants"], json!(["lib", "orig"]));
    assert_eq!(beat["callFrameCount"], 2);
    assert_eq!(beat["staleParticipants"], json!([]));
    assert_eq!(beat["sessionId"], session);

    // The library's complete waits for the other participant's frame.
    call.end(()).await.expect("end");
    let refused = op
        .complete()
        .await
        .expect_err("another participant's frame is open");
    assert!(refused.to_string().contains("orig_frame_1"), "{refused}");
    let deleted = server
        .ok(
            "/callframe/delete",
            json!({"operationId": o, "callId": "orig_frame_1"}),
        )
        .await;
    assert_eq!(
        deleted["data"]["callFrames"].as_array().map(Vec::len),
        Some(0)
    );
    server
        .ok(
            "/operation/leave",
            json!({"operationId": o, "sessionId": session}),
        )
        .await;

    // An abort through the original's endpoint reaches the library initiator.
    server
        .ok("/operation/abort", json!({"operationId": o}))
        .await;
    tokio::time::timeout(PUSH_BOUND, op.aborted())
        .await
        .expect("the abort reaches the library");
    op.complete().await.expect("complete");
    let gone = server
        .ok("/operation/heartbeat", json!({"operationId": o}))
        .await;
    assert_eq!(gone["success"], false);
    lib.dispose().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_call_fails_the_operation_and_a_restarted_server_knows_every_client() {
    let env = Env::new();
    let server = Server::start(&env, Auth::NoAuth);
    let op = op_id(
        &server
            .ok("/operation/create", json!({"participantId": "orig"}))
            .await,
    );
    let o = op.as_str();
    let lib = library(&env, "lib").await;
    let joined = lib
        .join_operation(&op, OperationOptions::new())
        .await
        .unwrap();
    let first = server
        .ok("/call/start", json!({"operationId": o, "sessionId": 1}))
        .await;
    let second = server
        .ok(
            "/call/start",
            json!({"operationId": o, "sessionId": 1, "failOnCrash": true}),
        )
        .await;
    server.stop();

    // Nothing of the operation lived in the old server's memory.
    let server = Server::start(&env, Auth::NoAuth);
    server
        .ok(
            "/call/end",
            json!({"operationId": o, "callId": first["callId"]}),
        )
        .await;
    let beat = server
        .ok("/operation/heartbeat", json!({"operationId": o}))
        .await;
    assert_eq!(beat["callFrameCount"], 1);
    server
        .ok(
            "/call/fail",
            json!({"operationId": o, "callId": second["callId"], "error": "disk full"}),
        )
        .await;
    let info = tokio::time::timeout(PUSH_BOUND, joined.failed())
        .await
        .expect("the failure reaches the library");
    let reason = info.reason.unwrap_or_default();
    assert!(reason.contains("disk full"), "{reason}");
    let (data, _) = lib.read_operation(&op).await.unwrap();
    assert_ne!(data.operation_state, OperationState::Running);
    let orig = &data.participants[&ParticipantId::parse("orig").unwrap()];
    assert_eq!(orig.state, ParticipantState::Active);
    let (status, e) = server
        .post("/call/start", json!({"operationId": o, "sessionId": 1}))
        .await;
    assert_eq!(
        status,
        StatusCode::CONFLICT,
        "no call starts in a failing operation: {e}"
    );
    lib.dispose().await;
}
