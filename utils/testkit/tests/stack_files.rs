//! The operator entry points stay in step: `devenv.nix` parses and declares exactly the processes
//! `bin/up` starts, each through its `just run-<name>` recipe; `bin/` holds scripts only.

use std::collections::BTreeSet;
use std::process::Command;

use hashpool_testkit::workspace_root;

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .unwrap_or_else(|error| panic!("{program} is needed (bin/setup installs it): {error}"));
    assert!(
        output.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("utf-8 output")
}

/// `(name, command, restart policy)` of each process `devenv.nix` declares, from the evaluated
/// expression (`pkgs` is never forced by `processes`).
fn devenv_processes() -> Vec<(String, String, String)> {
    let evaluated = run(
        "nix-instantiate",
        &[
            "--eval",
            "--strict",
            "--json",
            "-E",
            "(import ./devenv.nix { pkgs = {}; }).processes",
        ],
    );
    let processes: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(&evaluated).expect("the processes evaluate to JSON");
    processes
        .into_iter()
        .map(|(name, process)| {
            let command = process["exec"].as_str().unwrap_or_default().to_owned();
            let restart = process["process-compose"]["availability"]["restart"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (name, command, restart)
        })
        .collect()
}

#[test]
fn devenv_declares_the_same_processes_as_bin_up_through_the_same_recipes() {
    let declared = devenv_processes();
    assert!(!declared.is_empty(), "no processes declared in devenv.nix");

    let stack: BTreeSet<String> = run("just", &["--evaluate", "processes"])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let devenv: BTreeSet<String> = declared.iter().map(|(name, ..)| name.clone()).collect();
    assert_eq!(
        devenv, stack,
        "devenv.nix and the justfile's processes differ"
    );

    let recipes: BTreeSet<String> = run("just", &["--summary"])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    for (name, command, restart) in &declared {
        assert_eq!(command, &format!("just run-{name}"));
        assert_eq!(restart, "always", "{name} is started again when it exits");
        assert!(
            recipes.contains(&format!("run-{name}")),
            "no recipe run-{name}"
        );
    }
}

#[test]
fn bin_holds_executable_scripts_only() {
    use std::os::unix::fs::PermissionsExt;

    let bin = workspace_root().join("bin");
    for entry in std::fs::read_dir(&bin).unwrap() {
        let path = entry.unwrap().path();
        let head = std::fs::read(&path).unwrap();
        assert!(
            head.starts_with(b"#!"),
            "{} is not a script; no binaries belong in bin/",
            path.display()
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert!(mode & 0o111 != 0, "{} is not executable", path.display());
    }
}

/// The shipped systemd units start a binary of this workspace, restart it whatever way it exits,
/// and pass `systemd-analyze verify` (with the binaries at a temporary prefix).
#[test]
fn the_systemd_units_restart_their_process_and_verify() {
    let units_dir = workspace_root().join("deploy/systemd");
    let prefix = tempfile::tempdir().unwrap();
    let mut checked = Vec::new();
    for entry in std::fs::read_dir(&units_dir).unwrap() {
        let path = entry.unwrap().path();
        let unit = std::fs::read_to_string(&path).unwrap();
        let line = |key: &str| {
            unit.lines()
                .find_map(|line| line.strip_prefix(key))
                .unwrap_or_else(|| panic!("{} has no {key}", path.display()))
                .to_owned()
        };
        assert_eq!(line("Restart="), "always", "{}", path.display());
        assert_eq!(line("StartLimitIntervalSec="), "0", "{}", path.display());
        let exec = line("ExecStart=");
        let binary = exec
            .split_whitespace()
            .next()
            .unwrap()
            .strip_prefix("/opt/hashpool/bin/")
            .expect("binaries live in /opt/hashpool/bin");
        // bin/test builds every binary before the tests run.
        assert!(
            hashpool_testkit::workspace_binary(binary).exists(),
            "{binary} is a binary of this workspace"
        );
        let stand_in = prefix.path().join(binary);
        std::fs::write(&stand_in, "#!/bin/sh\n").unwrap();
        std::os::unix::fs::PermissionsExt::set_mode(
            &mut std::fs::metadata(&stand_in).unwrap().permissions(),
            0o755,
        );
        Command::new("chmod")
            .arg("755")
            .arg(&stand_in)
            .status()
            .unwrap();
        let copy = prefix.path().join(path.file_name().unwrap());
        std::fs::write(
            &copy,
            unit.replace("/opt/hashpool/bin", &prefix.path().to_string_lossy()),
        )
        .unwrap();
        checked.push(copy);
    }
    assert_eq!(checked.len(), 3, "pool, mint and translator");
    let Ok(output) = Command::new("systemd-analyze")
        .arg("verify")
        .args(&checked)
        .output()
    else {
        return; // no systemd here: the checks above still hold
    };
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
