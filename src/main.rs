//! The `commonscloud` binary: daemon and CLI in one.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // One crypto provider for every TLS user (lettre, later the front door):
    // with two in the tree, rustls would refuse to pick one.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let cli = commonscloud::cli::Cli::parse();
    match commonscloud::cli::run(cli) {
        Ok(code) => std::process::ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
