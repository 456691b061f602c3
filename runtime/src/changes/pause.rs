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
                paused.wait_stopped();
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
        paused.wait_stopped();
        Ok(paused)
    }

    /// `kill` returns before the signal is acted on: wait (briefly) until every process is
    /// really stopped, so none still writes while the upper dir is read.
    fn wait_stopped(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        for p in &self.pids {
            while !matches!(
                proc_state(p.as_raw()),
                None | Some('T') | Some('t') | Some('Z') | Some('X')
            ) {
                if std::time::Instant::now() > deadline {
                    return;
                }
                std::thread::sleep(std::time::Duration::from_micros(200));
            }
        }
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

/// The state letter of `/proc/<pid>/stat` (`R`, `S`, `T`…), `None` when the process is gone.
fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.trim_start().chars().next()
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

    /// The state once it is no longer `T` (SIGCONT acts asynchronously), or `T` after 5 s.
    fn state_after_resume(pid: u32) -> char {
        for _ in 0..500 {
            let s = state(pid);
            if s != 'T' {
                return s;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        'T'
    }

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
        assert_ne!(state_after_resume(pid), 'T', "resumed on drop");
        for p in tree.iter().filter(|p| **p != pid as i32) {
            let _ = kill(Pid::from_raw(*p), Signal::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    #[test]
    fn pauses_every_process_of_a_pid_namespace() {
        // `unshare --pid --fork`: a shell as pid 1 of a new PID namespace, with a child.
        let mut outer = Command::new("unshare")
            .args(["--pid", "--fork", "sh", "-c", "sleep 30 & sleep 30 & wait"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let outer_pid = Pid::from_raw(outer.id() as i32);
        let mut members = Vec::new();
        for _ in 0..200 {
            let tree = descendants(outer_pid);
            members = tree
                .into_iter()
                .filter(|p| *p != outer_pid.as_raw())
                .collect();
            if members.len() >= 3 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        assert!(members.len() >= 3, "init and two sleeps: {members:?}");
        // The namespace's pid 1 is the child of `unshare`.
        let ppid = |p: i32| {
            let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
            let rest = stat
                .rsplit_once(')')
                .map(|(_, r)| r.to_string())
                .unwrap_or_default();
            rest.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<i32>().ok())
        };
        let init = *members
            .iter()
            .find(|p| ppid(**p) == Some(outer_pid.as_raw()))
            .unwrap();
        {
            let paused = Paused::pause(Pid::from_raw(init)).unwrap();
            assert_eq!(paused.len(), members.len(), "{paused:?} vs {members:?}");
            for p in &members {
                assert_eq!(state(*p as u32), 'T', "pid {p} stopped");
            }
            assert_ne!(state(outer.id()), 'T', "outside the namespace: untouched");
        }
        for p in &members {
            assert_ne!(state_after_resume(*p as u32), 'T', "pid {p} resumed");
        }
        let _ = kill(Pid::from_raw(init), Signal::SIGKILL);
        let _ = outer.kill();
        let _ = outer.wait();
    }
}
