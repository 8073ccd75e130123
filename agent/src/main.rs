//! The `llmtap` binary: parses the command line, sets up logging, and hands
//! over to `run` (or `demo`). Every error ends as one line on stderr.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use llmtap::cli::{Cli, Command, DemoArgs, LogFormat};
use llmtap::run::Outcome;

/// Logs at `LLMTAP_LOG`'s filter (`info` when unset); a filter that does
/// not parse is an error, not a silent `info`.
fn init_logging(format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("LLMTAP_LOG") {
        Ok(value) => tracing_subscriber::EnvFilter::try_new(&value)
            .map_err(|e| format!("LLMTAP_LOG {value:?} is not a log filter: {e}"))?,
        Err(_) => tracing_subscriber::EnvFilter::new("info"),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::try_parse().unwrap_or_else(|err| exit_on_bad_arguments(err));
    if let Err(err) = init_logging(cli.watch.log_format) {
        eprintln!("llmtap: error: {err}");
        return ExitCode::FAILURE;
    }
    let result = match cli.command {
        Some(Command::Demo(args)) => demo(args).await.map(|()| ExitCode::SUCCESS),
        None => llmtap::run::run(cli.watch)
            .await
            .map(|outcome| match outcome {
                Outcome::Stopped | Outcome::Replayed | Outcome::TargetsExited => ExitCode::SUCCESS,
                Outcome::CommandExited(status) => {
                    ExitCode::from(status.code().unwrap_or(1).clamp(0, 255) as u8)
                }
            }),
    };
    result.unwrap_or_else(|err| {
        eprintln!("llmtap: error: {}", one_line(&err));
        ExitCode::FAILURE
    })
}

#[cfg(feature = "demo")]
async fn demo(args: DemoArgs) -> anyhow::Result<()> {
    llmtap::demo::run(args).await
}

#[cfg(not(feature = "demo"))]
async fn demo(_: DemoArgs) -> anyhow::Result<()> {
    anyhow::bail!("this llmtap was built without the demo (cargo feature `demo`)")
}

/// Help and version go out as clap writes them; a bad argument is one line
/// on stderr, like every other startup error (clap's own rendering adds a
/// blank line and a hint).
fn exit_on_bad_arguments(err: clap::Error) -> ! {
    if !err.use_stderr() {
        err.exit();
    }
    // The message is the first paragraph: some go on a line or two (the
    // arguments a flag requires).
    let rendered = err.to_string();
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = message.join(" ");
    let message = message.strip_prefix("error: ").unwrap_or(&message);
    eprintln!("llmtap: error: {message} (see llmtap --help)");
    std::process::exit(err.exit_code());
}

/// The error and its causes on one line, each cause once: some error
/// messages already quote their source.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}
