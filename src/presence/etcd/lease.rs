//! The lease of one connection: kept alive every third of its TTL, granted anew (with
//! every key put again) when found gone; the keys of the operations this participant
//! takes part in are bound to it.

use std::sync::Arc;
use std::time::Duration;

use etcd_client::PutOptions;

use super::{LeaseState, MIN_TTL_SECS, Marker, Shared};

/// Keep the lease alive every third of the TTL; grant it anew (and put every key again)
/// when it was found gone.
pub(super) async fn keep_lease(shared: std::sync::Weak<Shared>) {
    loop {
        let Some(s) = shared.upgrade() else { return };
        let ttl = ttl_of(&s);
        let pause = Duration::from_millis((ttl as u64 * 1000 / 3).max(100));
        {
            let mut lease = s.lease.lock().await;
            if let Some(id) = lease.id {
                let renewed = s
                    .cluster
                    .run_within(pause, |mut c| async move { c.lease_keep_alive(id).await })
                    .await;
                if renewed.is_err() {
                    tracing::debug!("etcd lease {id} could not be renewed: {renewed:?}");
                    if lease_gone(&s, id).await {
                        lease.id = None;
                    }
                }
            }
            if lease.id.is_none()
                && !lease.keys.is_empty()
                && let Err(e) = grant(&s, &mut lease).await
            {
                tracing::warn!("etcd presence: cannot grant a lease: {e}");
            }
        }
        drop(s);
        tokio::time::sleep(pause).await;
    }
}

fn ttl_of(s: &Shared) -> i64 {
    let secs = s.judge.stale_threshold().as_secs_f64().ceil() as i64;
    secs.max(MIN_TTL_SECS)
}

/// Whether etcd says the lease no longer exists (as opposed to being unreachable).
async fn lease_gone(s: &Shared, id: i64) -> bool {
    let asked = s
        .cluster
        .run_within(Duration::from_secs(1), |mut c| async move {
            c.lease_time_to_live(id, None).await
        })
        .await;
    matches!(asked, Ok(r) if r.ttl() <= 0)
}

/// Grant a new lease and put every key on it.
async fn grant(s: &Shared, lease: &mut LeaseState) -> crate::error::Result<()> {
    let ttl = ttl_of(s);
    let granted = s
        .cluster
        .run(|mut c| async move { c.lease_grant(ttl, None).await })
        .await?;
    let id = granted.id();
    lease.id = Some(id);
    for (key, value) in &lease.keys {
        put_on(s, id, key.clone(), value.clone()).await?;
    }
    Ok(())
}

async fn put_on(s: &Shared, id: i64, key: String, value: Vec<u8>) -> crate::error::Result<()> {
    s.cluster
        .run(|mut c| {
            let (key, value) = (key.clone(), value.clone());
            async move {
                c.put(key, value, Some(PutOptions::new().with_lease(id)))
                    .await
            }
        })
        .await
        .map(drop)
}

/// Put this participant's key of one operation on the lease (granting it first).
pub(super) async fn register(s: Arc<Shared>, key: String, marker: Marker) {
    let Ok(value) = serde_json::to_vec(&marker) else {
        return;
    };
    let mut lease = s.lease.lock().await;
    lease.keys.insert(key.clone(), value.clone());
    let result = match lease.id {
        Some(id) => put_on(&s, id, key, value).await,
        None => grant(&s, &mut lease).await,
    };
    if let Err(e) = result {
        tracing::warn!("etcd presence: cannot register: {e}");
    }
}

/// Delete this participant's key of one operation (it left).
pub(super) async fn unregister(s: Arc<Shared>, key: String) {
    let mut lease = s.lease.lock().await;
    lease.keys.remove(&key);
    let _ = s
        .cluster
        .run_within(Duration::from_secs(5), |mut c| {
            let key = key.clone();
            async move { c.delete(key, None).await }
        })
        .await;
}
