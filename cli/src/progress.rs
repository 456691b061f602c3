//! The one progress renderer of `pull`, `push` and `run`'s implicit pull, in Docker's format.
//!
//! On a terminal, one live line per layer (`<id>: <status>`, with Docker's
//! `[=====>     ]  1.2MB/3.4MB` bar while bytes move), redrawn in place: cursor up over the
//! block (`ESC[nA`), then each line cleared (`ESC[2K`) and rewritten. Byte-count updates redraw at
//! most every 100 ms; status changes always do. A plain line (`Pulling from`, `Digest:`, `The
//! push refers to`) ends the block. Piped, only the status lines that carry no bar are printed,
//! one per change, as Docker does.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use strata_runtime::registry::{LayerStatus, PullEvent, PullOutcome, PushEvent, PushStatus};

/// The renderer. Events may come from several download/upload threads.
pub struct Progress {
    quiet: bool,
    tty: bool,
    state: Mutex<State>,
}

struct State {
    out: Box<dyn Write + Send>,
    /// Layer ids in first-seen order with their current line.
    order: Vec<String>,
    lines: BTreeMap<String, String>,
    /// Lines of the live block currently on screen.
    drawn: usize,
    /// When the block was last redrawn.
    last_draw: Option<Instant>,
}

/// What a layer's new status is, for the renderer.
struct LayerLine {
    id: String,
    /// The status text (without bar).
    text: String,
    /// Bytes done and total while transferring: drawn as a bar, never printed when piped.
    bytes: Option<(u64, u64)>,
    /// Printed when piped.
    piped: bool,
}

/// Docker's decimal sizes (`units.HumanSize`-like, as its progress bars print them).
fn human(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.3}GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2}MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.1}kB", n / 1e3)
    } else {
        format!("{n}B")
    }
}

/// Docker's 50-column bar and byte counts.
fn bar(done: u64, total: u64) -> String {
    let width = 50usize;
    let filled = if total == 0 {
        width
    } else {
        ((done as f64 / total as f64) * width as f64) as usize
    }
    .min(width);
    let mut s = String::from("[");
    s.push_str(&"=".repeat(filled.saturating_sub(1)));
    if filled > 0 {
        s.push('>');
    }
    s.push_str(&" ".repeat(width - filled));
    s.push(']');
    format!("{s}  {}/{}", human(done), human(total))
}

impl Progress {
    /// A renderer writing to `out`; `tty` selects the live block, `quiet` prints nothing.
    pub fn new(quiet: bool, tty: bool, out: Box<dyn Write + Send>) -> Progress {
        Progress {
            quiet,
            tty,
            state: Mutex::new(State {
                out,
                order: Vec::new(),
                lines: BTreeMap::new(),
                drawn: 0,
                last_draw: None,
            }),
        }
    }

    /// Render one pull event.
    pub fn pull(&self, e: PullEvent) {
        match e {
            PullEvent::PullingFrom {
                reference,
                repository,
            } => self.plain(&format!("{reference}: Pulling from {repository}"), true),
            PullEvent::Layer { id, status } => self.layer(LayerLine {
                id,
                text: status.text().to_string(),
                bytes: match status {
                    LayerStatus::Downloading { done, total } => Some((done, total)),
                    _ => None,
                },
                piped: !matches!(
                    status,
                    LayerStatus::Downloading { .. } | LayerStatus::Extracting
                ),
            }),
            PullEvent::Digest(d) => self.plain(&format!("Digest: {d}"), false),
        }
    }

    /// Render one push event.
    pub fn push(&self, e: PushEvent) {
        match e {
            PushEvent::Repository(name) => {
                self.plain(&format!("The push refers to repository [{name}]"), true)
            }
            PushEvent::Layer { id, status } => self.layer(LayerLine {
                id,
                text: status.text(),
                bytes: match status {
                    PushStatus::Pushing { done, total } => Some((done, total)),
                    _ => None,
                },
                piped: matches!(
                    status,
                    PushStatus::Pushed | PushStatus::AlreadyExists | PushStatus::MountedFrom(_)
                ),
            }),
        }
    }

    /// A plain line after the live block; `new_block` forgets the layers shown so far.
    fn plain(&self, line: &str, new_block: bool) {
        if self.quiet {
            return;
        }
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if new_block {
            st.order.clear();
            st.lines.clear();
        }
        st.drawn = 0;
        let _ = writeln!(st.out, "{line}");
        let _ = st.out.flush();
    }

    fn layer(&self, l: LayerLine) {
        if self.quiet {
            return;
        }
        let Ok(mut st) = self.state.lock() else {
            return;
        };
        if !self.tty {
            if l.piped {
                let _ = writeln!(st.out, "{}: {}", l.id, l.text);
                let _ = st.out.flush();
            }
            return;
        }
        let text = match l.bytes {
            Some((done, total)) => format!("{} {}", l.text, bar(done, total)),
            None => l.text,
        };
        if !st.lines.contains_key(&l.id) {
            st.order.push(l.id.clone());
        }
        // Byte counts redraw at most every 100 ms; status changes always do.
        let was_moving = st.lines.get(&l.id).is_some_and(|t| t.contains(" ["));
        st.lines.insert(l.id, text);
        let recent = st
            .last_draw
            .is_some_and(|t| t.elapsed() < Duration::from_millis(100));
        if l.bytes.is_some() && was_moving && recent {
            return;
        }
        st.last_draw = Some(Instant::now());
        redraw(&mut st);
        let _ = st.out.flush();
    }

