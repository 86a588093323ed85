//! Nothing: the package exists for its trybuild test (`macros.rs`).
