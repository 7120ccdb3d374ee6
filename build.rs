//! Stamps the commit the binary was built from into `switchyard --version`
//! (`BUILD_COMMIT_STAMP`: the short hash and the commit's date; not named
//! `SWITCHYARD_*`, as cargo also puts it in the environment of `cargo run`
//! and `cargo test`, where the configuration would warn about it).
//!
//! Where it comes from, first that answers:
//! 1. `git`, when this crate is the top of a git checkout (a crate unpacked
//!    inside some other repository must not take that repository's commit);
//! 2. the `SWITCHYARD_BUILD_COMMIT` environment variable, for builds from a
//!    tarball or a container context without `.git` (`--build-arg`);
//! 3. `unknown`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=SWITCHYARD_BUILD_COMMIT");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let commit = from_git(&manifest_dir)
        .or_else(|| {
            std::env::var("SWITCHYARD_BUILD_COMMIT")
                .ok()
                .map(|value| value.trim().to_string())
                .filter(|value| !value.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=BUILD_COMMIT_STAMP={commit}");
}

/// `cd05efc 2026-12-01`, when `dir` is the top of a git work tree.
fn from_git(dir: &Path) -> Option<String> {
    let top = git(dir, &["rev-parse", "--show-toplevel"])?;
    let same_dir = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    if !same_dir(Path::new(&top), dir) {
        return None;
    }
    // Build again when HEAD moves: HEAD itself (a checkout) and the branch
    // it names (a commit). Both paths as git resolves them, so a linked
    // work tree (whose `.git` is a file) works too.
    for name in ["HEAD", "packed-refs"] {
        watch(dir, name);
    }
    if let Some(branch) = git(dir, &["symbolic-ref", "-q", "HEAD"]) {
        watch(dir, &branch);
    }
    let stamp = git(dir, &["log", "-1", "--format=%h %cs"])?;
    (!stamp.is_empty()).then_some(stamp)
}

/// Only files that exist: Cargo runs a build script again on every build
/// while a path it watches is missing.
fn watch(dir: &Path, git_path: &str) {
    let path = git(
        dir,
        &[
            "rev-parse",
            "--path-format=absolute",
            "--git-path",
            git_path,
        ],
    );
    if let Some(path) = path.filter(|path| Path::new(path).exists()) {
        println!("cargo:rerun-if-changed={path}");
    }
}

fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .output()
        .ok()?;
    if !output.status.success() {
        return None;
    }
    Some(String::from_utf8(output.stdout).ok()?.trim().to_string())
}
