//! Named fault points for crash tests, shared with the Python layer's
//! `tieredindex.faults`: `TIEREDINDEX_FAULTS=name[:kill[:nth]],...`.
//! Only the `kill` action exists here (SIGKILL the process); unarmed points
//! cost one relaxed atomic load after the first call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;

const ENV_VAR: &str = "TIEREDINDEX_FAULTS";

/// Points reachable in the core.
pub const POINTS: &[&str] = &["seal.compact", "create.after_preallocate"];

struct Armed {
    nth: u32,
    hits: AtomicU32,
}

fn armed() -> &'static HashMap<String, Armed> {
    static ARMED: OnceLock<HashMap<String, Armed>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let spec = std::env::var(ENV_VAR).unwrap_or_default();
        spec.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .filter_map(|item| {
                let mut parts = item.split(':');
                let name = parts.next()?;
                if !POINTS.contains(&name) {
                    return None; // a Python-side point
                }
                let _action = parts.next();
                let nth = parts.next().and_then(|n| n.parse().ok()).unwrap_or(1);
                Some((
                    name.to_owned(),
                    Armed {
                        nth,
                        hits: AtomicU32::new(0),
                    },
                ))
            })
            .collect()
    })
}

/// Kills the process with SIGKILL if `name` is armed and reached its nth hit.
pub fn fault_point(name: &str) {
    let points = armed();
    if points.is_empty() {
        return;
    }
    if let Some(point) = points.get(name) {
        if point.hits.fetch_add(1, Ordering::Relaxed) + 1 == point.nth {
            crate::mapping::kill_self();
        }
    }
}
