//! The `tokenvault` binary: parse the command line, start logging, dispatch.
//!
//! Unsafe code is denied here as it is forbidden in the library, but for one call: the
//! allocator setting of [`limit_malloc_arenas`], which has no safe binding.
#![deny(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    limit_malloc_arenas();
    if let Err(e) = tokenvault::telemetry::harden_process() {
        eprintln!("error: {e}");
        return ExitCode::from(1);
    }
    let cli = tokenvault::cli::Cli::parse();
    tokenvault::telemetry::init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(tokenvault::cli::run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Caps glibc's heap arenas at two. glibc gives threads that allocate at the same time
/// arenas of their own (up to eight per core), and each arena keeps the pages it freed:
/// the vault has many such threads (the runtime's workers, one per SQLite connection of
/// the pool, the HSM's), so under steady load its heap crept up. Measured with
/// `scripts/bench --soak 300` (2026-12-06): heap 49 → 56 MB, RSS +7.0 MB from 30 s to the
/// end, still rising; with two arenas 31 → 36 MB, level from the second minute, at the
/// same throughput within this machine's noise. `MALLOC_ARENA_MAX` set by the operator is
/// left to glibc, which read it at start-up.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() {
        return;
    }
    // SAFETY: mallopt only sets a parameter of the allocator, and this runs first in
    // main, before any other thread exists. Its answer (0 when glibc refuses the
    // setting) changes nothing: the allocator then works as it would have.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}
