//! Reconcile as plan-then-apply. [`plan`] is pure: from the desired state
//! (`apps::desired`) and what Docker and the journal say exists, it lists
//! the steps that make them meet, in order. A converged system plans
//! nothing. [`apply`] is the executor, the only part that does IO (through
//! `docker` and the store). Boot, config reload and upgrades all take this
//! path.

pub mod access;
pub mod apply;
pub mod task;

use std::collections::BTreeSet;

use serde::Serialize;

use crate::apps::{
    ContainerSpec, Desired, LABEL_INSTANCE, LABEL_MANAGED, LABEL_SPEC, NetworkSpec, SecretSpec,
    VolumeSpec, Wiring,
};
use crate::model::AppName;

// What Docker has is `docker`'s to say; what is ours and what to do is
// decided here.
pub use crate::docker::{ObservedContainer, ObservedObject};

impl ObservedContainer {
    /// Ours: managed, and of this instance.
    fn managed(&self, instance: &str) -> bool {
        self.labels.get(LABEL_MANAGED).is_some_and(|v| v == "true")
            && self
                .labels
                .get(LABEL_INSTANCE)
                .is_some_and(|v| v == instance)
    }
}

/// What exists: from Docker (through names and labels), the secrets dir and
/// the journal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Observed {
    pub containers: Vec<ObservedContainer>,
    pub networks: Vec<ObservedObject>,
    pub volumes: Vec<ObservedObject>,
    /// Image references present locally.
    pub images: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
    /// Ids of wiring steps done (see `Wiring::id`).
    pub wired: BTreeSet<String>,
}

/// One change, as the executor applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "step")]
pub enum Step {
    CreateSecret(SecretSpec),
    CreateNetwork(NetworkSpec),
    CreateVolume(VolumeSpec),
    PullImage {
        app: AppName,
        image: String,
    },
    /// Someone else's object holds our name: we do not touch it.
    NameTaken {
        kind: &'static str,
        name: String,
    },
    RemoveContainer {
        name: String,
        id: String,
        why: String,
    },
    CreateContainer {
        spec: Box<ContainerSpec>,
    },
    RecreateContainer {
        spec: Box<ContainerSpec>,
        id: String,
        why: String,
    },
    StartContainer {
        name: String,
        id: String,
    },
    /// Wait until the container answers as ready (its health check, or the
    /// app's own test such as Nextcloud's status.php).
    WaitReady {
        app: AppName,
        container: String,
    },
    Wire {
        app: AppName,
        wiring: Wiring,
        id: String,
    },
    /// One of our networks that nothing wants any more (an older release's
    /// layout, a disabled app's backend): last, once the containers that
    /// used it have moved.
    RemoveNetwork {
        name: String,
    },
}

impl Step {
    /// The step as an admin reads it, secrets redacted.
    pub fn describe(&self) -> String {
        match self {
            Step::CreateSecret(s) => {
                format!("create secret {} ({} random bytes, 0600)", s.name, s.bytes)
            }
            Step::CreateNetwork(n) => format!(
                "create network {}{}{}",
                n.name,
                if n.internal { " (internal)" } else { "" },
                n.subnet
                    .as_ref()
                    .map(|s| format!(" {s}"))
                    .unwrap_or_default()
            ),
            Step::CreateVolume(v) => format!("create volume {}", v.name),
            Step::PullImage { image, .. } => format!("pull image {image}"),
            Step::NameTaken { kind, name } => format!(
                "cannot manage {kind} {name}: one of that name exists without our labels; rename or remove it"
            ),
            Step::RemoveContainer { name, why, .. } => format!("remove container {name} ({why})"),
            Step::CreateContainer { spec } => {
                format!(
                    "create and start container {} from {}",
                    spec.name, spec.image
                )
            }
            Step::RecreateContainer { spec, why, .. } => format!(
                "recreate container {} from {} ({why})",
                spec.name, spec.image
            ),
            Step::StartContainer { name, .. } => format!("start container {name}"),
            Step::WaitReady { container, .. } => format!("wait until {container} is ready"),
            Step::Wire { wiring, .. } => wiring.describe(),
            Step::RemoveNetwork { name } => format!("remove network {name} (no longer used)"),
        }
    }

    /// Whether it changes anything (a wait does not).
    pub fn mutates(&self) -> bool {
        !matches!(self, Step::WaitReady { .. } | Step::NameTaken { .. })
    }
}

