//! `tokenvault dev-certs`: development TLS material in data/dev/tls/ (never committed).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::devpki::DevCa;

/// The development clients and what the default config lets them do.
pub const DEV_CLIENTS: [&str; 3] = ["app", "tokenizer", "auditor"];

#[derive(Debug, clap::Args)]
pub struct DevCertsArgs {
    /// Directory to write into.
    #[arg(long, default_value = "data/dev/tls")]
    out: PathBuf,
    /// Replace certificates that already exist.
    #[arg(long)]
    force: bool,
}

pub fn run(args: &DevCertsArgs) -> anyhow::Result<()> {
    if args.out.join("ca.pem").exists() && !args.force {
        println!(
            "development certificates already in {} (use --force to replace)",
            args.out.display()
        );
        return Ok(());
    }
    fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let ca = DevCa::new("tokenvault development CA")?;
    write(&args.out.join("ca.pem"), &ca.cert_pem, false)?;
    let server = ca.server()?;
    write(&args.out.join("server.pem"), &server.cert_pem, false)?;
    write(&args.out.join("server-key.pem"), &server.key_pem, true)?;
    for name in DEV_CLIENTS {
        let c = ca.client(name)?;
        write(&args.out.join(format!("{name}.pem")), &c.cert_pem, false)?;
        write(&args.out.join(format!("{name}-key.pem")), &c.key_pem, true)?;
    }
    println!(
        "wrote the development CA, server and clients {} to {}",
        DEV_CLIENTS.join(", "),
        args.out.display()
    );
    Ok(())
}

/// Writes one file. A private key is created with mode 0600 from the start (never
/// written first and restricted after); one left by an earlier run is replaced, not
/// rewritten in place, so it cannot keep a looser mode.
fn write(path: &Path, contents: &str, secret: bool) -> anyhow::Result<()> {
    use std::io::Write;
    if !secret {
        return fs::write(path, contents).with_context(|| format!("writing {}", path.display()));
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("replacing {}", path.display()));
        }
        _ => {}
    }
    crate::secret_file::private_options()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| f.write_all(contents.as_bytes()))
        .with_context(|| format!("writing {}", path.display()))
}
