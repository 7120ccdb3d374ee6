//! The command line against a real server: config check, workspace
//! commands, emit, the generated admin token, logs and config typos,
//! --version, completions, healthcheck and the summaries of long work.

use crate::helpers::{ADMIN_TOKEN, ChildServer, TestApp, binary};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

async fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    run_in(None, args, env).await
}

/// Runs the binary in `directory` (default: the test's own).
async fn run_in(directory: Option<&Path>, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(binary());
    command
        .args(args)
        .env_remove("SWITCHYARD_ADMIN_TOKEN")
        .env_remove("SWITCHYARD_DATA_DIR")
        .env_remove("SWITCHYARD_URL");
    for name in crate::helpers::SUITE_ONLY_VARIABLES {
        command.env_remove(name);
    }
    if let Some(directory) = directory {
        command.current_dir(directory);
    }
    for (key, value) in env {
        command.env(key, value);
    }
    command.output().await.unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[tokio::test]
async fn child_servers_get_the_pinned_test_host_names() {
    // The harness's pins keep saved webhooks' names away from DNS; a typo
    // in the variable would only be warned about, so check the binary
    // reads it.
    let value = crate::helpers::pinned_hosts_value();
    let env = [(crate::helpers::PINNED_HOSTS_VARIABLE, value.as_str())];
    let output = run(&["config", "check"], &env).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let shown = stdout(&output);
    let pinned = format!("[\"{}\"]", crate::helpers::EXAMPLE_COM_ADDRESS);
    for name in ["\"example.com\"", "\"hooks.example.com\""] {
        assert!(shown.contains(&format!("{name} = {pinned}")), "{shown}");
    }
    assert!(!stderr(&output).contains("names no configuration key"));
}

#[tokio::test]
async fn config_check_prints_the_effective_config_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.toml");
    std::fs::write(
        &file,
        "listen = \"0.0.0.0:9999\"\n[slack]\nclient_secret = \"very-secret-value\"\n",
    )
    .unwrap();
    let output = run(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[
            ("SWITCHYARD_ADMIN_TOKEN", "admin-token-from-the-env"),
            ("SWITCHYARD_LIMITS__MAX_BODY_BYTES", "2048"),
        ],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("listen = \"0.0.0.0:9999\""), "{text}");
    assert!(text.contains("max_body_bytes = 2048"), "{text}");
    assert!(
        !text.contains("very-secret-value") && !text.contains("admin-token-from-the-env"),
        "{text}"
    );
    assert!(text.contains("********"), "{text}");
}

#[tokio::test]
async fn a_bad_value_stops_start_up_and_names_the_key() {
    let output = run(
        &["config", "check"],
        &[("SWITCHYARD_DELIVERY__TIMEOUT_SECONDS", "soon")],
    )
    .await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("`delivery.timeout_seconds`"),
        "{}",
        stderr(&output)
    );
    let dir = tempfile::tempdir().unwrap();
    let output = run(
        &["serve"],
        &[
            ("SWITCHYARD_LISTEN", "127.0.0.1"),
            ("SWITCHYARD_DATA_DIR", dir.path().to_str().unwrap()),
        ],
    )
    .await;
    assert!(!output.status.success());
    assert!(stderr(&output).contains("`listen`"), "{}", stderr(&output));
}

