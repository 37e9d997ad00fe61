//! The `-j N` scheduler: up to N packages at once, each started when its
//! build root is built, dependants of a failure cancelled, independent
//! packages finished so that their work is kept.

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::{BuildError, Builder, Built};

impl Builder<'_> {
    /// Builds `roots` and everything they need, up to `opts.jobs` packages at
    /// once. Returns every package of the closure in build order; on failure,
    /// the first error after running packages finished (independent
    /// packages still complete, so their work is kept).
    pub fn build(&self, roots: &[&str]) -> Result<Vec<Built>, BuildError> {
        let order: Vec<String> = self
            .graph
            .closure(roots)?
            .iter()
            .map(|r| r.name.clone())
            .collect();
        self.publish_cached(&order)?;
        let schedule = Mutex::new(self.graph.schedule(roots)?);
        let done: Mutex<BTreeMap<String, Built>> = Mutex::new(BTreeMap::new());
        let errors: Mutex<Vec<BuildError>> = Mutex::new(Vec::new());
        let wake = Condvar::new();
        let jobs = self.opts.jobs.max(1);
        std::thread::scope(|s| {
            for _ in 0..jobs {
                s.spawn(|| loop {
                    let name = {
                        let mut sched = schedule.lock().expect("scheduler lock");
                        loop {
                            if let Some(n) = sched.next_ready() {
                                break Some(n);
                            }
                            if sched.running() == 0 {
                                break None;
                            }
                            sched = wake.wait(sched).expect("scheduler lock");
                        }
                    };
                    let Some(name) = name else {
                        wake.notify_all();
                        return;
                    };
                    let deps = done.lock().expect("results lock").clone();
                    let result = self.package(&name, &deps);
                    let mut sched = schedule.lock().expect("scheduler lock");
                    match result {
                        Ok(b) => {
                            done.lock().expect("results lock").insert(name.clone(), b);
                            sched.complete(&name);
                        }
                        Err(e) => {
                            let mut errs = errors.lock().expect("errors lock");
                            for c in sched.fail(&name) {
                                errs.push(BuildError::Cancelled {
                                    package: c,
                                    dependency: name.clone(),
                                });
                            }
                            errs.insert(0, e);
                        }
                    }
                    wake.notify_all();
                });
            }
        });
        let mut errors = errors.into_inner().expect("errors lock");
        if !errors.is_empty() {
            return Err(errors.remove(0));
        }
        let mut done = done.into_inner().expect("results lock");
        Ok(order.iter().filter_map(|n| done.remove(n)).collect())
    }

    /// Tags every package of `order` (build order) that the local store has
    /// built already into `out/` at once, before anything runs: one wave of
    /// fsyncs and one index.json write, not two of each per image. The
    /// scheduler then finds them tagged.
    fn publish_cached(&self, order: &[String]) -> Result<(), BuildError> {
        if self.opts.out.is_none() || self.opts.rebuild {
            return Ok(());
        }
        let mut done = BTreeMap::new();
        for name in order {
            let recipe = self.graph.recipe(name)?;
            let Some((input, _)) = self.input_of(recipe, &done) else {
                continue;
            };
            if let Some(hit) = self.cached(&input, name) {
                let built = Built::new(recipe, input, hit, true, Duration::ZERO);
                done.insert(name.clone(), built);
            }
        }
        let found: Vec<Built> = order.iter().filter_map(|n| done.remove(n)).collect();
        self.publish_all(&found)
    }
}
