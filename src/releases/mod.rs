//! Releases and upgrades (DESIGN.md §8): the release manifest, the pure
//! upgrade planner, and the adapter that reads a box's facts for it.
//!
//! - `manifest` (pure): the typed, validated release manifest.
//! - `plan` (pure): `plan(installed, manifest, facts)`, the ordered hops to
//!   a release or the reason there is none.
//! - `facts` (pure): what the readings of a box mean (versions from the
//!   apps' own reports, labels, digests).
//! - `gather` (adapter): reads them through `docker` and `sys`.
//!
//! The signed channel, the rollout policy and the executor come later and
//! live here too.

pub mod facts;
pub mod gather;
pub mod manifest;
pub mod plan;

#[cfg(test)]
mod tests;

pub use facts::Facts;
pub use manifest::{Manifest, ManifestError};
pub use plan::{BoxFacts, Installed, InstalledComponent, Refusal, RefusalCode, UpgradePlan, plan};
