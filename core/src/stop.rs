//! Ending a job early: a deadline ([`Run::deadline`](crate::Run::deadline))
//! and a [`CancelToken`] another thread can trip.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::error::{Error, Result};

/// Cancels the jobs it is given to ([`Run::cancel_token`](crate::Run::cancel_token))
/// from anywhere: another thread, a Ctrl-C handler. Clones share one state.
///
/// A cancelled job ends with [`Error::Cancelled`]; on a [`Pool`](crate::Pool)
/// the workers running its tasks are killed and replaced before the next
/// job, so the pool stays usable. A token stays cancelled: make a new one
/// (or [`reset`](CancelToken::reset) it) for the next job.
///
/// ```no_run
/// # use coop::prelude::*;
/// # fn demo<J: Job>(pool: &Pool, job: &J, input: &Input) -> coop::Result<()> {
/// let cancel = coop::CancelToken::new();
/// let trip = cancel.clone();
/// std::thread::spawn(move || {
///     std::thread::sleep(std::time::Duration::from_secs(5));
///     trip.cancel();
/// });
/// match Run::new(job, input).cancel_token(&cancel).on(pool) {
///     Err(coop::Error::Cancelled { .. }) => eprintln!("gave up after 5 s"),
///     other => { other?; }
/// }
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// A token not cancelled yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancels the jobs run with this token, now and from now on. Cheap and
    /// lock-free: safe in a signal handler's thread.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Release);
    }

    /// Whether [`cancel`](CancelToken::cancel) was called (since the last
    /// [`reset`](CancelToken::reset)).
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    /// Makes the token usable for another job.
    pub fn reset(&self) {
        self.0.store(false, Ordering::Release);
    }
}

/// When a running job must stop: what engines check between tasks (in
/// process) or between events (the pool's coordinator).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stop<'a> {
    pub(crate) deadline: Option<Instant>,
    pub(crate) cancel: Option<&'a CancelToken>,
}

impl Stop<'_> {
    /// `Err` if job `job` must stop now, having `done` of `total` tasks.
    pub(crate) fn check(&self, job: &'static str, done: usize, total: usize) -> Result<()> {
        if self.cancel.is_some_and(CancelToken::is_cancelled) {
            return Err(Error::Cancelled { job, done, total });
        }
        if self.deadline.is_some_and(|deadline| Instant::now() >= deadline) {
            return Err(Error::DeadlineExceeded { job, done, total });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_stop_says_why_and_how_far_the_job_got() {
        assert!(Stop::default().check("j", 0, 1).is_ok());
        let token = CancelToken::new();
        let stop = Stop {
            deadline: Some(Instant::now() + Duration::from_secs(3600)),
            cancel: Some(&token),
        };
        assert!(stop.check("j", 0, 1).is_ok());
        token.clone().cancel();
        let err = stop.check("j", 3, 8).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Cancelled {
                    done: 3,
                    total: 8,
                    ..
                }
            ),
            "{err}"
        );
        token.reset();
        let past = Stop {
            deadline: Some(Instant::now()),
            cancel: Some(&token),
        };
        let err = past.check("j", 1, 2).unwrap_err();
        assert!(matches!(err, Error::DeadlineExceeded { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "job `j` did not finish by its deadline (1 of 2 tasks done); its tasks in flight were stopped"
        );
    }
}
