//! Safety properties of a compute node, checked after every event in simulation.

use super::{Compute, Phase};
use crate::model::Resources;

impl Compute {
    /// Checks every invariant; `Err` names the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        if let Some(v) = self.violations.first() {
            return Err(v.clone());
        }
        if let Some((id, n)) = self.releases.iter().find(|(_, n)| **n > 1) {
            return Err(format!("capacity of execution {id} released {n} times"));
        }
        let mut sum = Resources::default();
        for (id, e) in &self.execs {
            if e.reserved != e.phase.holds_capacity() {
                return Err(format!(
                    "execution {id} in phase {:?} has reserved = {}",
                    e.phase, e.reserved
                ));
            }
            if e.reserved {
                sum = sum.add(&e.resources);
            }
            if (e.phase == Phase::Terminal) != e.outcome.is_some() {
                return Err(format!("execution {id}: terminal phase and outcome disagree"));
            }
        }
        let close = |a: &Resources, b: &Resources| a.fits_in(b) && b.fits_in(a);
        if !close(&sum, &self.reserved) {
            return Err(format!(
                "reserved {} differs from the sum of held executions {sum}",
                self.reserved
            ));
        }
        if !self.reserved.fits_in(&self.cfg.capacity) {
            return Err(format!(
                "reserved {} exceeds capacity {}",
                self.reserved, self.cfg.capacity
            ));
        }
        Ok(())
    }
}
