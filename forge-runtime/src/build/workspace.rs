//! The workspace around a generated crate: a mirror of Forge's own, so that cargo reuses the
//! `forge-runtime` the Forge build compiled instead of compiling it again.
//!
//! Cargo names a path package's artifacts by its path relative to the workspace root. Seen from a
//! crate with a workspace of its own, `forge-runtime` sits at some absolute path, so its units
//! differ from those of Forge's workspace (where it is `forge-runtime`) and cargo compiles it a
//! second time (1.5 to 2 minutes on two cores). The generated directory therefore holds Forge's
//! workspace manifest (its dependencies, lints and profiles, with the experiment crate as the only
//! extra member) and symbolic links to Forge's crates at the same relative paths; the units are
//! then the same, and only the experiment crate compiles.

use std::path::{Path, PathBuf};

use super::{BuildError, Toolchain, io};

/// Folder of the experiment crate inside the generated workspace.
pub(super) const EXPERIMENT_DIR: &str = "experiment";

/// Forge's workspace manifest, remade for a generated workspace.
pub(super) struct Mirror {
    /// The generated workspace's `Cargo.toml`.
    pub manifest: String,
    /// Forge's path crates (relative paths, as in Forge's `[workspace.dependencies]`), linked into
    /// the generated workspace.
    pub linked: Vec<String>,
}

/// Reads Forge's workspace `Cargo.toml` and keeps what decides how its crates compile
/// (`[workspace]` less its member list, `[profile]`, `[patch]`), with the members being Forge's
/// path crates and the experiment crate.
///
/// `patch_forge_paths` redirects dependencies on Forge's crates by their real paths (a user crate
/// listed under `code` has one) to the linked copies, so cargo sees a single `forge-runtime`.
pub(super) fn mirror(toolchain: &Toolchain, patch_forge_paths: bool) -> Result<Mirror, BuildError> {
    let path = toolchain.home.join("Cargo.toml");
    let text = std::fs::read_to_string(&path).map_err(io(format!("reading {}", path.display())))?;
    let invalid = |what: &str| {
        BuildError::Experiment(format!(
            "`{}` is not Forge's workspace manifest ({what}); set FORGE_HOME to a Forge checkout",
            path.display()
        ))
    };
    let root: toml::Table = toml::from_str(&text).map_err(|e| invalid(&e.to_string()))?;
    let mut workspace = root
        .get("workspace")
        .and_then(toml::Value::as_table)
        .cloned()
        .ok_or_else(|| invalid("no [workspace]"))?;
    let linked: Vec<String> = workspace
        .get("dependencies")
        .and_then(toml::Value::as_table)
        .map(|deps| {
            deps.values()
                .filter_map(|d| d.get("path").and_then(toml::Value::as_str))
                .filter(|p| is_plain_relative(p))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if linked.is_empty() {
        return Err(invalid("no path crates in [workspace.dependencies]"));
    }
    // Forge's other members (the CLI, tests) are not in the mirror; their profile overrides would
    // only draw cargo's warning that they match nothing.
    let absent: Vec<String> = workspace
        .get("members")
        .and_then(toml::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(toml::Value::as_str)
        .filter(|m| !linked.iter().any(|l| l == m))
        .filter_map(|m| package_name(&toolchain.home.join(m)))
        .collect();
    let mut members: Vec<toml::Value> = linked.iter().map(|p| p.as_str().into()).collect();
    members.push(EXPERIMENT_DIR.into());
    workspace.insert("members".into(), toml::Value::Array(members));
    workspace.remove("default-members");
    workspace.remove("exclude");

    let mut out = toml::Table::new();
    out.insert("workspace".into(), toml::Value::Table(workspace));
    for key in ["profile", "patch", "replace"] {
        if let Some(value) = root.get(key) {
            out.insert(key.into(), value.clone());
        }
    }
    if let Some(profiles) = out.get_mut("profile").and_then(toml::Value::as_table_mut) {
        for (_, profile) in profiles.iter_mut() {
            if let Some(packages) = profile
                .get_mut("package")
                .and_then(toml::Value::as_table_mut)
            {
                for name in &absent {
                    packages.remove(name);
                }
            }
        }
    }
    if patch_forge_paths {
        let patch = out
            .entry("patch")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(patch) = patch.as_table_mut() {
            for rel in &linked {
                let real = toolchain.home.join(rel);
                let Some(name) = package_name(&real) else {
                    continue;
                };
                let mut entry = toml::Table::new();
                entry.insert("path".into(), rel.as_str().into());
                let mut source = toml::Table::new();
                source.insert(name, toml::Value::Table(entry));
                patch.insert(file_url(&real), toml::Value::Table(source));
            }
        }
    }
    let body = toml::to_string(&out).map_err(|e| invalid(&e.to_string()))?;
    Ok(Mirror {
        manifest: format!(
            "# Generated by `forge build` from {}; rewritten on every build.\n# Forge's workspace, so that the runtime Forge compiled is reused (see forge::build).\n\n{body}",
            path.display()
        ),
        linked,
    })
}

/// Links `root/rel` to Forge's `rel` for each linked crate (replacing a stale link).
pub(super) fn link_crates(
    toolchain: &Toolchain,
    root: &Path,
    linked: &[String],
) -> Result<(), BuildError> {
    for rel in linked {
        let target = toolchain.home.join(rel);
        let link = root.join(rel);
        if std::fs::read_link(&link).is_ok_and(|t| t == target) {
            continue;
        }
        if let Some(parent) = link.parent() {
            std::fs::create_dir_all(parent)
                .map_err(io(format!("creating {}", parent.display())))?;
        }
        let _ = std::fs::remove_file(&link);
        symlink_dir(&target, &link).map_err(io(format!(
            "linking {} to {}",
            link.display(),
            target.display()
        )))?;
    }
    Ok(())
}

#[cfg(unix)]
fn symlink_dir(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::unix::fs::symlink(target, link)
}

#[cfg(windows)]
fn symlink_dir(target: &Path, link: &Path) -> std::io::Result<()> {
    std::os::windows::fs::symlink_dir(target, link)
}

/// A relative path that stays inside the workspace (what a link can mirror).
fn is_plain_relative(path: &str) -> bool {
    let path = Path::new(path);
    path.is_relative()
        && path
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_)))
}

