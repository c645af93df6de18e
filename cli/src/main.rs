//! `barge`: the command line. Parses arguments, sets up logging, runs a command, maps the
//! outcome to an exit code. The work lives in `run` and in the engine.

// Everything barge prints may hold text a database stores (names, messages, log lines), and
// a source's owners are not trusted: these stand in for println!/eprint!/eprintln! and
// escape control characters and bidirectional overrides instead of handing them to the
// terminal (barge_vocab::strip_controls). Newlines and tabs pass.
macro_rules! outln {
    () => { println!() };
    ($($arg:tt)*) => { println!("{}", barge_vocab::strip_controls(&format!($($arg)*))) };
}
macro_rules! errln {
    () => { eprintln!() };
    ($($arg:tt)*) => { eprintln!("{}", barge_vocab::strip_controls(&format!($($arg)*))) };
}
macro_rules! err {
    ($($arg:tt)*) => { eprint!("{}", barge_vocab::strip_controls(&format!($($arg)*))) };
}

mod args;
mod config;
mod configure;
mod display;
mod jobs;
mod render;
mod run;
mod serve;
mod sync;
mod watch;

use std::process::ExitCode;

use barge_jobs::exit;
use clap::Parser;

fn main() -> ExitCode {
    let cli = match args::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout as usual; errors are redacted, since a URL typed
            // in the wrong place would otherwise be echoed with its password.
            if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            err!("{}", barge_engine::redact(&e.render().to_string()));
            return ExitCode::from(exit::USAGE);
        }
    };
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("BARGE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("barge={level},barge_engine={level}")));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            errln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run::run(cli));
    // Connections and child processes are dropped with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    ExitCode::from(code)
}
