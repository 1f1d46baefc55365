//! The `commonscloud` binary: daemon and CLI in one.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = commonscloud::cli::Cli::parse();
    match commonscloud::cli::run(cli) {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