/// The `[package] name` of the crate in `dir`.
fn package_name(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("Cargo.toml")).ok()?;
    let table: toml::Table = toml::from_str(&text).ok()?;
    Some(table.get("package")?.get("name")?.as_str()?.to_string())
}

/// Cargo's source URL for a path dependency on `dir` (`..` removed lexically, as cargo does).
fn file_url(dir: &Path) -> String {
    let mut path = PathBuf::new();
    for component in dir.components() {
        match component {
            std::path::Component::ParentDir => {
                path.pop();
            }
            std::path::Component::CurDir => {}
            other => path.push(other),
        }
    }
    format!("file://{}", path.display())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forge_toolchain() -> Toolchain {
        Toolchain {
            home: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
                .canonicalize()
                .expect("Forge checkout"),
            target_dir: "/t".into(),
            cargo: "cargo".into(),
        }
    }

    /// The mirror keeps what decides how Forge's crates compile and changes only the members.
    #[test]
    fn the_mirror_keeps_forges_workspace_and_profiles() {
        let toolchain = forge_toolchain();
        let ours: toml::Table = toml::from_str(
            &std::fs::read_to_string(toolchain.home.join("Cargo.toml")).expect("read"),
        )
        .expect("TOML");
        let mirror = mirror(&toolchain, false).expect("mirror");
        let theirs: toml::Table = toml::from_str(&mirror.manifest).expect("generated TOML");
        let mut profiles = ours["profile"].clone();
        let release = profiles["release"]["package"]
            .as_table_mut()
            .expect("table");
        assert!(
            release.remove("forge-cli").is_some(),
            "the CLI's override is dropped"
        );
        assert_eq!(profiles, theirs["profile"]);
        for key in ["dependencies", "lints", "package", "resolver"] {
            assert_eq!(ours["workspace"][key], theirs["workspace"][key], "{key}");
        }
        assert_eq!(mirror.linked, ["forge-runtime", "forge-macros"]);
        assert_eq!(
            theirs["workspace"]["members"],
            toml::Value::Array(vec![
                "forge-runtime".into(),
                "forge-macros".into(),
                EXPERIMENT_DIR.into()
            ])
        );
        assert!(theirs.get("patch").is_none());
    }

    /// A user crate's dependency on Forge's real path is redirected to the linked crate.
    #[test]
    fn user_crates_get_forges_real_paths_patched() {
        let toolchain = forge_toolchain();
        let mirror = mirror(&toolchain, true).expect("mirror");
        let theirs: toml::Table = toml::from_str(&mirror.manifest).expect("generated TOML");
        let url = file_url(&toolchain.home.join("forge-runtime"));
        assert!(!url.contains(".."), "{url}");
        assert_eq!(
            theirs["patch"][&url]["forge-runtime"]["path"].as_str(),
            Some("forge-runtime")
        );
    }

    #[test]
    fn only_paths_inside_the_workspace_are_mirrored() {
        assert!(is_plain_relative("forge-runtime"));
        assert!(is_plain_relative("crates/forge-runtime"));
        assert!(!is_plain_relative("../elsewhere"));
        assert!(!is_plain_relative("/abs"));
    }
}
