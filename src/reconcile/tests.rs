use super::*;
use crate::apps::{self, LABEL_APP, LABEL_INSTANCE, LABEL_ROLE};
use std::collections::BTreeMap;

fn desired(extra: &str) -> Desired {
    apps::desired(&crate::config::testing::config("rpi5-8gb", extra)).unwrap()
}

/// What Docker and the journal hold once `d` is applied.
fn converged(d: &Desired) -> Observed {
    Observed {
        containers: d
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| ObservedContainer {
                name: c.name.clone(),
                id: format!("id{i}"),
                labels: c.labels(),
                running: true,
            })
            .collect(),
        networks: d
            .networks
            .iter()
            .map(|n| ObservedObject {
                name: n.name.clone(),
                managed: true,
            })
            .collect(),
        volumes: d
            .volumes
            .iter()
            .map(|v| ObservedObject {
                name: v.name.clone(),
                managed: true,
            })
            .collect(),
        images: d.containers.iter().map(|c| c.image.clone()).collect(),
        secrets: d.secrets.iter().map(|s| s.name.clone()).collect(),
        wired: d.wiring.iter().map(|(_, w)| w.id()).collect(),
    }
}

fn text(steps: &[Step]) -> String {
    steps
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{:>3}. {}\n", i + 1, s.describe()))
        .collect()
}

#[test]
fn fresh_install() {
    let d = desired("");
    let steps = plan(&d, &Observed::default());
    insta::assert_snapshot!(text(&steps));
    // No secret's value can be in a plan: only names are.
    assert!(text(&steps).contains("<secret ldap-nextcloud>"));
}

#[test]
fn a_converged_system_plans_nothing() {
    let d = desired("");
    assert_eq!(plan(&d, &converged(&d)), []);
}

#[test]
fn a_changed_env_recreates_that_container_only() {
    let before = desired("");
    let after = desired("[apps]\ndictionaries = [\"en_US\", \"fr_FR\"]\n");
    let steps = plan(&after, &converged(&before));
    insta::assert_snapshot!(text(&steps));
}

#[test]
fn a_removed_app_loses_its_containers_and_keeps_its_volumes() {
    let before = desired("");
    let after = desired("[apps]\nenabled = [\"nextcloud\", \"collabora\"]\n");
    let steps = plan(&after, &converged(&before));
    insta::assert_snapshot!(text(&steps));
    assert!(!steps.iter().any(|s| s.describe().contains("volume")));
}

#[test]
fn a_drifted_container_is_recreated() {
    let d = desired("");
    let mut o = converged(&d);
    let c = o
        .containers
        .iter_mut()
        .find(|c| c.name == "commonscloud-nextcloud")
        .unwrap();
    c.labels.insert(LABEL_SPEC.into(), "edited-by-hand".into());
    let steps = plan(&d, &o);
    insta::assert_snapshot!(text(&steps));
}

#[test]
fn a_container_deleted_by_hand_is_created_again() {
    let d = desired("");
    let mut o = converged(&d);
    o.containers
        .retain(|c| c.name != "commonscloud-discourse-redis");
    let steps = plan(&d, &o);
    insta::assert_snapshot!(text(&steps));
}

#[test]
fn a_stopped_container_is_started_and_a_missing_wire_is_redone() {
    let d = desired("");
    let mut o = converged(&d);
    o.containers
        .iter_mut()
        .find(|c| c.name == "commonscloud-collabora")
        .unwrap()
        .running = false;
    let (_, w) = d
        .wiring
        .iter()
        .find(|(_, w)| w.describe().contains("enable_discourse_connect"))
        .unwrap();
    o.wired.remove(&w.id());
    let steps = plan(&d, &o);
    assert_eq!(
        text(&steps),
        "  1. start container commonscloud-collabora\n  2. wait until commonscloud-collabora is ready\n  3. wait until commonscloud-discourse is ready\n  4. commonscloud-discourse: PUT /admin/site_settings/enable_discourse_connect true\n"
    );
}

