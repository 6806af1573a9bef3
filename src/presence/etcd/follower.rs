//! Following one operation's presence keys: the markers of who is alive, and an expired
//! event for each registered participant whose key is deleted.

use std::collections::HashMap;
use std::sync::Arc;

use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::mpsc;

use super::{Marker, RESUME_PAUSE, Registry, Shared};
use crate::ids::{OperationId, ParticipantId};
use crate::model::ParticipantState;
use crate::presence::PresenceEvent;

/// Follows one operation's presence keys: keeps the markers, announces deletions.
pub(super) struct KeyFollower {
    pub shared: Arc<Shared>,
    pub op: OperationId,
    pub me: ParticipantId,
    pub known: Registry,
    pub events: mpsc::UnboundedSender<PresenceEvent>,
}

impl KeyFollower {
    pub async fn run(self) {
        loop {
            let generation = self.shared.cluster.current_generation();
            self.follow().await;
            self.shared.cluster.heal(generation).await;
            tokio::time::sleep(RESUME_PAUSE).await;
        }
    }

    fn participant_of(&self, key: &[u8]) -> Option<ParticipantId> {
        let dir = self.shared.keys.presence(&self.op);
        let name = std::str::from_utf8(key).ok()?.strip_prefix(dir.as_str())?;
        ParticipantId::parse(name).ok()
    }

    fn set(&self, id: ParticipantId, marker: Option<Marker>) -> Option<Marker> {
        let mut markers = self
            .shared
            .markers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let of_op = markers.entry(self.op.clone()).or_default();
        match marker {
            Some(m) => of_op.insert(id, m),
            None => of_op.remove(&id),
        }
    }

    /// A key gone: its registration expired (or left, which the declaration sees).
    fn gone(&self, id: ParticipantId, marker: Marker) {
        if id == self.me {
            return;
        }
        let registered = self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .is_some_and(|(epoch, state)| {
                *epoch == marker.epoch && *state == ParticipantState::Active
            });
        if registered {
            let _ = self.events.send(PresenceEvent::Expired {
                participant: id,
                epoch: marker.epoch,
                reason: "its etcd lease expired".into(),
            });
        }
    }

    /// Read the keys, then watch them from that revision until the stream breaks.
    async fn follow(&self) {
        let prefix = self.shared.keys.presence(&self.op);
        let listed = self
            .shared
            .cluster
            .run(|mut c| {
                let prefix = prefix.clone();
                async move { c.get(prefix, Some(GetOptions::new().with_prefix())).await }
            })
            .await;
        let Ok(listed) = listed else { return };
        let revision = listed.header().map_or(0, |h| h.revision());
        let mut now: HashMap<ParticipantId, Marker> = HashMap::new();
        for kv in listed.kvs() {
            if let (Some(id), Ok(m)) = (
                self.participant_of(kv.key()),
                serde_json::from_slice::<Marker>(kv.value()),
            ) {
                now.insert(id, m);
            }
        }
        // Keys that went while the watch was down.
        let before = self
            .shared
            .markers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.op.clone(), now.clone())
            .unwrap_or_default();
        for (id, marker) in before {
            if !now.contains_key(&id) {
                self.gone(id, marker);
            }
        }
        let mut client = self.shared.cluster.client();
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let Ok(mut stream) = client.watch(prefix.as_bytes(), Some(options)).await else {
            return;
        };
        while let Ok(Some(response)) = stream.message().await {
            if response.canceled() {
                return;
            }
            for event in response.events() {
                let Some(kv) = event.kv() else { continue };
                let Some(id) = self.participant_of(kv.key()) else {
                    continue;
                };
                match event.event_type() {
                    EventType::Put => {
                        if let Ok(m) = serde_json::from_slice::<Marker>(kv.value()) {
                            self.set(id, Some(m));
                        }
                    }
                    EventType::Delete => {
                        if let Some(marker) = self.set(id.clone(), None) {
                            self.gone(id, marker);
                        }
                    }
                }
            }
        }
    }
}
