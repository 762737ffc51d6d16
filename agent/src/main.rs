//! The `spanhook` command.

use std::process::ExitCode;

fn main() -> ExitCode {
    spanhook::cli::main()
}