#[test]
fn objects_without_our_labels_are_never_touched() {
    let d = desired("");
    let mut o = converged(&d);
    let c = o
        .containers
        .iter_mut()
        .find(|c| c.name == "commonscloud-collabora")
        .unwrap();
    c.labels.clear();
    o.containers.push(ObservedContainer {
        name: "someone-elses".into(),
        id: "x".into(),
        labels: BTreeMap::from([(LABEL_APP.into(), "nextcloud".into())]),
        running: false,
    });
    // Another appliance's container on the same engine is not ours either.
    o.containers.push(ObservedContainer {
        name: "commonscloud-old".into(),
        id: "y".into(),
        labels: BTreeMap::from([
            (LABEL_MANAGED.into(), "true".into()),
            (LABEL_INSTANCE.into(), "another-box".into()),
        ]),
        running: true,
    });
    o.volumes
        .iter_mut()
        .find(|v| v.name == "commonscloud-discourse-db")
        .unwrap()
        .managed = false;
    let steps = plan(&d, &o);
    assert_eq!(
        steps,
        [
            Step::NameTaken {
                kind: "volume",
                name: "commonscloud-discourse-db".into()
            },
            Step::NameTaken {
                kind: "container",
                name: "commonscloud-collabora".into()
            },
        ]
    );
    let _ = LABEL_ROLE;
}

#[test]
fn purge_deletes_only_a_disabled_apps_own_volumes() {
    let before = desired("");
    let after = desired("[apps]\nenabled = [\"nextcloud\", \"collabora\"]\n");
    let enabled = [AppName::Nextcloud, AppName::Collabora];
    let mut o = converged(&before);
    assert_eq!(
        purge_plan(&after, &enabled, &o, AppName::Nextcloud),
        Err(PurgeError::Enabled(AppName::Nextcloud))
    );
    assert_eq!(
        purge_plan(&after, &enabled, &o, AppName::Discourse),
        Err(PurgeError::Running(AppName::Discourse))
    );
    o.containers
        .retain(|c| !c.name.starts_with("commonscloud-discourse"));
    o.volumes.push(ObservedObject {
        name: "commonscloud-discourse-notours".into(),
        managed: false,
    });
    let purged = purge_plan(&after, &enabled, &o, AppName::Discourse).unwrap();
    assert_eq!(
        purged,
        [
            "commonscloud-discourse-shared",
            "commonscloud-discourse-log",
            "commonscloud-discourse-db",
            "commonscloud-discourse-redis"
        ]
    );
}

/// A box from before each app had its own backend network: every
/// container had another spec and sat on the shared `<prefix>-db`. The
/// plan makes the new networks, recreates each container on them (its
/// volumes stay: nothing is removed but containers), and only then, last,
/// removes the old network.
#[test]
fn an_upgrade_moves_the_containers_off_the_shared_database_network() {
    let d = desired("");
    let mut before = converged(&d);
    before.networks = vec![
        ObservedObject {
            name: "commonscloud".into(),
            managed: true,
        },
        ObservedObject {
            name: "commonscloud-db".into(),
            managed: true,
        },
    ];
    for c in &mut before.containers {
        c.labels.insert(LABEL_SPEC.into(), "an-older-spec".into());
    }
    let steps = plan(&d, &before);
    insta::assert_snapshot!(text(&steps));
    let last = steps.last().unwrap();
    assert_eq!(
        last,
        &Step::RemoveNetwork {
            name: "commonscloud-db".into()
        }
    );
    assert!(!steps.iter().any(|s| s.describe().contains("volume")));
    let recreated = steps
        .iter()
        .filter(|s| matches!(s, Step::RecreateContainer { .. }))
        .count();
    assert_eq!(recreated, d.containers.len());
    // Someone else's network of that name is never touched.
    before.networks[1].managed = false;
    assert!(
        !plan(&d, &before)
            .iter()
            .any(|s| matches!(s, Step::RemoveNetwork { .. }))
    );
}
