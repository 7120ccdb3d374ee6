//! What the Debian package and the container image are made of, checked
//! without building them (a release build takes minutes): the packaged
//! configuration is one the server accepts, the unit and the maintainer
//! scripts say what they must, every asset cargo-deb packs exists, and the
//! Containerfile's environment names real keys. The built package itself
//! is inspected by `scripts/package --check` (tests/package.sh).

use crate::helpers::binary;
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn assert_contains_all(path: &str, needles: &[&str]) {
    let text = read(path);
    for needle in needles {
        assert!(text.contains(needle), "{path} lacks {needle:?}");
    }
}

/// `switchyard config check` with `args` and `env`, from an empty
/// directory (no ./config/switchyard.toml to pick up); its stdout.
fn config_check(args: &[&str], env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(binary())
        .args(["config", "check"])
        .args(args)
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

#[test]
fn the_server_accepts_the_packaged_configuration() {
    let file = repo("packaging/switchyard.toml");
    let text = config_check(&["--config", file.to_str().unwrap()], &[]);
    assert!(
        text.contains("data_dir = \"/var/lib/switchyard\""),
        "{text}"
    );
    assert!(text.contains("listen = \"127.0.0.1:7600\""), "{text}");
}

#[test]
fn the_unit_is_hardened_and_runs_the_packaged_configuration() {
    assert_contains_all(
        "packaging/switchyard.service",
        &[
            "ExecStart=/usr/bin/switchyard serve --config /etc/switchyard/switchyard.toml",
            "User=switchyard",
            "StateDirectory=switchyard",
            "ReadWritePaths=/var/lib/switchyard",
            "ProtectSystem=strict",
            "ProtectHome=yes",
            "NoNewPrivileges=yes",
            "PrivateTmp=yes",
            "CapabilityBoundingSet=\n",
            "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX",
            "SystemCallFilter=@system-service",
            "WantedBy=multi-user.target",
        ],
    );
}

#[test]
fn maintainer_scripts_make_the_user_and_remove_data_only_on_purge() {
    assert_contains_all(
        "packaging/debian/postinst",
        &[
            "#DEBHELPER#",
            "adduser --system --group",
            "useradd --system --user-group",
            "install -d -o switchyard -g switchyard -m 0750 /var/lib/switchyard",
        ],
    );
    assert_contains_all(
        "packaging/debian/postrm",
        &[
            "#DEBHELPER#",
            "if [ \"$1\" = \"purge\" ]; then\n    rm -rf /var/lib/switchyard",
            "deluser --quiet --system switchyard",
        ],
    );
    for script in ["packaging/debian/postinst", "packaging/debian/postrm"] {
        let checked = std::process::Command::new("sh")
            .arg("-n")
            .arg(repo(script))
            .output()
            .unwrap();
        assert!(checked.status.success(), "{script} is not valid sh");
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(repo(script)).unwrap().permissions(),
        );
        assert_eq!(mode & 0o111, 0o111, "{script} is executable");
    }
}

#[test]
fn every_packaged_asset_exists_and_the_conffile_is_packed() {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    let assets = deb["assets"].as_array().unwrap();
    let mut destinations = Vec::new();
    for asset in assets {
        let source = asset[0].as_str().unwrap();
        // Build outputs (the binary, the generated completions) are made
        // by scripts/package before cargo-deb runs.
        if !source.starts_with("target/") {
            assert!(repo(source).is_file(), "asset {source} is missing");
        }
        destinations.push(format!("/{}", asset[1].as_str().unwrap()));
    }
    for conffile in deb["conf-files"].as_array().unwrap() {
        let conffile = conffile.as_str().unwrap();
        assert!(
            destinations
                .iter()
                .any(|destination| destination == conffile),
            "conffile {conffile} is not among the assets {destinations:?}"
        );
    }
    assert!(
        repo(deb["maintainer-scripts"].as_str().unwrap()).is_dir(),
        "maintainer-scripts"
    );
    let units = deb["systemd-units"]["unit-scripts"].as_str().unwrap();
    assert!(repo(units).join("switchyard.service").is_file());
}

#[test]
fn the_container_image_sets_real_keys_and_checks_health_without_curl() {
    assert_contains_all(
        "Containerfile",
        &[
            "cargo build --release --locked",
            "USER switchyard",
            "VOLUME /var/lib/switchyard",
            "SWITCHYARD_LISTEN=0.0.0.0:7600",
            "SWITCHYARD_DATA_DIR=/var/lib/switchyard",
            "EXPOSE 7600",
            "HEALTHCHECK",
            "\"healthcheck\"",
        ],
    );
    let text = config_check(
        &[],
        &[
            ("SWITCHYARD_LISTEN", "0.0.0.0:7600"),
            ("SWITCHYARD_DATA_DIR", "/var/lib/switchyard"),
        ],
    );
    assert!(text.contains("listen = \"0.0.0.0:7600\""), "{text}");
    assert!(
        text.contains("data_dir = \"/var/lib/switchyard\""),
        "{text}"
    );
    let ignored = read(".dockerignore");
    assert!(
        ignored.lines().any(|line| line.trim() == "target"),
        "the build context leaves out target/"
    );
}
