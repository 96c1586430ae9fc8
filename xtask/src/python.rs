//! The virtualenv of the Python interop test (`tests/interop/python`): the independent
//! `signalrcore` client against two chat servers.
//!
//! The virtualenv lives in `<target dir>/xtask/python-venv/`, made with `python3 -m venv` and
//! filled by its own pip with exactly the pinned packages of `requirements.txt`
//! (`--no-deps`, then `pip check`, so an unpinned dependency is an error rather than a
//! surprise). A copy of the requirements kept inside it marks a finished install: while that copy
//! matches `requirements.txt` and the venv was made by the same `python3` version, the venv is
//! reused as is; otherwise it is deleted and made again, so nothing stale survives.

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use crate::redis::find_program;

/// The interpreter the virtualenv is made with, looked up on PATH (then in /usr/bin and the
/// other directories [`find_program`] knows).
const PYTHON: &str = "python3";

/// The directory of the Python interop test, relative to the workspace root.
const TEST_DIR: [&str; 3] = ["tests", "interop", "python"];

/// The pinned requirements, in [`TEST_DIR`].
const REQUIREMENTS: &str = "requirements.txt";

/// The copy of the requirements inside the virtualenv, written once they are installed.
const INSTALLED: &str = "xtask-installed-requirements.txt";

/// The directory of the Python interop test.
pub(crate) fn test_dir() -> PathBuf {
    TEST_DIR
        .iter()
        .fold(crate::project_root(), |dir, part| dir.join(part))
}

/// Where the virtualenv lives.
fn venv_dir() -> PathBuf {
    crate::xtask_dir().join("python-venv")
}

/// The virtualenv's interpreter, which runs the test.
pub(crate) fn venv_python() -> PathBuf {
    let dir = venv_dir();
    if cfg!(windows) {
        dir.join("Scripts").join("python.exe")
    } else {
        dir.join("bin").join("python")
    }
}

/// Creates the virtualenv and installs the requirements into it, or reuses it when it already
/// holds exactly these requirements for the same Python version.
pub(crate) fn setup() -> Result<(), String> {
    let requirements_path = test_dir().join(REQUIREMENTS);
    let requirements = fs::read_to_string(&requirements_path)
        .map_err(|err| format!("cannot read {}: {err}", requirements_path.display()))?;
    let python = find_program(PYTHON).ok_or_else(|| {
        format!(
            "{PYTHON} was not found on PATH: the Python interop test needs Python 3 with the \
             venv module and pip (Debian/Ubuntu: sudo apt-get install python3 python3-venv)"
        )
    })?;
    let version = python_version(&python)?;
    let venv = venv_dir();
    if is_current(&venv, &requirements, &version) {
        println!(
            "xtask: reusing {} (Python {version}; {REQUIREMENTS} unchanged)",
            venv.display()
        );
        return Ok(());
    }

    if venv.exists() {
        println!(
            "xtask: {} is not a finished install of this {REQUIREMENTS} for Python {version}; \
             recreating it",
            venv.display()
        );
        fs::remove_dir_all(&venv)
            .map_err(|err| format!("cannot remove the old {}: {err}", venv.display()))?;
    }
    let venv_arg = venv.to_string_lossy();
    run("python3 -m venv", &python, &["-m", "venv", &venv_arg])?;
    let requirements_arg = requirements_path.to_string_lossy();
    let pip = ["-m", "pip", "--disable-pip-version-check", "--no-input"];
    run(
        "pip install",
        &venv_python(),
        &[
            &pip[..],
            &[
                "install",
                "--quiet",
                "--no-deps",
                "--requirement",
                &requirements_arg,
            ],
        ]
        .concat(),
    )?;
    // Every dependency of what was installed must be there too: pinned in the file. Not quiet:
    // on failure it names the missing or mismatched packages.
    run(
        "pip check",
        &venv_python(),
        &[&pip[..], &["check"]].concat(),
    )
    .map_err(|err| {
        format!(
            "{err}: {} does not pin every dependency at a compatible version",
            requirements_path.display()
        )
    })?;

    let installed = venv.join(INSTALLED);
    fs::write(&installed, &requirements)
        .map_err(|err| format!("cannot write {}: {err}", installed.display()))?;
    println!(
        "xtask: installed {} into {} (Python {version})",
        requirements_path.display(),
        venv.display()
    );
    Ok(())
}

/// Whether `venv` is a finished install of `requirements` made by Python `version`.
fn is_current(venv: &Path, requirements: &str, version: &str) -> bool {
    let installed = fs::read_to_string(venv.join(INSTALLED)).ok();
    // `python -m venv` records the version of the Python that made it.
    let made_by = fs::read_to_string(venv.join("pyvenv.cfg"))
        .ok()
        .and_then(|config| venv_version(&config).map(str::to_owned));
    installed.as_deref() == Some(requirements)
        && made_by.as_deref() == Some(version)
        && venv_python().is_file()
}

/// The `version` entry of a `pyvenv.cfg`.
fn venv_version(config: &str) -> Option<&str> {
    config.lines().find_map(|line| {
        let (key, value) = line.split_once('=')?;
        (key.trim() == "version").then_some(value.trim())
    })
}

/// The full version of `python` (such as `3.11.7`), as `pyvenv.cfg` records it.
fn python_version(python: &Path) -> Result<String, String> {
    let output = Command::new(python)
        .args(["-c", "import platform; print(platform.python_version())"])
        .stdin(Stdio::null())
        .output()
        .map_err(|err| format!("could not run {}: {err}", python.display()))?;
    if !output.status.success() {
        return Err(format!(
            "{} could not report its version ({}): {}",
            python.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs `program` with `args` in the workspace root, its output going to the terminal. `what`
/// names the command in errors, which end up on one line of the summary.
fn run(what: &str, program: &Path, args: &[&str]) -> Result<(), String> {
    println!("xtask: running `{} {}`", program.display(), args.join(" "));
    let status = Command::new(program)
        .args(args)
        .current_dir(crate::project_root())
        .stdin(Stdio::null())
        .status()
        .map_err(|err| format!("could not run `{what}` ({}): {err}", program.display()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{what}` failed ({status})"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_venv_version_is_read_from_pyvenv_cfg() {
        let config = "home = /usr/bin\ninclude-system-site-packages = false\n\
                      version = 3.11.2\nexecutable = /usr/bin/python3.11\n";
        assert_eq!(venv_version(config), Some("3.11.2"));
        assert_eq!(venv_version("home = /usr/bin\n"), None);
    }

    #[test]
    fn the_requirements_pin_every_package() {
        let path = test_dir().join(REQUIREMENTS);
        let text = fs::read_to_string(&path).expect("the requirements file is readable");
        let pins: Vec<_> = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .collect();
        assert!(pins.iter().any(|pin| pin.starts_with("signalrcore==")));
        for pin in pins {
            let (name, version) = pin
                .split_once("==")
                .unwrap_or_else(|| panic!("`{pin}` is not pinned with =="));
            assert!(!name.is_empty() && !version.is_empty() && !version.contains('*'));
        }
    }
}
