//! The generated crate: `Cargo.toml`, `src/main.rs`, the embedded experiment.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::workspace::{self, EXPERIMENT_DIR};
use super::{BuildError, BuildOptions, Toolchain, io};
use crate::config::{Architecture, Backend, DType, Loaded, Override, Recipe};

/// What the generated `main.rs` fixes at compile time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Compute backend.
    pub backend: Backend,
    /// Model precision.
    pub dtype: DType,
    /// Model architecture (never `auto`: detected from the checkpoint at build time).
    pub architecture: Architecture,
    /// GRPO or SFT.
    pub recipe: Recipe,
    /// Registered name of the loss.
    pub loss: String,
    /// Registered names of the rewards.
    pub rewards: Vec<String>,
}

/// A crate written by `forge build`.
#[derive(Debug, Clone)]
pub struct GeneratedCrate {
    /// Its workspace directory, `<target>/forge/<name>-<hash>` (the crate is in `experiment/`).
    pub crate_dir: PathBuf,
    /// Its package name.
    pub package: String,
    /// Name of the binary (the experiment's name).
    pub binary_name: String,
    /// The selection `main.rs` names.
    pub selection: Selection,
    /// Files whose content decides whether a rebuild is needed: the generated ones and the user's.
    inputs: Vec<PathBuf>,
}

impl GeneratedCrate {
    /// Where cargo puts the binary.
    pub fn binary_path(&self, toolchain: &Toolchain, options: &BuildOptions) -> PathBuf {
        let profile_dir = if options.profile == "dev" {
            "debug"
        } else {
            options.profile.as_str()
        };
        toolchain.target_dir.join(profile_dir).join(format!(
            "{}{}",
            self.binary_name,
            std::env::consts::EXE_SUFFIX
        ))
    }

    /// Hash of everything the binary is built from: generated files, user code, Forge's runtime
    /// and macro sources, the Forge build doing the building.
    pub fn fingerprint(&self) -> Result<String, BuildError> {
        let mut hasher = Sha256::new();
        for path in &self.inputs {
            let bytes = std::fs::read(path).map_err(io(format!("reading {}", path.display())))?;
            hasher.update(path.display().to_string().as_bytes());
            hasher.update((bytes.len() as u64).to_le_bytes());
            hasher.update(&bytes);
        }
        hasher.update(forge_identity().as_bytes());
        Ok(hex(&hasher.finalize()[..16]))
    }
}

/// Identifies the Forge build running now (version and executable), so updating Forge rebuilds.
fn forge_identity() -> String {
    let exe = std::env::current_exe().ok();
    let meta = exe.as_ref().and_then(|e| std::fs::metadata(e).ok());
    let modified = meta
        .as_ref()
        .and_then(|m| m.modified().ok())
        .map(|t| format!("{t:?}"));
    format!(
        "{} {:?} {:?} {:?}",
        env!("CARGO_PKG_VERSION"),
        exe,
        meta.map(|m| m.len()),
        modified
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Detects the architecture when `auto`, from `model_type` in the checkpoint's `config.json`.
fn architecture(loaded: &Loaded) -> Result<Architecture, BuildError> {
    let model = &loaded.experiment.model;
    if model.architecture != Architecture::Auto {
        return Ok(model.architecture);
    }
    let source = loaded.model_source().map_err(BuildError::Experiment)?;
    let config_path = source.config_dir().join("config.json");
    let text = std::fs::read_to_string(&config_path).map_err(|e| {
        BuildError::Experiment(format!(
            "`model.architecture: auto` needs `{}`: {e}",
            config_path.display()
        ))
    })?;
    let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
        BuildError::Experiment(format!(
            "`{}` is not valid JSON: {e}",
            config_path.display()
        ))
    })?;
    let model_type = config
        .get("model_type")
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    Architecture::from_model_type(model_type).ok_or_else(|| {
        BuildError::Experiment(format!(
            "`{}` has model_type `{model_type}`, which Forge does not implement (llama, qwen2, qwen3); set `model.architecture` if it is one of those",
            config_path.display()
        ))
    })
}

/// The crate name cargo accepts for an experiment name.
fn package_name(name: &str) -> String {
    format!("forge-exp-{}", cargo_name(name))
}

