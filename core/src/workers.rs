//! How many workers an engine runs: the bounds, and `COOP_WORKERS`.

use crate::error::{Error, Result};

/// The largest worker count a pool or thread engine accepts.
pub const MAX_WORKERS: usize = 1024;

/// The environment variable that sets the worker count of engines not given
/// one (like `RAYON_NUM_THREADS` for rayon): see [`default_workers`].
pub const ENV_WORKERS: &str = "COOP_WORKERS";

/// The worker count of an engine not given one: [`ENV_WORKERS`]
/// (`COOP_WORKERS`) if it is set, else one per core (at most [`MAX_WORKERS`]).
///
/// [`Pool::new`](crate::Pool::new), a [`PoolBuilder`](crate::PoolBuilder) without [`workers`](crate::PoolBuilder::workers)
/// and an [`AnyEngine`](crate::AnyEngine) without a worker count use it; a
/// count given in code wins over the variable. Fails with
/// [`Error::InvalidWorkersVar`] if the variable is set to anything but a
/// whole number from 1 to [`MAX_WORKERS`] (an empty value included): a
/// typo silently ignored would run on every core.
pub fn default_workers() -> Result<usize> {
    let set = parse_workers_var(std::env::var_os(ENV_WORKERS).as_deref())?;
    Ok(set.unwrap_or_else(|| num_cpus::get().clamp(1, MAX_WORKERS)))
}

/// The worker count `value` of [`ENV_WORKERS`] sets, if it is set.
fn parse_workers_var(value: Option<&std::ffi::OsStr>) -> Result<Option<usize>> {
    let Some(value) = value else {
        return Ok(None);
    };
    match value.to_str().and_then(|text| text.parse::<usize>().ok()) {
        Some(count) if (1..=MAX_WORKERS).contains(&count) => Ok(Some(count)),
        _ => Err(Error::InvalidWorkersVar {
            var: ENV_WORKERS,
            value: value.to_string_lossy().into_owned(),
            max: MAX_WORKERS,
        }),
    }
}

pub(crate) fn check_worker_count(requested: usize) -> Result<()> {
    if (1..=MAX_WORKERS).contains(&requested) {
        Ok(())
    } else {
        Err(Error::InvalidWorkerCount {
            requested,
            max: MAX_WORKERS,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_var_sets_a_count_or_is_refused() {
        use std::ffi::OsStr;
        assert_eq!(parse_workers_var(None).unwrap(), None);
        assert_eq!(parse_workers_var(Some(OsStr::new("3"))).unwrap(), Some(3));
        assert_eq!(
            parse_workers_var(Some(OsStr::new("1024"))).unwrap(),
            Some(MAX_WORKERS)
        );
        for bad in ["", "0", "1025", "-1", " 4", "4 ", "four", "2.5"] {
            let err = parse_workers_var(Some(OsStr::new(bad))).unwrap_err();
            assert!(
                matches!(&err, Error::InvalidWorkersVar { value, .. } if value == bad),
                "{err}"
            );
            let message = err.to_string();
            assert!(
                message.contains("COOP_WORKERS") && message.contains("1024"),
                "{message}"
            );
        }
    }
}
