//! Rewards registered by `#[forge::reward]`, across every crate linked into the binary.

use schemars::Schema;
use serde_json::{Map, Value};

use super::RewardFn;

/// Parameters from YAML (the keys beside the reward's name).
pub type Params = Map<String, Value>;

/// A reward with its parameters bound, or why the parameters were rejected.
pub type BuildResult = Result<Box<dyn RewardFn>, String>;

/// What `#[forge::reward]` records about a reward.
pub struct RewardRegistration {
    /// Name YAML lists it by (`rewards[].name`).
    pub name: &'static str,
    /// First line of the function's doc comment.
    pub summary: &'static str,
    /// JSON Schema of the reward's parameters.
    pub params_schema: fn() -> Schema,
    /// Checks parameters from YAML (unknown keys, wrong types).
    pub check_params: fn(&Map<String, Value>) -> Result<(), String>,
    /// Binds parameters, giving a scorer.
    pub build: fn(&Params) -> BuildResult,
    /// Whether Forge itself defines it (as opposed to user code).
    pub builtin: bool,
}

inventory::collect!(RewardRegistration);

/// Every registered reward, sorted by name.
pub fn all() -> impl Iterator<Item = &'static RewardRegistration> {
    let mut all: Vec<_> = inventory::iter::<RewardRegistration>.into_iter().collect();
    all.sort_by_key(|r| r.name);
    all.into_iter()
}

/// The reward registered under `name`.
pub fn find(name: &str) -> Option<&'static RewardRegistration> {
    inventory::iter::<RewardRegistration>
        .into_iter()
        .find(|r| r.name == name)
}
