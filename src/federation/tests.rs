//! A model of federation for one person homed here, driven by proptest:
//! random interleavings of local and alliance edits, replay and down-sync
//! steps and link drops, with the real decisions ([`settle`] and
//! [`down_changes`]). Whatever the order, both sides end equal, and each
//! attribute ends as the authority rule says: the last write that no other
//! write followed, and between concurrent writes the owner's.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::rules::{AttrChange, Attrs, Settle, Winner, down_changes, settle};

const ATTRS: [&str; 2] = ["userpassword", "displayname"];

#[derive(Debug, Clone)]
enum Op {
    Local(usize),
    Alliance(usize),
    Replay,
    Down,
    Drop,
    Up,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..2usize).prop_map(Op::Local),
        (0..2usize).prop_map(Op::Alliance),
        Just(Op::Replay),
        Just(Op::Down),
        Just(Op::Drop),
        Just(Op::Up),
    ]
}

/// A write: its value is unique (as salted hashes and edits are in life).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Write {
    id: u32,
    attr: usize,
    local: bool,
    /// The writes its side had seen when it was made.
    seen: BTreeSet<u32>,
}

#[derive(Default)]
struct World {
    local: Attrs,
    remote: Attrs,
    /// Which write each side's current value of an attribute came from.
    local_from: BTreeMap<usize, u32>,
    remote_from: BTreeMap<usize, u32>,
    local_seen: BTreeSet<u32>,
    remote_seen: BTreeSet<u32>,
    outbox: Vec<(usize, BTreeSet<String>)>,
    up: bool,
    writes: Vec<Write>,
    next: u32,
}

fn one(v: &str) -> BTreeSet<String> {
    BTreeSet::from([v.to_owned()])
}

impl World {
    fn new() -> World {
        let mut w = World {
            up: true,
            ..World::default()
        };
        for (i, a) in ATTRS.iter().enumerate() {
            w.local.insert((*a).into(), one("v0"));
            w.remote.insert((*a).into(), one("v0"));
            let _ = i;
        }
        w
    }

    fn write(&mut self, attr: usize, local: bool) {
        self.next += 1;
        let id = self.next;
        let v = one(&format!("v{id}"));
        let seen = if local {
            self.local_seen.clone()
        } else {
            self.remote_seen.clone()
        };
        self.writes.push(Write {
            id,
            attr,
            local,
            seen,
        });
        if local {
            let base = self.local[ATTRS[attr]].clone();
            self.outbox.push((attr, base));
            self.local.insert(ATTRS[attr].into(), v);
            self.local_from.insert(attr, id);
            self.local_seen.insert(id);
        } else {
            self.remote.insert(ATTRS[attr].into(), v);
            self.remote_from.insert(attr, id);
            self.remote_seen.insert(id);
        }
    }

    fn replay(&mut self) {
        if !self.up || self.outbox.is_empty() {
            return;
        }
        // As the replay does: every pending change of the same attribute
        // goes at once, from the oldest one's base.
        let (attr, base) = self.outbox.remove(0);
        self.outbox.retain(|(a, _)| *a != attr);
        let k = ATTRS[attr];
        match settle(k, true, Some(&base), self.local.get(k), self.remote.get(k)) {
            Settle::Same => {}
            Settle::Push | Settle::Conflict(Winner::Local) => {
                self.remote.insert(k.into(), self.local[k].clone());
                if let Some(f) = self.local_from.get(&attr) {
                    self.remote_from.insert(attr, *f);
                }
                let seen = self.of_attr(&self.local_seen, attr);
                self.remote_seen.extend(seen);
            }
            Settle::Conflict(Winner::Alliance) => {
                self.local.insert(k.into(), self.remote[k].clone());
                if let Some(f) = self.remote_from.get(&attr) {
                    self.local_from.insert(attr, *f);
                }
                let seen = self.of_attr(&self.remote_seen, attr);
                self.local_seen.extend(seen);
            }
        }
    }

    fn down(&mut self) {
        if !self.up {
            return;
        }
        let held: BTreeSet<String> = self
            .outbox
            .iter()
            .map(|(a, _)| ATTRS[*a].to_owned())
            .collect();
        for c in down_changes(&self.remote, &self.local, &held) {
            if let AttrChange::Replace(k, v) = c {
                let attr = ATTRS.iter().position(|a| *a == k).unwrap_or(0);
                self.local.insert(k, v);
                if let Some(f) = self.remote_from.get(&attr) {
                    self.local_from.insert(attr, *f);
                }
            }
        }
        // What the alliance has was seen here, for the attributes taken.
        for (attr, id) in self.remote_from.clone() {
            if !held.contains(ATTRS[attr])
                && let Some(w) = self.writes.iter().find(|w| w.id == id)
            {
                let mut s = w.seen.clone();
                s.insert(id);
                let s = self.of_attr(&s, attr);
                self.local_seen.extend(s);
            }
        }
    }

    /// The writes of `attr` among `seen`: a push or a pull carries one
    /// attribute, and with it only what was known of that attribute.
    fn of_attr(&self, seen: &BTreeSet<u32>, attr: usize) -> BTreeSet<u32> {
        self.writes
            .iter()
            .filter(|w| w.attr == attr && seen.contains(&w.id))
            .map(|w| w.id)
            .collect()
    }

    /// The value the rule says `attr` must end with.
    fn expected(&self, attr: usize) -> Option<String> {
        let ws: Vec<&Write> = self.writes.iter().filter(|w| w.attr == attr).collect();
        let last: Vec<&&Write> = ws
            .iter()
            .filter(|w| !ws.iter().any(|o| o.seen.contains(&w.id)))
            .collect();
        let home_owned = ATTRS[attr] == "userpassword";
        let pick = last
            .iter()
            .filter(|w| w.local == home_owned)
            .max_by_key(|w| w.id)
            .or_else(|| last.iter().max_by_key(|w| w.id))?;
        Some(format!("v{}", pick.id))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_interleaving_converges_to_the_authority_rule(ops in proptest::collection::vec(op(), 0..40)) {
        let mut w = World::new();
        for o in &ops {
            match o {
                Op::Local(a) => w.write(*a, true),
                Op::Alliance(a) => w.write(*a, false),
                Op::Replay => w.replay(),
                Op::Down => w.down(),
                Op::Drop => w.up = false,
                Op::Up => w.up = true,
            }
        }
        // The link comes back for good: the outbox drains, the sync catches up.
        w.up = true;
        while !w.outbox.is_empty() {
            w.replay();
        }
        w.down();
        prop_assert_eq!(&w.local, &w.remote, "both sides end equal");
        for (i, a) in ATTRS.iter().enumerate() {
            if let Some(want) = w.expected(i) {
                prop_assert_eq!(
                    w.local[*a].iter().next().cloned(),
                    Some(want),
                    "{} after {:?}", a, ops
                );
            }
        }
    }
}