#[tokio::test]
async fn workspace_commands_and_emit_drive_a_running_server() {
    let app = TestApp::spawn().await;
    let url = app.url.as_str();
    let env = [
        ("SWITCHYARD_URL", url),
        ("SWITCHYARD_ADMIN_TOKEN", ADMIN_TOKEN),
    ];
    let created = run(&["workspace", "create", "acme"], &env).await;
    assert!(created.status.success(), "{}", stderr(&created));
    let workspace: serde_json::Value = serde_json::from_str(&stdout(&created)).unwrap();
    let id = workspace["id"].as_str().unwrap();
    let pk = workspace["publishable_key"].as_str().unwrap();
    let sk = workspace["secret_key"].as_str().unwrap();

    let listed = run(
        &[
            "workspace",
            "list",
            "--url",
            url,
            "--admin-token",
            ADMIN_TOKEN,
        ],
        &[],
    )
    .await;
    assert!(stdout(&listed).contains(id), "{}", stdout(&listed));

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event.json");
    std::fs::write(&file, crate::helpers::EXAMPLE_EVENT).unwrap();
    let from_file = run(
        &[
            "emit",
            "--url",
            url,
            "--key",
            pk,
            "--file",
            file.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(from_file.status.success(), "{}", stderr(&from_file));
    assert!(stdout(&from_file).trim().starts_with("evt_"));
    let payload = r#"{"version":"1.2"}"#;
    let from_flags = run(
        &[
            "emit",
            "--url",
            url,
            "--key",
            pk,
            "--event",
            "deploy.finished",
            "--payload",
            payload,
        ],
        &[],
    )
    .await;
    assert!(from_flags.status.success(), "{}", stderr(&from_flags));
    let rejected = run(
        &["emit", "--url", url, "--key", pk, "--event", "bad name"],
        &[],
    )
    .await;
    assert!(!rejected.status.success());
    assert!(stderr(&rejected).contains("422"), "{}", stderr(&rejected));
    assert_eq!(app.all_event_ids(sk).await.len(), 2);

    let rotated = run(
        &[
            "workspace",
            "rotate-keys",
            id,
            "--url",
            url,
            "--admin-token",
            ADMIN_TOKEN,
        ],
        &[],
    )
    .await;
    assert!(rotated.status.success(), "{}", stderr(&rotated));
    assert!(!stdout(&rotated).contains(pk));
    let deleted = run(
        &[
            "workspace",
            "delete",
            id,
            "--url",
            url,
            "--admin-token",
            ADMIN_TOKEN,
        ],
        &[],
    )
    .await;
    assert!(deleted.status.success(), "{}", stderr(&deleted));
    let (_, body) = app.send(app.get("/v1/workspaces", ADMIN_TOKEN)).await;
    assert_eq!(body["data"], serde_json::json!([]));
}

/// Run next to the data dir (or given `--data-dir`), the client commands
/// read the generated admin token themselves.
#[tokio::test]
async fn client_commands_find_the_admin_token_in_the_data_dir() {
    let app = TestApp::spawn().await;
    let url = app.url.as_str();
    let here = tempfile::tempdir().unwrap();
    std::fs::create_dir(here.path().join("data")).unwrap();
    std::fs::write(
        here.path().join("data/admin_token"),
        format!("{ADMIN_TOKEN}\n"),
    )
    .unwrap();
    let created = run_in(
        Some(here.path()),
        &["workspace", "create", "acme", "--url", url],
        &[],
    )
    .await;
    assert!(created.status.success(), "{}", stderr(&created));
    assert!(stdout(&created).contains("\"name\": \"acme\""));

    let elsewhere = tempfile::tempdir().unwrap();
    let data_dir = here.path().join("data");
    let listed = run_in(
        Some(elsewhere.path()),
        &[
            "workspace",
            "list",
            "--url",
            url,
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(listed.status.success(), "{}", stderr(&listed));
    assert!(stdout(&listed).contains("acme"), "{}", stdout(&listed));

    let without = run_in(
        Some(elsewhere.path()),
        &["workspace", "list", "--url", url],
        &[],
    )
    .await;
    assert!(!without.status.success());
    let message = stderr(&without);
    assert!(
        message.contains("no admin token: give --admin-token")
            && message.contains("data/admin_token does not exist"),
        "{message}"
    );
}

#[tokio::test]
async fn help_shows_variable_names_and_errors_say_their_cause_once() {
    let help = run(&["workspace", "list", "--help"], &[]).await;
    let text = stdout(&help);
    assert!(text.contains("[env: SWITCHYARD_URL]"), "{text}");
    assert!(!text.contains("SWITCHYARD_URL="), "{text}");
    if crate::backend::redb_only(
        "help_shows_variable_names_and_errors_say_their_cause_once (backup)",
    ) {
        return;
    }

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("taken.redb");
    std::fs::write(&out, b"already here").unwrap();
    let app = TestApp::spawn().await;
    let output = run(
        &[
            "backup",
            "--url",
            &app.url,
            "--admin-token",
            ADMIN_TOKEN,
            "--out",
            out.to_str().unwrap(),
        ],
        &[],
    )
    .await;
    assert!(!output.status.success());
    let message = stderr(&output);
    assert_eq!(message.matches("os error 17").count(), 1, "{message}");
}

#[tokio::test]
async fn a_generated_admin_token_is_stored_0600_and_never_printed() {
    let dir = tempfile::tempdir().unwrap();
    let first = ChildServer::start(dir.path(), None).await;
    // The database file holds payloads and key hashes: owner only, too.
    if !crate::backend::on_postgres() {
        let database = dir.path().join("switchyard.redb");
        assert_eq!(
            std::fs::metadata(&database).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let path = dir.path().join("admin_token");
    let token = std::fs::read_to_string(&path).unwrap().trim().to_string();
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    // Under systemd stdout is the journal: it says where, never what.
    assert!(
        first.stdout_lines.iter().all(|line| !line.contains(&token)),
        "{:?}",
        first.stdout_lines
    );
    let expected = format!(
        "generated an admin token in {} (mode 0600); read it with: cat {}",
        path.display(),
        path.display()
    );
    assert!(
        first.stdout_lines.contains(&expected),
        "{:?}",
        first.stdout_lines
    );
    let (status, _) = crate::helpers::send(
        reqwest::Client::new()
            .get(format!("{}/v1/workspaces", first.url))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    assert_eq!(first.terminate().await.code(), Some(0));

    let second = ChildServer::start(dir.path(), None).await;
    assert!(
        second
            .stdout_lines
            .iter()
            .all(|line| !line.contains("generated")),
        "said only on the first start: {:?}",
        second.stdout_lines
    );
    let (status, _) = crate::helpers::send(
        reqwest::Client::new()
            .get(format!("{}/v1/workspaces", second.url))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(status, reqwest::StatusCode::OK);
    second.kill().await;
}

/// A log written to a file carries no colour codes, and "listening on" is
/// said once, on stdout, where scripts wait for it.
#[tokio::test]
async fn a_log_file_has_no_colour_codes_and_listening_is_said_once() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    let server = ChildServer::start_logging_to(
        &dir.path().join("data"),
        Some(ADMIN_TOKEN),
        &[
            ("SWITCHYARD_LOG__LEVEL", "info"),
            ("SWITCHYARD_DELIVERY__TIMEOUT_SECS", "3"),
        ],
        Some(&log),
    )
    .await;
    assert_eq!(server.terminate().await.code(), Some(0));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("serving"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in a file: {text:?}");
    assert!(!text.contains("listening on"), "{text}");
    assert!(
        text.contains("SWITCHYARD_DELIVERY__TIMEOUT_SECS names no configuration key"),
        "unknown variables are named: {text}"
    );
}

#[tokio::test]
async fn config_typos_are_errors_in_the_file_and_warnings_in_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.toml");
    std::fs::write(&file, "[delivery]\ntimeout_secs = 3\n").unwrap();
    let output = run(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
    )
    .await;
    assert!(!output.status.success());
    assert!(
        stderr(&output).contains("unknown key `timeout_secs` in [delivery]")
            && stderr(&output).contains("did you mean `timeout_seconds`?"),
        "{}",
        stderr(&output)
    );
    let output = run(
        &["config", "check"],
        &[("SWITCHYARD_DELIVERY__TIMEOUT_SECS", "3")],
    )
    .await;
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(
        stderr(&output)
            .contains("warning: SWITCHYARD_DELIVERY__TIMEOUT_SECS names no configuration key"),
        "{}",
        stderr(&output)
    );
}

/// `switchyard backup` copies a running server's database; a server started
/// on the copy (same master key) has the same workspaces, events and
/// connections, sealed secrets included.
#[tokio::test]
async fn a_backup_of_a_running_server_restores_into_a_new_data_dir() {
    if crate::backend::redb_only("a_backup_of_a_running_server_restores_into_a_new_data_dir") {
        return;
    }
    use crate::helpers::send;
    use reqwest::StatusCode;
    use serde_json::json;

    let original_dir = tempfile::tempdir().unwrap();
    let original = ChildServer::start(original_dir.path(), Some(ADMIN_TOKEN)).await;
    let http = reqwest::Client::new();
    let ws = original.create_workspace("acme").await;
    for _ in 0..20 {
        original.emit_example(&ws.publishable_key).await;
    }
    let (status, hook) = send(
        http.post(format!("{}/v1/connections", original.url))
            .bearer_auth(&ws.secret_key)
            .json(&json!({"type": "webhook", "name": "hook",
                          "config": {"url": "https://hooks.example.com/in"}})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{hook}");
    let (status, _) = send(
        http.post(format!("{}/v1/backup", original.url))
            .bearer_auth(&ws.secret_key),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "admin only");

    let restored_dir = tempfile::tempdir().unwrap();
    let copy = restored_dir.path().join("switchyard.redb");
    let args = [
        "backup",
        "--url",
        &original.url,
        "--admin-token",
        ADMIN_TOKEN,
        "--out",
        copy.to_str().unwrap(),
    ];
    let output = run(&args, &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let summary = plain_summary(&output);
    assert!(summary.starts_with("backup written to"), "{summary}");
    assert!(summary.contains(" rows) in "), "{summary}");
    let again = run(&args, &[]).await;
    assert!(
        !again.status.success(),
        "an existing file is never overwritten"
    );
    assert_eq!(original.terminate().await.code(), Some(0));

    // Compacting the copy (no server holds it) says one plain line too.
    let compacted = run(
        &["compact"],
        &[("SWITCHYARD_DATA_DIR", restored_dir.path().to_str().unwrap())],
    )
    .await;
    assert!(compacted.status.success(), "{}", stderr(&compacted));
    let summary = plain_summary(&compacted);
    assert!(summary.starts_with("compacted "), "{summary}");
    assert!(
        summary.contains(", freed ") && summary.contains(" in "),
        "{summary}"
    );

    std::fs::copy(
        original_dir.path().join("master_key"),
        restored_dir.path().join("master_key"),
    )
    .unwrap();
    let restored = ChildServer::start(restored_dir.path(), Some(ADMIN_TOKEN)).await;
    let (status, events) = send(
        http.get(format!("{}/v1/events?limit=100", restored.url))
            .bearer_auth(&ws.secret_key),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{events}");
    assert_eq!(events["data"].as_array().unwrap().len(), 20);
    // Rotating the signing secret opens the sealed one: the master key and
    // the copied secrets still match.
    let (status, rotated) = send(
        http.post(format!(
            "{}/v1/connections/{}/rotate-secret",
            restored.url,
            hook["id"].as_str().unwrap()
        ))
        .bearer_auth(&ws.secret_key),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(restored.terminate().await.code(), Some(0));
}

/// Off a terminal (the tests' pipes) long work draws no progress: stdout is
/// the one summary line and neither stream has a carriage return or an
/// escape code. Returns that line.
fn plain_summary(output: &Output) -> String {
    for (name, text) in [("stdout", stdout(output)), ("stderr", stderr(output))] {
        assert!(
            !text.contains('\r') && !text.contains('\x1b'),
            "progress drawn on {name}: {text:?}"
        );
    }
    let text = stdout(output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "one summary line: {text:?}");
    lines[0].to_string()
}

/// `switchyard 0.1.0 (cd05efc 2026-12-01)`: the commit is the checkout's
/// when built from one (build.rs), as it is here unless built from a
/// tarball, when it says `unknown` or `SWITCHYARD_BUILD_COMMIT`.
#[tokio::test]
async fn version_names_the_release_and_the_commit() {
    let output = run(&["--version"], &[]).await;
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    let line = text.trim_end();
    let prefix = format!("switchyard {} (", env!("CARGO_PKG_VERSION"));
    let commit = line
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .unwrap_or_else(|| panic!("{line:?}"));
    let checkout = std::process::Command::new("git")
        .args([
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "log",
            "-1",
            "--format=%h %cs",
        ])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string());
    match checkout {
        Some(head) => assert_eq!(commit, head, "built from this checkout's HEAD"),
        None => assert!(!commit.is_empty(), "{line:?}"),
    }
    assert_eq!(stdout(&run(&["-V"], &[]).await), text);
}

#[tokio::test]
async fn completions_cover_every_subcommand_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let output = run(&["completions", shell], &[]).await;
        assert!(output.status.success(), "{shell}: {}", stderr(&output));
        let script = stdout(&output);
        for subcommand in [
            "serve",
            "config",
            "workspace",
            "rotate-keys",
            "emit",
            "backup",
            "compact",
            "completions",
            "healthcheck",
        ] {
            assert!(script.contains(subcommand), "{shell} lacks {subcommand}");
        }
    }
    let refused = run(&["completions", "tcsh"], &[]).await;
    assert!(!refused.status.success());

    // bash is part of every Debian system, this one included.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("switchyard.bash");
    std::fs::write(&file, run(&["completions", "bash"], &[]).await.stdout).unwrap();
    let checked = std::process::Command::new("bash")
        .arg("-n")
        .arg(&file)
        .output()
        .expect("bash");
    assert!(checked.status.success(), "{}", stderr(&checked));
}

#[tokio::test]
async fn healthcheck_exits_0_on_a_healthy_server_and_1_otherwise() {
    let app = TestApp::spawn().await;
    let healthy = run(&["healthcheck", "--url", &app.url], &[]).await;
    assert!(healthy.status.success(), "{}", stderr(&healthy));
    assert!(stdout(&healthy).contains("healthy"), "{}", stdout(&healthy));

    // Without --url it checks the configured listen address, a wildcard
    // one on loopback (as in the container image).
    let port = app.url.rsplit(':').next().unwrap();
    let wildcard = format!("0.0.0.0:{port}");
    let derived = run(&["healthcheck"], &[("SWITCHYARD_LISTEN", &wildcard)]).await;
    assert!(derived.status.success(), "{}", stderr(&derived));

    // A server that answers, but not 200.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let unhealthy = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = unhealthy.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = unhealthy.accept().await {
            let mut request = [0u8; 1024];
            let _ = socket.read(&mut request).await;
            let _ = socket
                .write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                .await;
        }
    });
    let down = run(&["healthcheck", "--url", &format!("http://{address}")], &[]).await;
    assert_eq!(down.status.code(), Some(1));
    assert!(stderr(&down).contains("503"), "{}", stderr(&down));
}