/// `name` with what cargo rejects in package and binary names (`.`, spaces, ...) replaced by `-`,
/// lowercased.
fn cargo_name(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    cleaned.trim_matches('-').to_string()
}

/// A user crate listed under `code`: its directory and package name.
struct UserCrate {
    dir: PathBuf,
    package: String,
}

fn user_crate(dir: &Path) -> Result<UserCrate, BuildError> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .map_err(io(format!("reading {}", manifest.display())))?;
    let value: toml::Table = toml::from_str(&text).map_err(|e| {
        BuildError::Experiment(format!("`{}` is not valid TOML: {e}", manifest.display()))
    })?;
    let package = value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(toml::Value::as_str)
        .ok_or_else(|| {
            BuildError::Experiment(format!("`{}` has no [package] name", manifest.display()))
        })?;
    Ok(UserCrate {
        dir: dir.to_path_buf(),
        package: package.to_string(),
    })
}

fn rust_string(s: &str) -> String {
    format!("{s:?}")
}

fn toml_string(s: &str) -> String {
    // TOML basic strings escape like JSON.
    serde_json::Value::String(s.to_string()).to_string()
}

/// Writes `contents` to `path` unless it already holds exactly that (keeps mtimes, so cargo's own
/// freshness check stays quiet).
fn write_if_changed(path: &Path, contents: &str) -> Result<(), BuildError> {
    if std::fs::read_to_string(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents).map_err(io(format!("writing {}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(io(format!("writing {}", path.display())))
}

pub(super) fn generate(
    loaded: &Loaded,
    file: &Path,
    source: &str,
    overrides: &[Override],
    toolchain: &Toolchain,
) -> Result<GeneratedCrate, BuildError> {
    let exp = &loaded.experiment;
    let selection = Selection {
        backend: exp.backend,
        dtype: exp.model.dtype,
        architecture: architecture(loaded)?,
        recipe: exp.recipe,
        loss: exp.loss.name.clone(),
        rewards: exp.rewards.iter().map(|r| r.name.clone()).collect(),
    };
    let file_abs = file
        .canonicalize()
        .map_err(io(format!("resolving {}", file.display())))?;
    let mut code_files = Vec::new();
    let mut crates = Vec::new();
    for path in &exp.code {
        let path = loaded.resolve(path);
        let path = path
            .canonicalize()
            .map_err(io(format!("resolving {}", path.display())))?;
        if path.is_dir() {
            crates.push(user_crate(&path)?)
        } else {
            code_files.push(path)
        }
    }

    // The directory is named by what shapes the generated code, not by every value: changing the
    // learning rate rewrites the embedded file in place instead of making a new crate.
    let mut hasher = Sha256::new();
    hasher.update(file_abs.display().to_string().as_bytes());
    hasher.update(format!("{selection:?} {code_files:?}").as_bytes());
    for c in &crates {
        hasher.update(c.dir.display().to_string().as_bytes());
    }
    let dir_name = format!("{}-{}", cargo_name(&exp.name), hex(&hasher.finalize()[..6]));
    let crate_dir = toolchain.target_dir.join("forge").join(&dir_name);
    // Binaries of all generated crates land in the shared `target/<profile>/`: the hash keeps two
    // copies of one experiment (say, in two directories) from overwriting each other's binary
    // behind the up-to-date check.
    let binary_name = dir_name;

    let package = package_name(&exp.name);
    let manifest = cargo_toml(&package, &binary_name, selection.backend, &crates);
    let main = main_rs(
        &selection,
        &file_abs,
        loaded,
        overrides,
        &code_files,
        &crates,
    );
    let mirror = workspace::mirror(toolchain, !crates.is_empty())?;
    workspace::link_crates(toolchain, &crate_dir, &mirror.linked)?;
    let experiment = crate_dir.join(EXPERIMENT_DIR);
    // Generated crates used to sit at the top of this directory.
    let _ = std::fs::remove_dir_all(crate_dir.join("src"));
    write_if_changed(&crate_dir.join("Cargo.toml"), &mirror.manifest)?;
    write_if_changed(&experiment.join("Cargo.toml"), &manifest)?;
    write_if_changed(&experiment.join("src/main.rs"), &main)?;
    write_if_changed(&experiment.join("src/experiment.yaml"), source)?;
    copy_lockfile(toolchain, &crate_dir)?;

    let mut inputs = vec![
        crate_dir.join("Cargo.toml"),
        experiment.join("Cargo.toml"),
        experiment.join("src/main.rs"),
        experiment.join("src/experiment.yaml"),
    ];
    inputs.extend(code_files.iter().cloned());
    for c in &crates {
        collect_sources(&c.dir, &mut inputs);
    }
    // The generated crate compiles Forge's runtime and macros from the checkout: an edit there
    // must rebuild even when the `forge` running now was built before it (a stale binary was
    // reported "Up to date" otherwise).
    for forge_crate in ["forge-runtime", "forge-macros"] {
        collect_sources(&toolchain.home.join(forge_crate), &mut inputs);
    }
    Ok(GeneratedCrate {
        crate_dir,
        package,
        binary_name,
        selection,
        inputs,
    })
}

/// Every `.rs` and `Cargo.toml` of a crate (skipping `target` and hidden folders), for the
/// fingerprint.
fn collect_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            if path
                .file_name()
                .is_some_and(|n| n != "target" && !n.to_string_lossy().starts_with('.'))
            {
                collect_sources(&path, out);
            }
        } else if path.extension().is_some_and(|e| e == "rs")
            || path.file_name().is_some_and(|n| n == "Cargo.toml")
        {
            out.push(path);
        }
    }
}

