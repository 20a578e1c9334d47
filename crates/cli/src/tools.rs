//! Busybox-style dispatch (`rbd …` / `ceph …` / `rados …` through a symlink to
//! `quarry`) and shell completions.

use std::ffi::OsString;

use clap::error::{ContextKind, ContextValue};

/// The process arguments, with `rbd`/`ceph`/`rados` inserted as the subcommand when
/// the binary was invoked under that name.
pub fn args() -> Vec<OsString> {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let tool = args
        .first()
        .and_then(|a| std::path::Path::new(a).file_name())
        .and_then(|n| n.to_str())
        .map(str::to_string);
    if let Some(t @ ("rbd" | "ceph" | "rados")) = tool.as_deref() {
        args.insert(1, OsString::from(t));
    }
    args
}

/// The tools' runtime (two workers), or `None` after saying why not on
/// stderr as `tool: ...`.
pub fn runtime(tool: &str) -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("{tool}: cannot start runtime: {e}");
            None
        }
    }
}

/// The first value of a clap error's context, `<>` and quotes stripped.
fn context(e: &clap::Error, kind: ContextKind) -> Option<String> {
    let v = match e.get(kind)? {
        ContextValue::String(s) => s.clone(),
        ContextValue::Strings(v) => v.first()?.clone(),
        other => other.to_string(),
    };
    Some(v.trim_matches(['<', '>', '\'', '"']).to_string())
}

/// Report a command-line error the way the tool being imitated does and
/// return the exit code. `--help`/`--version` print and exit 0.
///
/// Ceph 16's `rbd`: a missing argument is EINVAL (22) with
/// `rbd: <what> was not specified`; an unknown option or a bad option
/// value exits 1 (`rbd: unrecognised option '--x'`, `rbd: the argument for
/// option '--x' is invalid`), an unknown command too (`error: unknown
/// option 'x'`). Bare `rbd` prints its usage and exits 0. `ceph` answers
/// every bad command with `Error EINVAL: invalid command` (22). Quarry's
/// own subcommands keep clap's form and code (2).
pub fn usage_error(tool: &str, e: &clap::Error) -> i32 {
    use clap::error::ErrorKind as K;
    match e.kind() {
        K::DisplayHelp | K::DisplayVersion => {
            let _ = e.print();
            return 0;
        }
        K::DisplayHelpOnMissingArgumentOrSubcommand if tool == "rbd" => {
            // Like `rbd` with nothing: usage on stdout, success.
            print!("{}", e.render());
            return 0;
        }
        _ => {}
    }
    let first_line = || {
        e.render()
            .to_string()
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ")
            .to_string()
    };
    match tool {
        "rbd" => {
            let arg = context(e, ContextKind::InvalidArg);
            let (code, msg) = match e.kind() {
                K::MissingRequiredArgument | K::MissingSubcommand | K::TooFewValues => {
                    let what = arg
                        .map(|a| {
                            // `--limit <LIMIT>`: the option's name only.
                            a.split(' ')
                                .next()
                                .unwrap_or_default()
                                .trim_start_matches('-')
                                .to_lowercase()
                                .replace(['_', '-'], " ")
                        })
                        .map(|a| match a.as_str() {
                            // Ceph's words for the usual positionals.
                            "image" | "image spec" => "image name".to_string(),
                            "snap" | "snapshot" => "snapshot name".to_string(),
                            "pool" => "pool name".to_string(),
                            _ => a,
                        })
                        .unwrap_or_else(|| "argument".to_string());
                    (22, format!("rbd: {what} was not specified"))
                }
                // A word that is not an option is a positional too many.
                K::UnknownArgument if arg.as_deref().is_some_and(|a| !a.starts_with('-')) => {
                    (1, "rbd: too many arguments".to_string())
                }
                K::UnknownArgument => (
                    1,
                    format!("rbd: unrecognised option '{}'", arg.unwrap_or_default()),
                ),
                K::InvalidValue | K::ValueValidation | K::InvalidUtf8 => (
                    1,
                    format!(
                        "rbd: the argument for option '{}' is invalid",
                        arg.unwrap_or_default()
                    ),
                ),
                K::InvalidSubcommand => (
                    1,
                    format!(
                        "error: unknown option '{}'",
                        context(e, ContextKind::InvalidSubcommand).unwrap_or_default()
                    ),
                ),
                _ => (22, format!("rbd: {}", first_line())),
            };
            eprintln!("{msg}");
            code
        }
        "ceph" => {
            eprintln!("Invalid command: {}", first_line());
            eprintln!("Error EINVAL: invalid command");
            22
        }
        _ => {
            let _ = e.print();
            e.exit_code()
        }
    }
}

/// Print completions for `shell` to stdout.
pub fn completions(shell: clap_complete::Shell, cmd: &mut clap::Command) {
    let name = cmd.get_name().to_string();
    clap_complete::generate(shell, cmd, name, &mut std::io::stdout());
}

/// The log level `QUARRY_LOG` asks for (`off`, `error`, `warn`, `info`,
/// `debug`, `trace`), `None` when unset; a clear error for anything else.
pub fn log_level() -> Result<Option<tracing::level_filters::LevelFilter>, String> {
    match std::env::var("QUARRY_LOG") {
        Err(std::env::VarError::NotPresent) => Ok(None),
        Err(std::env::VarError::NotUnicode(_)) => Err("QUARRY_LOG is not valid UTF-8".into()),
        Ok(v) if v.trim().is_empty() => Ok(None),
        Ok(v) => v.trim().parse().map(Some).map_err(|_| {
            format!("QUARRY_LOG={v:?}: expected one of off, error, warn, info, debug, trace")
        }),
    }
}

/// The command-line tools (`rbd`, `ceph`, `up`, ...) are quiet unless
/// `QUARRY_LOG` names a level: then the library's logs go to stderr.
pub fn init_tool_logging() -> Result<(), String> {
    if let Some(level) = log_level()? {
        let _ = tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .with_max_level(level)
            .try_init();
    }
    Ok(())
}
