//! Forge: Rust-native reinforcement-learning post-training for LLMs.
//!
//! An experiment is one YAML file. [`config`] turns it into a typed, validated [`config::Experiment`]
//! (every error with `file:line:col`); [`build`] generates and compiles a training binary specialised
//! for it; [`loss`] and [`reward`] hold the registries that `#[forge::loss]` and `#[forge::reward]`
//! fill, so user code plugs in by name.

// Lets the macros' `::forge::…` paths resolve inside this crate too (the built-in losses use them).
extern crate self as forge;

pub mod build;
pub mod config;
pub mod data;
// The `main` of generated binaries. It instantiates the recipes for a backend (the bulk of a
// compile), so only generated binaries turn it on: the CLI's build of this crate skips that work.
#[cfg(feature = "entry")]
pub mod entry;
pub mod generate;
pub mod kernels;
pub mod loss;
pub mod metrics;
pub mod model;
pub mod recipes;
pub mod reward;
pub mod rl;
pub mod services;
pub mod tasks;
pub mod tokenizer;
pub mod train;

pub use forge_macros::{loss, reward};

/// Paths used by code that the macros and `forge build` generate. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use cubecl;
    pub use half;
    pub use inventory;
    pub use schemars;
    pub use serde;
    pub use serde_json;

    pub use crate::kernels;
    pub use crate::loss::math;
    pub use crate::{__launcher_cuda as launcher_cuda, __launcher_wgpu as launcher_wgpu};

    /// Whether `module_path` is inside this crate (registrations of built-ins say so).
    pub const fn is_forge_module(module_path: &str) -> bool {
        let (path, prefix) = (module_path.as_bytes(), b"forge::");
        if path.len() < prefix.len() {
            return false;
        }
        let mut i = 0;
        while i < prefix.len() {
            if path[i] != prefix[i] {
                return false;
            }
            i += 1;
        }
        true
    }
}
