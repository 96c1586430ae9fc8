//! Tools the external test tiers need besides redis-server: Chromium for the
//! browser test.

use std::path::{Path, PathBuf};

use crate::redis::{apt_install, find_program, is_root};

/// Where Debian's `chromium` package puts the browser; the browser test
/// looks there unless `SWITCHBOARD_CHROMIUM` says otherwise.
pub(crate) const CHROMIUM: &str = "/usr/bin/chromium";

/// Returns the Chromium binary, installing Debian's `chromium` package first
/// when it is missing and this process may do so (root, with apt-get).
pub(crate) fn find_or_install_chromium() -> Result<PathBuf, String> {
    let path = Path::new(CHROMIUM);
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    match find_program("apt-get") {
        Some(apt_get) if is_root() => {
            eprintln!(
                "xtask: {CHROMIUM} not found; installing Debian's `chromium` package with apt-get"
            );
            apt_install(&apt_get, "chromium")?;
            if path.is_file() {
                Ok(path.to_path_buf())
            } else {
                Err(format!(
                    "{CHROMIUM} is still missing after installing `chromium`"
                ))
            }
        }
        _ => Err(format!(
            "the browser test needs Chromium at {CHROMIUM}: install it (Debian/Ubuntu: \
             sudo apt-get install chromium)"
        )),
    }
}