/// Forge's `Cargo.lock`, so the generated workspace resolves the versions Forge compiled. Copied
/// again when Forge's changes (a snapshot beside it tells); cargo adds the experiment's own
/// packages to the copy.
fn copy_lockfile(toolchain: &Toolchain, root: &Path) -> Result<(), BuildError> {
    let forge_lock = toolchain.home.join("Cargo.lock");
    let Ok(forge) = std::fs::read(&forge_lock) else {
        return Ok(());
    };
    let snapshot = root.join("forge.lock");
    let lock = root.join("Cargo.lock");
    if lock.is_file() && std::fs::read(&snapshot).is_ok_and(|s| s == forge) {
        return Ok(());
    }
    std::fs::write(&lock, &forge).map_err(io(format!("writing {}", lock.display())))?;
    std::fs::write(&snapshot, &forge).map_err(io(format!("writing {}", snapshot.display())))
}

fn cargo_toml(package: &str, binary: &str, backend: Backend, crates: &[UserCrate]) -> String {
    // `entry` and only the runtime the backend needs: a CPU binary builds no GPU runtime at all,
    // and its runtime is the one the CLI was built with (forge-cli enables `entry` for that).
    let features: Vec<String> = std::iter::once("entry")
        .chain(backend.runtime_feature())
        .map(toml_string)
        .collect();
    let mut deps = format!(
        "forge = {{ workspace = true, features = [{}] }}\n",
        features.join(", ")
    );
    for c in crates {
        let _ = writeln!(
            deps,
            "{} = {{ path = {} }}",
            toml_string(&c.package),
            toml_string(&c.dir.display().to_string())
        );
    }
    format!(
        r#"# Generated by `forge build`; rewritten on every build.
[package]
name = "{package}"
version = "0.0.0"
edition = "2024"
publish = false

[[bin]]
name = {binary}
path = "src/main.rs"

[dependencies]
{deps}"#,
        binary = toml_string(binary),
    )
}

/// The Rust path of the training backend a binary built for `backend` and `dtype` runs on, as
/// `forge build` writes it into the binary's `main`: bf16 only on CUDA; f16 (no loss scaling
/// yet) and the CPU and wgpu backends compute in f32.
fn training_backend_path(backend: Backend, dtype: DType) -> &'static str {
    match (backend, dtype) {
        (Backend::Cpu, _) => "::forge::recipes::CpuBackend",
        (Backend::Wgpu, _) => "::forge::recipes::WgpuBackend",
        (Backend::Cuda, DType::Bf16) => {
            "::forge::recipes::CudaBackend<::forge::__private::half::bf16>"
        }
        (Backend::Cuda, DType::F32 | DType::F16) => "::forge::recipes::CudaBackend<f32>",
    }
}

