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

/// `name = { exec = "command"; }` pairs inside `processes = { … }` of the parsed expression.
fn devenv_processes(parsed: &str) -> Vec<(String, String)> {
    let start = parsed
        .find("processes = {")
        .expect("devenv.nix declares processes")
        + "processes = {".len();
    let mut depth = 1;
    let end = start
        + parsed[start..]
            .char_indices()
            .find(|&(_, c)| {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    _ => {}
                }
                depth == 0
            })
            .expect("the processes set is closed")
            .0;
    parsed[start..end]
        .split("}; ")
        .filter_map(|entry| {
            let (name, rest) = entry.trim().split_once(" = { exec = \"")?;
            let command = rest.split('"').next()?;
            Some((name.trim().to_owned(), command.to_owned()))
        })
        .collect()
}

#[test]
fn devenv_declares_the_same_processes_as_bin_up_through_the_same_recipes() {
    let parsed = run("nix-instantiate", &["--parse", "devenv.nix"]);
    let declared = devenv_processes(&parsed);
    assert!(!declared.is_empty(), "no processes parsed from {parsed}");

    let stack: BTreeSet<String> = run("just", &["--evaluate", "processes"])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let devenv: BTreeSet<String> = declared.iter().map(|(name, _)| name.clone()).collect();
    assert_eq!(
        devenv, stack,
        "devenv.nix and the justfile's processes differ"
    );

    let recipes: BTreeSet<String> = run("just", &["--summary"])
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    for (name, command) in &declared {
        assert_eq!(command, &format!("just run-{name}"));
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
