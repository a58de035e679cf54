//! Reading a secret from a file only its owner may read. A leaf module: `hsm` (the PIN
//! file) and `officers` (officer keys) use it without importing `config`, which imports
//! them.

use std::fs;
use std::path::Path;

/// Reads a secret from a file that neither group nor others may read (PIN files, officer
/// keys). The contents come back in zeroizing memory; errors say what to fix.
pub fn read_private_file(path: &Path) -> Result<zeroize::Zeroizing<String>, String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path)
            .map_err(|e| e.to_string())?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(format!(
                "mode {:o} lets others read it — run chmod 600 {}",
                mode & 0o777,
                path.display()
            ));
        }
    }
    fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| e.to_string())
}
