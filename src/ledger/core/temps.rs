//! Temp resources in the ledger: registering, unregistering, and the one sweep of those
//! this host may delete.
//!
//! Whose path is it to delete? One registered by a participant on another host, or as
//! another user, is not ours; nor is one whose owner is not in the registry (the record
//! names someone nobody can vouch for). Operations written by the original record no
//! owners and no registry: their paths are handed over (the removal function still
//! applies the path rules).

use crate::clock::Timestamp;
use crate::ids::ParticipantId;
use crate::model::{LedgerData, TempResource};

use super::Here;

/// Record a temp resource of `me` (once per path).
pub(crate) fn register(
    data: &mut LedgerData,
    path: &str,
    pid: i64,
    me: &ParticipantId,
    now: Timestamp,
) {
    if !data.temp_resources.iter().any(|t| t.path == path) {
        data.temp_resources.push(TempResource {
            path: path.to_string(),
            owner: pid,
            registered_at: now,
            owner_id: Some(me.clone()),
        });
    }
}

/// Forget a temp resource without deleting it.
pub(crate) fn unregister(data: &mut LedgerData, path: &str) {
    data.temp_resources.retain(|t| t.path != path);
}

/// What a sweep took out of the ledger, and what it left there.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Stored paths to hand to the removal function (gone from the ledger).
    pub delete: Vec<String>,
    /// Paths left in the ledger, one note each with the reason.
    pub kept: Vec<String>,
}

/// Take out of the ledger the temp resources this host may delete: those of `owner`, or
/// all when `None`. The others stay, with a note saying why.
pub(crate) fn sweep(data: &mut LedgerData, owner: Option<&ParticipantId>, here: &Here) -> Swept {
    let (theirs, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut data.temp_resources)
        .into_iter()
        .partition(|t| owner.is_none_or(|o| t.owner_id.as_ref() == Some(o)));
    data.temp_resources = rest;
    let (delete, keep) = split(data, theirs, here);
    let mut swept = Swept {
        delete: delete.into_iter().map(|t| t.path).collect(),
        kept: Vec::new(),
    };
    for (t, why) in keep {
        swept.kept.push(format!(
            "temp resource `{}`: {why}",
            TempResource::display_path(&t.path)
        ));
        data.temp_resources.push(t);
    }
    swept
}

/// Split temp resources into those this host may delete and those it may not (with the
/// reason), changing nothing.
pub(crate) fn split(
    data: &LedgerData,
    temps: Vec<TempResource>,
    here: &Here,
) -> (Vec<TempResource>, Vec<(TempResource, String)>) {
    let mut delete = Vec::new();
    let mut keep = Vec::new();
    for t in temps {
        match why_not_ours(data, &t, here) {
            None => delete.push(t),
            Some(why) => keep.push((t, why)),
        }
    }
    (delete, keep)
}

fn why_not_ours(data: &LedgerData, t: &TempResource, here: &Here) -> Option<String> {
    if data.participants.is_empty() {
        return None;
    }
    let owner = t.owner_id.as_ref()?;
    let Some(p) = data.participants.get(owner) else {
        return Some(format!("registered by {owner}, who is not a participant"));
    };
    if !p.host.is_empty() && p.host != here.host {
        return Some(format!("registered on host `{}`", p.host));
    }
    match p.uid {
        Some(uid) if uid != here.uid => Some(format!("registered by user {uid}")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::core::fixtures::*;

    fn paths(temps: &[TempResource]) -> Vec<&str> {
        temps.iter().map(|t| t.path.as_str()).collect()
    }

    #[test]
    fn registering_twice_records_once_and_unregistering_forgets() {
        let mut data = operation("init", &[]);
        register(&mut data, "/t/a", 100, &pid("init"), at(1));
        register(&mut data, "/t/a", 100, &pid("init"), at(2));
        register(&mut data, "/t/b", 100, &pid("init"), at(3));
        assert_eq!(paths(&data.temp_resources), ["/t/a", "/t/b"]);
        assert_eq!(data.temp_resources[0].registered_at, at(1));
        assert_eq!(data.temp_resources[0].owner_id, Some(pid("init")));
        unregister(&mut data, "/t/a");
        assert_eq!(paths(&data.temp_resources), ["/t/b"]);
    }

    #[test]
    fn only_temps_of_this_host_and_user_are_swept() {
        let mut data = operation("a", &["remote", "root"]);
        data.participants.get_mut(&pid("remote")).unwrap().host = "there".into();
        data.participants.get_mut(&pid("root")).unwrap().uid = Some(0);
        data.temp_resources = vec![
            temp("/t/mine", Some("a")),
            temp("/t/remote", Some("remote")),
            temp("/t/root", Some("root")),
            temp("/t/stranger", Some("stranger")),
            temp("/t/unowned", None),
        ];
        let swept = sweep(&mut data, None, &here());
        assert_eq!(swept.delete, ["/t/mine", "/t/unowned"]);
        assert_eq!(swept.kept.len(), 3);
        assert!(swept.kept[0].contains("host `there`"), "{:?}", swept.kept);
        assert!(swept.kept[1].contains("user 0"));
        assert!(swept.kept[2].contains("not a participant"));
        assert_eq!(
            paths(&data.temp_resources),
            ["/t/remote", "/t/root", "/t/stranger"],
            "what is not ours stays recorded"
        );
    }

    #[test]
    fn a_sweep_for_one_owner_leaves_the_others() {
        let mut data = operation("a", &["b"]);
        data.temp_resources = vec![temp("/t/a", Some("a")), temp("/t/b", Some("b"))];
        let swept = sweep(&mut data, Some(&pid("b")), &here());
        assert_eq!(swept.delete, ["/t/b"]);
        assert_eq!(paths(&data.temp_resources), ["/t/a"]);
        // A dead owner on another host: its paths are its host's to delete.
        data.participants.get_mut(&pid("a")).unwrap().host = "there".into();
        let swept = sweep(&mut data, Some(&pid("a")), &here());
        assert!(swept.delete.is_empty());
        assert_eq!(paths(&data.temp_resources), ["/t/a"]);
    }

    #[test]
    fn the_originals_operations_record_no_owners_and_are_swept_whole() {
        let mut data = operation("a", &[]);
        data.participants.clear();
        data.temp_resources = vec![temp("/t/x", None), temp("/t/y", Some("someone"))];
        let swept = sweep(&mut data, None, &here());
        assert_eq!(swept.delete, ["/t/x", "/t/y"]);
        assert!(data.temp_resources.is_empty());
    }
}
