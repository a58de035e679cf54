//! Files only their owner may read: reading a secret from one (PIN files, officer keys,
//! the server's TLS key) and creating one private from the first byte (database files,
//! private keys). A leaf module: `hsm` (the PIN file) and `officers` (officer keys) use it
//! without importing `config`, which imports them.

use std::fs;
use std::path::Path;

/// Refuses a file that group or others may read; the error says what to fix.
pub fn check_private_mode(path: &Path) -> Result<(), String> {
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
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Reads a secret from a file that neither group nor others may read (PIN files, officer
/// keys). The contents come back in zeroizing memory; errors say what to fix.
pub fn read_private_file(path: &Path) -> Result<zeroize::Zeroizing<String>, String> {
    check_private_mode(path)?;
    fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|e| e.to_string())
}

/// Options that create a file with mode 0600 (on Unix): the mode is given to `open(2)`,
/// so the file is never readable by others, not even between creating and a `chmod`. The
/// mode applies only when the file is created; an existing file keeps its own.
pub fn private_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options
}
