//! Progress lines: every line carries the seconds since the xtask started, so a CI log shows where time goes.

use std::sync::OnceLock;
use std::time::Instant;

fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// Prints one progress line, prefixed with the time since the xtask started.
pub fn say(msg: impl AsRef<str>) {
    let t = started().elapsed().as_secs_f64();
    eprintln!("[xtask {t:7.1}s] {}", msg.as_ref());
}

/// A named step: prints its name when it starts and its duration when it ends.
pub struct Step {
    name: String,
    start: Instant,
}

// === impl Step ===

impl Step {
    pub fn start(name: impl Into<String>) -> Self {
        let name = name.into();
        say(format!("{name} ..."));
        Self {
            name,
            start: Instant::now(),
        }
    }

    pub fn done(self) {
        say(format!(
            "{}: done in {:.1}s",
            self.name,
            self.start.elapsed().as_secs_f64()
        ));
    }
}