/// The steps that take `observed` to `desired`, in order.
pub fn plan(desired: &Desired, observed: &Observed) -> Vec<Step> {
    let mut steps = Vec::new();
    for s in &desired.secrets {
        if !observed.secrets.contains(&s.name) {
            steps.push(Step::CreateSecret(s.clone()));
        }
    }
    for n in &desired.networks {
        match observed.networks.iter().find(|o| o.name == n.name) {
            None => steps.push(Step::CreateNetwork(n.clone())),
            Some(o) if !o.managed => steps.push(Step::NameTaken {
                kind: "network",
                name: n.name.clone(),
            }),
            Some(_) => {}
        }
    }
    for v in &desired.volumes {
        match observed.volumes.iter().find(|o| o.name == v.name) {
            None => steps.push(Step::CreateVolume(v.clone())),
            Some(o) if !o.managed => steps.push(Step::NameTaken {
                kind: "volume",
                name: v.name.clone(),
            }),
            Some(_) => {}
        }
    }
    let mut pulls = BTreeSet::new();
    // Containers of apps no longer enabled (their volumes stay: `--purge`
    // removes them).
    for o in &observed.containers {
        if o.managed(&desired.instance) && !desired.containers.iter().any(|c| c.name == o.name) {
            steps.push(Step::RemoveContainer {
                name: o.name.clone(),
                id: o.id.clone(),
                why: "its app is no longer enabled".into(),
            });
        }
    }
    let mut touched: BTreeSet<&str> = BTreeSet::new();
    let mut container_steps = Vec::new();
    for c in &desired.containers {
        let found = observed.containers.iter().find(|o| o.name == c.name);
        let step = match found {
            Some(o) if !o.managed(&desired.instance) => Some(Step::NameTaken {
                kind: "container",
                name: c.name.clone(),
            }),
            None => Some(Step::CreateContainer {
                spec: Box::new(c.clone()),
            }),
            Some(o) if o.labels.get(LABEL_SPEC) != Some(&c.spec_hash()) => {
                Some(Step::RecreateContainer {
                    spec: Box::new(c.clone()),
                    id: o.id.clone(),
                    why: "its settings changed".into(),
                })
            }
            Some(o) if !o.running => Some(Step::StartContainer {
                name: c.name.clone(),
                id: o.id.clone(),
            }),
            Some(_) => None,
        };
        if let Some(step) = step {
            if matches!(
                step,
                Step::CreateContainer { .. } | Step::RecreateContainer { .. }
            ) && !observed.images.contains(&c.image)
                && pulls.insert(c.image.clone())
            {
                steps.push(Step::PullImage {
                    app: c.app,
                    image: c.image.clone(),
                });
            }
            if step.mutates() {
                touched.insert(&c.name);
            }
            container_steps.push(step);
        }
    }
    steps.extend(container_steps);
    // Per container, in bring-up order: wait for it if it was (re)started
    // or has wiring pending, then run that wiring, in the catalog's order.
    // An app's steps that run in another app's container (Collabora's in
    // Nextcloud) come after the app's own containers.
    let mut waited: BTreeSet<String> = BTreeSet::new();
    let mut wait = |steps: &mut Vec<Step>, app: AppName, container: &str| {
        if waited.insert(container.to_owned()) {
            steps.push(Step::WaitReady {
                app,
                container: container.to_owned(),
            });
        }
    };
    let pending = |app: AppName, pred: &dyn Fn(&str) -> bool| -> Vec<&Wiring> {
        desired
            .wiring
            .iter()
            .filter(|(a, w)| *a == app && pred(w.container()) && !observed.wired.contains(&w.id()))
            .map(|(_, w)| w)
            .collect()
    };
    let wire = |app: AppName, w: &Wiring| Step::Wire {
        app,
        id: w.id(),
        wiring: w.clone(),
    };
    for app in AppName::ALL {
        let own: Vec<&ContainerSpec> = desired.containers.iter().filter(|c| c.app == app).collect();
        for c in &own {
            let mine = pending(app, &|t| t == c.name);
            if touched.contains(c.name.as_str()) || !mine.is_empty() {
                wait(&mut steps, app, &c.name);
            }
            steps.extend(mine.into_iter().map(|w| wire(app, w)));
        }
        for w in pending(app, &|t| !own.iter().any(|c| c.name == t)) {
            wait(&mut steps, app, w.container());
            steps.push(wire(app, w));
        }
    }
    // After everything else: by now the containers that used such a
    // network were recreated on their new ones (or removed), and a failure
    // here (someone attached a container of their own) holds up nothing.
    for o in &observed.networks {
        if o.managed && !desired.networks.iter().any(|n| n.name == o.name) {
            steps.push(Step::RemoveNetwork {
                name: o.name.clone(),
            });
        }
    }
    steps
}

/// Why an app's data cannot be purged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PurgeError {
    #[error(
        "{0} is enabled: remove it from [apps] enabled and reconcile first, so its containers are gone"
    )]
    Enabled(AppName),
    #[error("{0} still has containers: run `commonscloud reconcile` first")]
    Running(AppName),
}

/// The volumes that purging a disabled app deletes: ours, of this
/// instance, named for the app.
pub fn purge_plan(
    desired: &Desired,
    enabled: &[AppName],
    observed: &Observed,
    app: AppName,
) -> Result<Vec<String>, PurgeError> {
    if enabled.contains(&app) {
        return Err(PurgeError::Enabled(app));
    }
    let stem = format!("{}-{app}-", desired.instance);
    if observed
        .containers
        .iter()
        .any(|c| c.managed(&desired.instance) && c.name.starts_with(&stem))
    {
        return Err(PurgeError::Running(app));
    }
    Ok(observed
        .volumes
        .iter()
        .filter(|v| v.managed && v.name.starts_with(&stem))
        .map(|v| v.name.clone())
        .collect())
}

#[cfg(test)]
mod tests;
