//! `strata stats [--no-stream] [--format T] [-a] [CONTAINER…]`: CPU, memory, network, block I/O
//! and pids of running containers, from `/proc` of each container's processes (and its memory
//! cgroup when it has one, see `strata_runtime::container::manage::sample`). Without
//! `--no-stream` the table is redrawn every second until interrupted.

use std::io::Write;
use std::time::Duration;

use strata_runtime::container::manage::{self, StatsSample};
use strata_runtime::container::Container;

use super::Global;
use crate::template::Format;
use crate::units;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long = "no-stream")]
    pub no_stream: bool,
    /// Do not truncate output
    #[arg(long = "no-trunc")]
    pub no_trunc: bool,
    /// Format output using a custom template
    #[arg(long)]
    pub format: Option<String>,
    pub containers: Vec<String>,
}

const TABLE: &str = "{{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}";

fn iec(n: u64) -> String {
    // Docker's `units.BytesSize`: binary units, 4 significant digits.
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    format!("{}{}", units::go_g(v, 4), U[i])
}

fn row(
    c: &Container,
    before: &StatsSample,
    after: &StatsSample,
    no_trunc: bool,
) -> serde_json::Value {
    let cpu_delta = after.cpu_ticks.saturating_sub(before.cpu_ticks) as f64;
    let sys_delta = after.system_ticks.saturating_sub(before.system_ticks) as f64;
    let cpu = if sys_delta > 0.0 {
        cpu_delta / sys_delta * after.online_cpus as f64 * 100.0
    } else {
        0.0
    };
    let mem_perc = if after.mem_limit > 0 {
        after.mem_usage as f64 / after.mem_limit as f64 * 100.0
    } else {
        0.0
    };
    let id = if no_trunc {
        c.id().to_string()
    } else {
        c.id().short().to_string()
    };
    serde_json::json!({
        "ID": id,
        "Container": id,
        "Name": c.name(),
        "CPUPerc": format!("{cpu:.2}%"),
        "MemUsage": format!("{} / {}", iec(after.mem_usage), iec(after.mem_limit)),
        "MemPerc": format!("{mem_perc:.2}%"),
        "NetIO": format!("{} / {}", units::human_size_prec(after.net_rx as f64, 3), units::human_size_prec(after.net_tx as f64, 3)),
        "BlockIO": format!("{} / {}", units::human_size_prec(after.blk_read as f64, 3), units::human_size_prec(after.blk_write as f64, 3)),
        "PIDs": after.pids.to_string(),
    })
}

pub fn run(global: &Global, args: Args) -> anyhow::Result<()> {
    let rt = global.containers();
    let format = Format::new(args.format.as_deref(), TABLE)?;
    let header = serde_json::json!({
        "ID": "CONTAINER ID", "Container": "CONTAINER", "Name": "NAME", "CPUPerc": "CPU %",
        "MemUsage": "MEM USAGE / LIMIT", "MemPerc": "MEM %", "NetIO": "NET I/O",
        "BlockIO": "BLOCK I/O", "PIDs": "PIDS",
    });
    let interactive = !args.no_stream;
    loop {
        let containers: Vec<Container> = if args.containers.is_empty() {
            rt.list()?
                .into_iter()
                .filter(|c| args.all || c.is_running())
                .collect()
        } else {
            args.containers
                .iter()
                .map(|n| rt.lookup(n))
                .collect::<Result<_, _>>()?
        };
        let before: Vec<StatsSample> = containers.iter().map(manage::sample).collect();
        std::thread::sleep(Duration::from_millis(if interactive { 1000 } else { 500 }));
        let rows: Vec<serde_json::Value> = containers
            .iter()
            .zip(&before)
            .map(|(c, b)| row(c, b, &manage::sample(c), args.no_trunc))
            .collect();
        let text = format.render(&header, &rows)?;
        let mut out = std::io::stdout().lock();
        if interactive {
            // Clear the screen and redraw, as Docker does on a terminal.
            write!(out, "\x1b[2J\x1b[H")?;
        }
        write!(out, "{text}")?;
        out.flush()?;
        if !interactive {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_sizes() {
        assert_eq!(iec(0), "0B");
        assert_eq!(iec(1536), "1.5KiB");
        assert_eq!(iec(1024 * 1024), "1MiB");
        assert_eq!(iec(7_660_000_000), "7.134GiB");
    }
}