fn main_rs(
    selection: &Selection,
    file: &Path,
    loaded: &Loaded,
    overrides: &[Override],
    code_files: &[PathBuf],
    crates: &[UserCrate],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "//! Generated by `forge build` from {}. Rewritten on every build.\n",
        file.display()
    );
    for (i, path) in code_files.iter().enumerate() {
        let _ = writeln!(
            out,
            "#[path = {}]\nmod user_code_{i};",
            rust_string(&path.display().to_string())
        );
    }
    for c in crates {
        // Linked even though nothing names it, so its registrations are kept.
        let _ = writeln!(out, "use {} as _;", c.package.replace('-', "_"));
    }
    let rewards = selection
        .rewards
        .iter()
        .map(|r| rust_string(r))
        .collect::<Vec<_>>()
        .join(", ");
    let overrides = overrides
        .iter()
        .map(|o| rust_string(&o.text))
        .collect::<Vec<_>>()
        .join(", ");
    let _ = write!(
        out,
        r#"
fn main() -> ::std::process::ExitCode {{
    ::forge::entry::main::<{training_backend}>(::forge::entry::Embedded {{
        file: {file},
        base_dir: {base_dir},
        source: include_str!("experiment.yaml"),
        overrides: &[{overrides}],
        selection: ::forge::entry::CompiledSelection {{
            backend: ::forge::config::Backend::{backend:?},
            dtype: ::forge::config::DType::{dtype:?},
            architecture: ::forge::config::Architecture::{architecture:?},
            recipe: ::forge::config::Recipe::{recipe:?},
            loss: {loss},
            rewards: &[{rewards}],
        }},
    }})
}}
"#,
        file = rust_string(&file.display().to_string()),
        base_dir = rust_string(&loaded.base_dir.display().to_string()),
        backend = selection.backend,
        dtype = selection.dtype,
        architecture = selection.architecture,
        recipe = selection.recipe,
        loss = rust_string(&selection.loss),
        training_backend = training_backend_path(selection.backend, selection.dtype),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forge_features(manifest: &str) -> toml::Value {
        let manifest: toml::Table = toml::from_str(manifest).expect("TOML");
        manifest["dependencies"]["forge"]["features"].clone()
    }

    /// Names cargo rejects (`.` in a binary name) become ones it accepts.
    #[test]
    fn experiment_names_become_cargo_names() {
        assert_eq!(cargo_name("grpo-qwen3-0.6b"), "grpo-qwen3-0-6b");
        assert_eq!(package_name("My Run_2"), "forge-exp-my-run-2");
    }

    /// A GPU backend adds its runtime to `entry`.
    #[test]
    fn the_backend_picks_the_runtime_feature() {
        let manifest = cargo_toml("forge-exp-x", "x-0", Backend::Cuda, &[]);
        assert_eq!(
            forge_features(&manifest),
            toml::Value::Array(vec!["entry".into(), "cuda".into()])
        );
    }

    /// bf16 trains in bf16 on CUDA only; everything else names an f32 backend.
    #[test]
    fn the_backend_and_dtype_pick_the_training_backend() {
        let path = |backend, dtype| training_backend_path(backend, dtype);
        assert!(
            path(Backend::Cuda, DType::Bf16)
                .ends_with("CudaBackend<::forge::__private::half::bf16>")
        );
        assert!(path(Backend::Cuda, DType::F32).ends_with("CudaBackend<f32>"));
        assert!(path(Backend::Cuda, DType::F16).ends_with("CudaBackend<f32>"));
        for dtype in [DType::Bf16, DType::F16, DType::F32] {
            assert_eq!(path(Backend::Cpu, dtype), "::forge::recipes::CpuBackend");
            assert_eq!(path(Backend::Wgpu, dtype), "::forge::recipes::WgpuBackend");
        }
    }

    /// The CLI links `forge-runtime` with exactly the features of a CPU experiment, so the
    /// generated workspace finds that runtime compiled already.
    #[test]
    fn the_cli_compiles_the_runtime_cpu_experiments_use() {
        let cli = concat!(env!("CARGO_MANIFEST_DIR"), "/../forge-cli/Cargo.toml");
        let cli = std::fs::read_to_string(cli).expect("forge-cli's Cargo.toml");
        let cpu = cargo_toml("forge-exp-x", "x-0", Backend::Cpu, &[]);
        assert_eq!(forge_features(&cli), forge_features(&cpu));
    }
}
