//! `quarry-fsx --seed N --ops M [--dir D] [--reopen-pct P]`: replay or
//! extend a randomized image-engine run (see the library docs).

use std::process::ExitCode;

fn usage() -> ExitCode {
    eprintln!(
        "usage: quarry-fsx [--seed N] [--ops M] [--max-size BYTES] [--dir DIR] [--reopen-pct P]"
    );
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut cfg = quarry_fsx::FsxConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let Some(v) = args.next() else {
            return usage();
        };
        let num = || v.parse::<u64>().map_err(|e| format!("{a}: {v}: {e}"));
        let r = match a.as_str() {
            "--seed" => num().map(|n| cfg.seed = n),
            "--ops" => num().map(|n| cfg.ops = n),
            "--max-size" => num().map(|n| cfg.max_size = n),
            "--reopen-pct" => num().map(|n| cfg.reopen_pct = n),
            "--log-tail" => num().map(|n| cfg.log_tail = n as usize),
            "--dir" => {
                cfg.dir = Some(v.clone().into());
                Ok(())
            }
            _ => return usage(),
        };
        if let Err(e) = r {
            eprintln!("quarry-fsx: {e}");
            return usage();
        }
    }
    match quarry_fsx::run(cfg).await {
        Ok(report) => {
            println!(
                "ok: {:?}; {} bytes verified",
                report.counts, report.bytes_verified
            );
            ExitCode::SUCCESS
        }
        Err(f) => {
            eprintln!("{f}");
            ExitCode::FAILURE
        }
    }
}
