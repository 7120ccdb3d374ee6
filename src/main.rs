//! The `switchyard` command line: a thin shell over the library.

use clap::Parser;
use std::process::ExitCode;
use switchyard::cli::{self, Cli};

/// mimalloc instead of glibc's malloc: 10–12 % fewer instructions per
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

/// mimalloc's option numbers (`mi_option_e` in mimalloc 3's `mimalloc.h`;
/// the sys crate names only older options). A test below checks that each
/// holds the default this build gives it.
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// By default mimalloc keeps freed pages for a second before it returns
/// them, and commits each new arena whole; under a retry backlog that put
/// the server at 112–133 MB against 67–70 MB with glibc. Returning pages at
/// once and committing on demand measured 76–82 MB.
fn bound_allocator_memory() {
    // Either name of the variable, set by an operator, wins: mimalloc reads
    // it only if the option was not set first.
    let operator_set = ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some());
    if !operator_set {
        // SAFETY: sets one option value before any other thread runs;
        // mimalloc reads it again at every purge, so it takes effect.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
    // On-demand commit is a build-time default (`.cargo/config.toml`): the
    // first arena is reserved before `main`. A build whose own `CFLAGS`
    // replaced that one says so rather than using more memory silently.
    // SAFETY: reads one option value.
    if unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_ARENA_EAGER_COMMIT) } != 0 {
        eprintln!(
            "warning: this binary was built without CFLAGS=-DMI_DEFAULT_ARENA_EAGER_COMMIT=0 \
             (.cargo/config.toml), so its allocator commits memory eagerly; \
             set MIMALLOC_ARENA_EAGER_COMMIT=0 in the environment to keep it bounded"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
