//! `strata top CONTAINER [ps OPTIONS]`: as Docker does, run the host's `ps` (default `-ef`) and
//! keep the header and the rows whose PID belongs to the container.

use anyhow::Context;
use strata_runtime::container::manage;

use super::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    pub container: String,
    /// Options passed to ps (default -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let rt = global.containers();
    let c = rt.lookup(&args.container)?;
    if !c.is_running() {
        anyhow::bail!("container {} is not running", c.id());
    }
    let pids = manage::pids(&c);
    let ps_args = if args.ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        args.ps_args.clone()
    };
    let out = std::process::Command::new("ps")
        .args(&ps_args)
        .output()
        .context("ps")?;
    if !out.status.success() {
        anyhow::bail!(
            "ps: {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .next()
                .unwrap_or("failed")
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    print!(
        "{}",
        filter_rows(&text, &pids).context("Couldn't find PID field in ps output")?
    );
    Ok(())
}

/// The header and the rows of `ps` output whose PID column names one of `pids`.
fn filter_rows(text: &str, pids: &[i32]) -> Option<String> {
    let mut lines = text.lines();
    let header = lines.next()?;
    let col = header.split_whitespace().position(|h| h == "PID")?;
    let mut out = format!("{header}\n");
    for l in lines {
        let pid = l
            .split_whitespace()
            .nth(col)
            .and_then(|v| v.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            out.push_str(l);
            out.push('\n');
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_header_and_container_rows() {
        let ps = "UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 08:00 ? 00:00:01 init\nroot 42 1 0 08:01 ? 00:00:00 sleep 9\n";
        let got = filter_rows(ps, &[42]).unwrap();
        assert_eq!(
            got,
            "UID PID PPID C STIME TTY TIME CMD\nroot 42 1 0 08:01 ? 00:00:00 sleep 9\n"
        );
        assert!(filter_rows("USER X\n", &[1]).is_none());
    }
}
