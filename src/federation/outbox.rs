//! What a local change puts in the outbox. A row names the entry and what
//! changed, not the new values: the replay reads the current local values,
//! so a row queued just before its LDAP write pushes whatever is there
//! (several quick edits push once, and an edit that failed pushes nothing).

use std::collections::{BTreeMap, BTreeSet};

use crate::store::{OutboxRow, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    /// An entry made here (a person on approval, a group, a collective).
    Add { dn: String },
    /// Attributes changed here; `base` holds their values before the change
    /// (an empty list: absent), which tells a concurrent change apart.
    Attrs {
        dn: String,
        base: BTreeMap<String, Vec<String>>,
    },
    /// A member added to or removed from a group.
    Member {
        group: String,
        member: String,
        added: bool,
    },
}

impl Change {
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Add { .. } => "add",
            Change::Attrs { .. } => "attrs",
            Change::Member { .. } => "member",
        }
    }

    /// The entry the change is about.
    pub fn dn(&self) -> &str {
        match self {
            Change::Add { dn } | Change::Attrs { dn, .. } => dn,
            Change::Member { group, .. } => group,
        }
    }

    /// The attributes (lower case) the down-sync must leave alone until the
    /// change is settled; `None`: the whole entry.
    pub fn held(&self) -> Option<BTreeSet<String>> {
        match self {
            Change::Add { .. } => None,
            Change::Attrs { base, .. } => {
                Some(base.keys().map(|k| k.to_ascii_lowercase()).collect())
            }
            Change::Member { .. } => Some(BTreeSet::from(["member".to_owned()])),
        }
    }

    /// An attribute change, with the values before it.
    pub fn attrs(dn: &str, base: &[(&str, Vec<String>)]) -> Change {
        Change::Attrs {
            dn: dn.to_owned(),
            base: base
                .iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v.clone()))
                .collect(),
        }
    }
}

/// Queues a change for the replay (a no-op while the appliance is
/// standalone).
pub fn push(store: &Store, now: i64, change: &Change) -> Result<Option<i64>, StoreError> {
    let detail = serde_json::to_string(change).unwrap_or_default();
    store.outbox_push(now, change.kind(), change.dn(), &detail, false)
}

/// Queues changes before their LDAP write, held from the replay until
/// [`Store::outbox_release`] (after the write) or a restart.
pub fn prepare(store: &Store, now: i64, changes: &[Change]) -> Result<Vec<i64>, StoreError> {
    store.atomically(|s| {
        let mut ids = Vec::new();
        for c in changes {
            let detail = serde_json::to_string(c).unwrap_or_default();
            ids.extend(s.outbox_push(now, c.kind(), c.dn(), &detail, true)?);
        }
        Ok(ids)
    })
}

/// A row's change; `None` for a row this release cannot read.
pub fn parse(row: &OutboxRow) -> Option<Change> {
    serde_json::from_str(&row.detail).ok()
}

/// What the pending rows for one entry hold back from the down-sync:
/// `None` means the whole entry.
pub fn held(rows: &[OutboxRow]) -> Option<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    for r in rows {
        out.extend(parse(r)?.held()?);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(c: &Change) -> OutboxRow {
        OutboxRow {
            id: 1,
            created_at: 0,
            kind: c.kind().into(),
            dn: c.dn().into(),
            detail: serde_json::to_string(c).unwrap(),
            state: "pending".into(),
            attempts: 0,
            last_error: None,
            settled_at: None,
        }
    }

    #[test]
    fn rows_round_trip_and_say_what_they_hold() {
        let a = Change::attrs("uid=a", &[("userPassword", vec!["{ARGON2}x".into()])]);
        let m = Change::Member {
            group: "cn=g".into(),
            member: "uid=a".into(),
            added: true,
        };
        assert_eq!(parse(&row(&a)), Some(a.clone()));
        assert_eq!(
            held(&[row(&a), row(&m)]),
            Some(BTreeSet::from(["member".into(), "userpassword".into()]))
        );
        assert_eq!(held(&[row(&Change::Add { dn: "uid=a".into() })]), None);
        assert_eq!(held(&[]), Some(BTreeSet::new()));
    }
}