    /// Leave the live block as it is (an error message follows).
    pub fn abandon(&self) {
        if let Ok(mut st) = self.state.lock() {
            let _ = st.out.flush();
        }
    }

    /// A pull's `Status:` line (unless quiet).
    pub fn pull_status(&self, outcome: &PullOutcome) {
        let status = if outcome.up_to_date {
            "Image is up to date for"
        } else {
            "Downloaded newer image for"
        };
        self.plain(
            &format!("Status: {status} {}", outcome.reference.familiar()),
            false,
        );
    }
}

fn redraw(st: &mut State) {
    let mut buf = String::new();
    if st.drawn > 0 {
        buf.push_str(&format!("\x1b[{}A", st.drawn));
    }
    for id in &st.order {
        let line = st.lines.get(id).map(String::as_str).unwrap_or("");
        buf.push_str(&format!("\r\x1b[2K{id}: {line}\n"));
    }
    st.drawn = st.order.len();
    let _ = st.out.write_all(buf.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A `Write` whose bytes the test reads back.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Shared {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn layer(id: &str, status: LayerStatus) -> PullEvent {
        PullEvent::Layer {
            id: id.into(),
            status,
        }
    }

    #[test]
    fn piped_pull_prints_status_lines_without_bars() {
        let out = Shared::default();
        let p = Progress::new(false, false, Box::new(out.clone()));
        p.pull(PullEvent::PullingFrom {
            reference: "latest".into(),
            repository: "library/x".into(),
        });
        p.pull(layer("aaa", LayerStatus::PullingFsLayer));
        p.pull(layer("aaa", LayerStatus::Downloading { done: 1, total: 2 }));
        p.pull(layer("aaa", LayerStatus::Extracting));
        p.pull(layer("aaa", LayerStatus::PullComplete));
        p.pull(PullEvent::Digest("sha256:d".into()));
        assert_eq!(
            out.text(),
            "latest: Pulling from library/x\naaa: Pulling fs layer\naaa: Pull complete\nDigest: sha256:d\n"
        );
    }

    #[test]
    fn piped_push_prints_final_lines_only() {
        let out = Shared::default();
        let p = Progress::new(false, false, Box::new(out.clone()));
        p.push(PushEvent::Repository("127.0.0.1:5000/x".into()));
        for status in [
            PushStatus::Preparing,
            PushStatus::Pushing { done: 5, total: 10 },
            PushStatus::Pushed,
        ] {
            p.push(PushEvent::Layer {
                id: "bbb".into(),
                status,
            });
        }
        assert_eq!(
            out.text(),
            "The push refers to repository [127.0.0.1:5000/x]\nbbb: Pushed\n"
        );
    }

    #[test]
    fn tty_redraws_the_block_in_place_with_docker_bars() {
        let out = Shared::default();
        let p = Progress::new(false, true, Box::new(out.clone()));
        p.pull(layer("aaa", LayerStatus::PullingFsLayer));
        p.pull(layer("bbb", LayerStatus::Waiting));
        p.pull(layer(
            "aaa",
            LayerStatus::Downloading {
                done: 1_500_000,
                total: 3_000_000,
            },
        ));
        // A byte update right after another is not drawn; a status change is.
        p.pull(layer(
            "aaa",
            LayerStatus::Downloading {
                done: 1_600_000,
                total: 3_000_000,
            },
        ));
        p.pull(layer("aaa", LayerStatus::PullComplete));
        let t = out.text();
        let half = format!("[{}>{}]  1.50MB/3.00MB", "=".repeat(24), " ".repeat(25));
        assert!(
            t.contains(&format!("\r\x1b[2Kaaa: Downloading {half}\n")),
            "{t:?}"
        );
        assert!(!t.contains("1.60MB"), "{t:?}");
        assert!(
            t.contains("\x1b[2A\r\x1b[2Kaaa: Pull complete\n\r\x1b[2Kbbb: Waiting\n"),
            "{t:?}"
        );
        // Push uses the same block and bar.
        let out = Shared::default();
        let p = Progress::new(false, true, Box::new(out.clone()));
        p.push(PushEvent::Layer {
            id: "ccc".into(),
            status: PushStatus::Pushing { done: 0, total: 10 },
        });
        assert_eq!(
            out.text(),
            format!("\r\x1b[2Kccc: Pushing [{}]  0B/10B\n", " ".repeat(50))
        );
    }

    #[test]
    fn quiet_prints_nothing() {
        let out = Shared::default();
        let p = Progress::new(true, true, Box::new(out.clone()));
        p.pull(layer("aaa", LayerStatus::PullingFsLayer));
        p.push(PushEvent::Repository("x".into()));
        assert_eq!(out.text(), "");
    }
}
