//! The `switchyard` command line: a thin shell over the library.

use clap::Parser;
use std::process::ExitCode;
use switchyard::cli::{self, Cli};

/// mimalloc instead of glibc's malloc: about 12 % fewer instructions per
/// delivered event, and no heap trimming through `mprotect` in the hot
/// path (docs/benchmarks.md, issue 13). [`bound_allocator_memory`] keeps
/// its resident memory near glibc's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    bound_allocator_memory();
    let cli = Cli::parse();
    match cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {}", cli::describe_error(&error));
            ExitCode::FAILURE
        }
    }
}

/// mimalloc's `purge_delay` option (`mi_option_e` in mimalloc 3's
/// `mimalloc.h`; the sys crate names only older options). A test below
/// checks that the number holds this option's default.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// By default mimalloc keeps freed pages for a second before it returns
/// them; under a retry backlog that (with eager commit, which
/// `.cargo/config.toml` turns off) put the server at 112–133 MB against
/// 67–70 MB with glibc. Returning them at once measured 74–81 MB.
fn bound_allocator_memory() {
    // `MIMALLOC_PURGE_DELAY` still wins, for an operator experimenting.
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one option value; mimalloc reads it again at every
        // purge, so setting it after start-up takes effect.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `arena_eager_commit`, set at build time (`.cargo/config.toml`).
    const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;

    #[test]
    fn the_option_numbers_name_the_options_we_mean() {
        // `bound_allocator_memory` does not run in tests: these are the
        // defaults this build gives the options (mimalloc 3's `options.c`,
        // and `.cargo/config.toml` for eager commit, 2 without it).
        // SAFETY: reads one option value.
        let (eager_commit, purge_delay) = unsafe {
            (
                libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT),
                libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY),
            )
        };
        assert_eq!(eager_commit, 0, "arenas are committed on demand");
        assert_eq!(purge_delay, 1000, "purge_delay defaults to 1000 ms");
    }
}
