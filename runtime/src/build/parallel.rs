//! Independent stages built at the same time. The stages a build needs are grouped in *waves*
//! (every stage of a wave has its dependencies in earlier waves); a wave of several stages runs
//! one thread per stage, each with its own executor whose events are buffered and shown stage by
//! stage once the wave is done, so the output reads as a sequential build (step numbers follow
//! it). Images the stages need are resolved (and pulled) on the calling thread first.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::exec::{BuildHost, Builder, Event};
use super::instructions::{CopyArgs, Instruction};
use super::tree::Tree;
use super::BuildError;
use crate::digest::ImageId;
use crate::reference::Reference;
use crate::store::ImageRecord;

/// Group `order` (stage indices) into waves by their dependencies.
pub(super) fn waves(order: &[usize], deps: impl Fn(usize) -> Vec<usize>) -> Vec<Vec<usize>> {
    let mut done: HashSet<usize> = HashSet::new();
    let mut left: Vec<usize> = order.to_vec();
    let mut out = Vec::new();
    while !left.is_empty() {
        let ready: Vec<usize> = left
            .iter()
            .copied()
            .filter(|i| {
                deps(*i)
                    .iter()
                    .all(|d| done.contains(d) || !order.contains(d))
            })
            .collect();
        // Dependencies always name earlier stages, so some stage is always ready; guard anyway.
        let ready = if ready.is_empty() {
            vec![left[0]]
        } else {
            ready
        };
        done.extend(ready.iter().copied());
        left.retain(|i| !ready.contains(i));
        out.push(ready);
    }
    out
}

/// An event kept for later.
enum Owned {
    Step(usize, usize, String),
    UsingCache,
    Running(String),
    Output(Vec<u8>),
    Removed(String),
    Image(ImageId),
    Triggers(usize),
    Warning(String),
}

impl Owned {
    fn of(e: Event<'_>) -> Owned {
        match e {
            Event::Step { n, total, text } => Owned::Step(n, total, text.to_string()),
            Event::UsingCache => Owned::UsingCache,
            Event::Running(id) => Owned::Running(id.to_string()),
            Event::Output(b) => Owned::Output(b.to_vec()),
            Event::Removed(id) => Owned::Removed(id.to_string()),
            Event::Image(id) => Owned::Image(id.clone()),
            Event::Triggers(n) => Owned::Triggers(n),
            Event::Warning(w) => Owned::Warning(w),
        }
    }

    fn replay(&self, host: &mut dyn BuildHost) {
        host.event(match self {
            Owned::Step(n, total, text) => Event::Step {
                n: *n,
                total: *total,
                text,
            },
            Owned::UsingCache => Event::UsingCache,
            Owned::Running(id) => Event::Running(id),
            Owned::Output(b) => Event::Output(b),
            Owned::Removed(id) => Event::Removed(id),
            Owned::Image(id) => Event::Image(id),
            Owned::Triggers(n) => Event::Triggers(*n),
            Owned::Warning(w) => Event::Warning(w.clone()),
        });
    }
}

/// The host of a stage built on a thread: keeps events, never pulls, follows a shared flag.
struct Buffer<'a> {
    events: Vec<Owned>,
    cancel: &'a AtomicBool,
}

impl BuildHost for Buffer<'_> {
    fn event(&mut self, e: Event<'_>) {
        self.events.push(Owned::of(e));
    }

    fn pull(
        &mut self,
        reference: &Reference,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        Err(format!(
            "{} was not pulled before the stage started",
            reference.familiar()
        )
        .into())
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// What one stage's thread hands back.
struct Outcome {
    image: Result<Option<ImageRecord>, BuildError>,
    events: Vec<Owned>,
    used_args: HashSet<String>,
}

/// Build the stages of `wave` at once; `offsets[k]` is the step number before stage `wave[k]`.
pub(super) fn build_wave(
    b: &mut Builder<'_>,
    wave: &[usize],
    offsets: &[usize],
    target: usize,
) -> Result<(), BuildError> {
    // Resolve (and pull) every image the wave's stages name, here, with the real host.
    for &i in wave {
        let stage = b.df.stages[i].clone();
        let base = b.expand(&stage.base, &b.meta.clone())?;
        let is_stage = b.df.stages[..i]
            .iter()
            .any(|s| s.name.as_deref() == Some(base.to_ascii_lowercase().as_str()));
        if !is_stage && base != "scratch" {
            b.image_for(&base)?;
        }
        for step in &stage.steps {
            if let Instruction::Copy(CopyArgs { from: Some(f), .. }) = &step.instruction {
                if let Ok(f) = b.expand(f, &b.meta.clone()) {
                    if b.stage_index(&f, i).is_none() {
                        b.image_for(&f)?;
                    }
                }
            }
        }
    }
    let cancel = AtomicBool::new(false);
    let outcomes: Vec<Outcome> = std::thread::scope(|scope| {
        let handles: Vec<_> = wave
            .iter()
            .zip(offsets)
            .map(|(&i, &offset)| {
                let (store, rt, opts) = (b.store, b.rt, b.opts);
                let (df, built, meta) = (b.df.clone(), b.built.clone(), b.meta.clone());
                let (ignore, total, cancel) = (b.ignore.clone(), b.total, &cancel);
                scope.spawn(move || {
                    let mut host = Buffer {
                        events: Vec::new(),
                        cancel,
                    };
                    let image = match Tree::context(&opts.context) {
                        Ok(context) => {
                            let mut sb = Builder {
                                store,
                                rt,
                                opts,
                                host: &mut host,
                                df,
                                context,
                                ignore,
                                step: offset,
                                total,
                                built,
                                meta,
                                used_args: HashSet::new(),
                                offline: true,
                            };
                            let image = sb.build_stage(i, target);
                            let used = std::mem::take(&mut sb.used_args);
                            (image, used)
                        }
                        Err(e) => (
                            Err(BuildError::Fs {
                                path: opts.context.display().to_string(),
                                source: e,
                            }),
                            HashSet::new(),
                        ),
                    };
                    Outcome {
                        image: image.0,
                        used_args: image.1,
                        events: host.events,
                    }
                })
            })
            .collect();
        // Relay Ctrl-C to the stages while they run.
        while !handles.iter().all(|h| h.is_finished()) {
            if b.host.cancelled() {
                cancel.store(true, Ordering::Relaxed);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| Outcome {
                    image: Err(BuildError::Cancelled),
                    events: Vec::new(),
                    used_args: HashSet::new(),
                })
            })
            .collect()
    });
    // Show each stage's output in order; the first failure ends the build.
    for (&i, out) in wave.iter().zip(outcomes) {
        for e in &out.events {
            e.replay(b.host);
        }
        b.used_args.extend(out.used_args);
        let image = out.image?;
        b.built.insert(i, image);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waves_follow_dependencies() {
        // 0 and 2 are independent, 1 needs 0, 3 needs 1 and 2.
        let deps = |i: usize| match i {
            1 => vec![0],
            3 => vec![1, 2],
            _ => vec![],
        };
        assert_eq!(waves(&[0, 1, 2, 3], deps), [vec![0, 2], vec![1], vec![3]]);
        assert_eq!(waves(&[1, 3], deps), [vec![1], vec![3]]);
    }
}
