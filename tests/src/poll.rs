//! Waiting for the cluster to converge, with a deadline and the last observation in the error.

use std::thread::sleep;
use std::time::{Duration, Instant};

use anyhow::bail;

/// Calls `check` every 250 ms until it returns `Ok(Some(_))`.
///
/// `Ok(None)` and `Err(_)` both mean "not yet"; after `timeout` the error names `what` and the last error.
pub fn poll<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let start = Instant::now();
    let mut last = String::from("no error, condition not met");
    loop {
        match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => {}
            Err(e) => last = format!("{e:#}"),
        }
        if start.elapsed() > timeout {
            bail!(
                "timed out after {}s waiting for {what} (last: {last})",
                timeout.as_secs()
            );
        }
        sleep(Duration::from_millis(250));
    }
}
