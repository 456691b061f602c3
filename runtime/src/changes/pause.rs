//! Pausing a container while it is committed (`commit --pause`, the default): every process of
//! the container gets `SIGSTOP`, and `SIGCONT` when the guard drops — on success and on error.
//!
//! The container's processes are those in its init process's PID namespace (`exec`'d processes
//! join it too). A container sharing our PID namespace is paused as init's process tree instead,
//! so a pause can never stop processes outside the container.

use std::collections::BTreeSet;
use std::fs;
use std::path::PathBuf;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::ChangesError;

/// Processes stopped by us; resumed on drop.
#[derive(Debug)]
pub struct Paused {
    pids: Vec<Pid>,
}

impl Paused {
    /// Stop every process of the container whose init is `init`.
    pub fn pause(init: Pid) -> Result<Paused, ChangesError> {
        let ns = |pid: &str| fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
        let init_ns = ns(&init.to_string()).ok_or(ChangesError::Pause {
            pid: init.as_raw(),
            source: nix::errno::Errno::ESRCH,
        })?;
        let same_ns_as_us = ns("self").is_some_and(|n| n == init_ns);
        let mut paused = Paused { pids: Vec::new() };
        let mut done: BTreeSet<i32> = BTreeSet::new();
        // Stop until no new member shows up: a process may fork while we stop its siblings.
        for _ in 0..16 {
            let members = if same_ns_as_us {
                descendants(init)
            } else {
                in_namespace(&init_ns)
            };
            let new: Vec<i32> = members.into_iter().filter(|p| !done.contains(p)).collect();
            if new.is_empty() {
                return Ok(paused);
            }
            for p in new {
                done.insert(p);
                match kill(Pid::from_raw(p), Signal::SIGSTOP) {
                    Ok(()) => paused.pids.push(Pid::from_raw(p)),
                    Err(nix::errno::Errno::ESRCH) => {}
                    Err(source) => return Err(ChangesError::Pause { pid: p, source }),
                }
            }
        }
        Ok(paused)
    }

    /// How many processes are stopped.
    pub fn len(&self) -> usize {
        self.pids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pids.is_empty()
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        for p in &self.pids {
            let _ = kill(*p, Signal::SIGCONT);
        }
    }
}

fn proc_pids() -> Vec<i32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

fn in_namespace(ns: &PathBuf) -> Vec<i32> {
    proc_pids()
        .into_iter()
        .filter(|p| fs::read_link(format!("/proc/{p}/ns/pid")).is_ok_and(|n| &n == ns))
        .collect()
}

/// `init` and all its descendants, from the parent links in `/proc/<pid>/stat`.
fn descendants(init: Pid) -> Vec<i32> {
    let parents: Vec<(i32, i32)> = proc_pids()
        .into_iter()
        .filter_map(|p| {
            let stat = fs::read_to_string(format!("/proc/{p}/stat")).ok()?;
            // The command name may hold spaces and parens: fields start after the last ')'.
            let rest = &stat[stat.rfind(')')? + 1..];
            let ppid = rest.split_whitespace().nth(1)?.parse().ok()?;
            Some((p, ppid))
        })
        .collect();
    let mut set: BTreeSet<i32> = BTreeSet::from([init.as_raw()]);
    loop {
        let before = set.len();
        for (p, pp) in &parents {
            if set.contains(pp) {
                set.insert(*p);
            }
        }
        if set.len() == before {
            break;
        }
    }
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    fn state(pid: u32) -> char {
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let rest = &stat[stat.rfind(')').unwrap() + 1..];
        rest.trim_start().chars().next().unwrap()
    }

    #[test]
    fn pauses_a_process_tree_and_resumes_on_drop() {
        // A shell with a child, both in our PID namespace: the tree rule applies.
        let mut child = Command::new("sh")
            .args(["-c", "sleep 30 & wait"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Wait (under load, a while) until the shell has forked its child.
        let mut tree = descendants(Pid::from_raw(pid as i32));
        for _ in 0..200 {
            if tree.len() >= 2 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
            tree = descendants(Pid::from_raw(pid as i32));
        }
        {
            let paused = Paused::pause(Pid::from_raw(pid as i32)).unwrap();
            assert!(paused.len() >= 2, "shell and sleep stopped: {paused:?}");
            assert_eq!(state(pid), 'T');
        }
        assert_ne!(state(pid), 'T', "resumed on drop");
        for p in tree.iter().filter(|p| **p != pid as i32) {
            let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}
