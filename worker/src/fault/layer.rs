//! Fault injection as a layer around a worker's [`Link`] and its job
//! instances: the task loop runs the same whether or not a fault is armed,
//! and never sees one. A worker without a fault (every worker, without the
//! feature `fault-injection`) is not wrapped at all.
//!
//! Where each point fires, as in [`Point`]'s docs:
//! - [`Point::Task`], [`Point::Tile`]: in the job instance, after the task
//!   ran and before the loop reports it (a tile first half scribbled over);
//! - [`Point::Partial`]: in the job instance, after the partial was encoded;
//! - [`Point::AfterPartial`]: in the link, once the partial was sent.
//!
//! A fault that leaves the worker running ([`Aftermath`]) needs the channel:
//! the instance leaves it pending, and the link carries it out in place of
//! the reply the loop then sends.

use std::cell::Cell;
use std::ops::Range;
use std::rc::Rc;

use super::{Aftermath, Fault, GARBAGE_PARTIAL, Point, idle, strike};
use crate::job::{InstanceError, JobInstance};
use crate::link::{Link, PayloadKind};
use crate::output::Output;
use crate::protocol::{FromWorker, Payload, ToWorker};
use crate::region::Region;

/// What a fault does to a link besides what [`Link`] offers: the two
/// behaviours that break the channel rather than the process.
pub(crate) trait Breakable: Link {
    /// Sends a message that decodes as no [`FromWorker`] ([`super::Garbage`]).
    fn send_garbage(&mut self) -> Result<(), Self::Error>;

    /// Closes the way to the coordinator, leaving the way from it open.
    fn close_sending(&mut self);
}

/// The fault, shared by the link and the job instances it wraps.
#[derive(Debug)]
struct Armed {
    fault: Fault,
    /// The task being run (the instance is not told its index).
    task: Cell<Option<u32>>,
    /// What a fault in the job left to do with the channel, in place of the
    /// next reply.
    pending: Cell<Option<Aftermath>>,
}

impl Armed {
    /// Strikes if the fault fires here; returns what is left to do with the channel.
    fn strikes(&self, point: Point, task: Option<u32>) -> Option<Aftermath> {
        (self.fault)
            .fires(point, task)
            .then(|| strike(point, self.fault.behaviour))
    }
}

/// A link with a fault armed: wraps the link `L` and every job it opens.
#[derive(Debug)]
pub(crate) struct FaultyLink<L> {
    inner: L,
    armed: Rc<Armed>,
}

impl<L: Breakable> FaultyLink<L> {
    pub(crate) fn new(inner: L, fault: Fault) -> Self {
        FaultyLink {
            inner,
            armed: Rc::new(Armed {
                fault,
                task: Cell::new(None),
                pending: Cell::new(None),
            }),
        }
    }

    /// The rest of a fault that leaves the worker running: garbage on the
    /// channel (then the worker goes on, until the coordinator kills it), or
    /// a closed channel and an idle process.
    fn carry_out(&mut self, aftermath: Aftermath) -> Result<(), L::Error> {
        match aftermath {
            Aftermath::SendGarbage => self.inner.send_garbage(),
            Aftermath::CloseChannel => {
                self.inner.close_sending();
                idle()
            }
        }
    }
}

impl<L: Breakable> Link for FaultyLink<L> {
    type Error = L::Error;

    fn receive(&mut self) -> Result<Option<ToWorker>, L::Error> {
        let message = self.inner.receive()?;
        if let Some(ToWorker::Task { task, .. }) = &message {
            self.armed.task.set(Some(*task));
        }
        Ok(message)
    }

    fn receive_chunk(&mut self, len: u64) -> Result<Vec<Vec<u8>>, L::Error> {
        self.inner.receive_chunk(len)
    }

    fn take_cancelled(&mut self) -> Result<Option<u64>, L::Error> {
        self.inner.take_cancelled()
    }

    fn payload(&mut self, kind: PayloadKind, bytes: Vec<u8>) -> Payload {
        self.inner.payload(kind, bytes)
    }

    fn send(&mut self, message: FromWorker) -> Result<(), L::Error> {
        if let Some(aftermath) = self.armed.pending.take() {
            // The reply to the task or flush the fault struck in: not sent.
            return self.carry_out(aftermath);
        }
        let partial = matches!(message, FromWorker::Partial { .. });
        self.inner.send(message)?;
        if partial && let Some(aftermath) = self.armed.strikes(Point::AfterPartial, None) {
            self.carry_out(aftermath)?;
        }
        Ok(())
    }

    fn wrap(&mut self, instance: Box<dyn JobInstance>) -> Box<dyn JobInstance> {
        Box::new(FaultyInstance {
            inner: self.inner.wrap(instance),
            armed: self.armed.clone(),
        })
    }
}

/// A job instance with a fault armed: strikes in tasks and flushes, where
/// the loop catches panics as it catches the job's own.
struct FaultyInstance {
    inner: Box<dyn JobInstance>,
    armed: Rc<Armed>,
}

impl JobInstance for FaultyInstance {
    fn run_task(&mut self, spec: &[u8]) -> Result<Range<usize>, InstanceError> {
        let range = self.inner.run_task(spec)?;
        let task = self.armed.task.get();
        let mut aftermath = self.armed.strikes(Point::Task, task);
        if self.armed.fault.fires(Point::Tile, task) {
            scribble(self.inner.as_mut(), range.clone());
            aftermath = Some(strike(Point::Tile, self.armed.fault.behaviour));
        }
        self.armed.pending.set(aftermath);
        Ok(range)
    }

    fn regions_mut(&mut self) -> &mut [Region] {
        self.inner.regions_mut()
    }

    fn output(&self) -> &Output {
        self.inner.output()
    }

    fn output_mut(&mut self) -> &mut Output {
        self.inner.output_mut()
    }

    fn take_partial(&mut self) -> Result<Vec<u8>, InstanceError> {
        let bytes = self.inner.take_partial()?;
        match self.armed.strikes(Point::Partial, None) {
            // A well-formed partial message whose bytes do not decode.
            Some(Aftermath::SendGarbage) => Ok(GARBAGE_PARTIAL.to_vec()),
            Some(Aftermath::CloseChannel) => {
                self.armed.pending.set(Some(Aftermath::CloseChannel));
                Ok(bytes)
            }
            None => Ok(bytes),
        }
    }
}

/// A worker dying while writing a tile: the first half of the task's tile is
/// overwritten with garbage, as if the worker died halfway through it.
fn scribble(instance: &mut dyn JobInstance, range: Range<usize>) {
    // SAFETY: `range` is this task's own output range, which the coordinator
    // checked is disjoint from every other task's; the task has just written
    // it and nothing else touches it until the task is reported done.
    let bytes = unsafe { instance.output_mut().bytes_mut() };
    if let Some(tile) = bytes.get_mut(range) {
        let half = tile.len() / 2;
        tile[..half].fill(0xEE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fault::Behaviour;
    use crate::protocol::SegmentDesc;
    use crate::serve;
    use crate::testing::{ENTRY, FakeLink, TILE, WRITE, private, start, summary, task};

    impl Breakable for FakeLink {
        fn send_garbage(&mut self) -> Result<(), Self::Error> {
            self.garbage += 1;
            Ok(())
        }

        fn close_sending(&mut self) {
            unreachable!("the worker would idle forever");
        }
    }

    /// Serves a job with a private output of 4 bytes: task 0 writes bytes
    /// 0..2 and task 1 bytes 2..4, then a flush; returns what was said and
    /// the number of garbage messages.
    fn served_with(fault: Fault) -> (Vec<String>, usize) {
        let link = FakeLink::new([
            start(1, 0, vec![SegmentDesc::Private { len: 1 }], private(4)),
            task(1, 0, [WRITE, 0, 2], vec![]),
            task(1, 1, [WRITE, 2, 4], vec![]),
            ToWorker::Flush { job: 1 },
            ToWorker::EndJob { job: 1 },
        ]);
        let mut faulty = FaultyLink::new(link, fault);
        serve(&[ENTRY], &mut faulty).expect("the fake link never fails");
        (summary(&faulty.inner.sent), faulty.inner.garbage)
    }

    const T: u8 = TILE;
    const E: u8 = 0xEE;

    #[test]
    fn a_task_fault_replaces_the_tasks_reply_after_the_task_ran() {
        let (sent, garbage) = served_with(Fault::new(Point::Task, Behaviour::Garbage).in_task(1));
        assert_eq!(
            sent,
            [
                format!("done 1/0 tile@0 [{T}, {T}]"),
                format!("partial 1 [0, {T}, {T}, {T}, {T}, 2]"),
                "ended 1".to_string()
            ]
        );
        assert_eq!(garbage, 1);
    }

    #[test]
    fn a_tile_fault_scribbles_over_half_the_tile_then_strikes() {
        let (sent, garbage) = served_with(Fault::new(Point::Tile, Behaviour::Garbage).in_task(0));
        assert_eq!(
            sent,
            [
                format!("done 1/1 tile@2 [{T}, {T}]"),
                format!("partial 1 [0, {E}, {T}, {T}, {T}, 2]"),
                "ended 1".to_string()
            ]
        );
        assert_eq!(garbage, 1);
    }

    #[test]
    fn a_panic_fault_in_a_task_is_caught_as_the_tasks_own() {
        let (sent, garbage) = served_with(Fault::new(Point::Task, Behaviour::Panic));
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(
            sent[0].starts_with(r#"failed 1/0 Panic("injected fault: panic at task"#),
            "{sent:?}"
        );
        assert_eq!(sent[1], "ended 1");
        assert_eq!(garbage, 0);
    }

    #[test]
    fn a_garbage_partial_is_a_well_formed_partial_message() {
        let (sent, garbage) = served_with(Fault::new(Point::Partial, Behaviour::Garbage));
        assert_eq!(sent[2], format!("partial 1 {:?}", GARBAGE_PARTIAL));
        assert_eq!(sent.len(), 4, "{sent:?}");
        assert_eq!(garbage, 0);
    }

    #[test]
    fn an_after_partial_fault_strikes_once_the_partial_is_sent() {
        let (sent, garbage) = served_with(Fault::new(Point::AfterPartial, Behaviour::Garbage));
        assert_eq!(sent[2], format!("partial 1 [0, {T}, {T}, {T}, {T}, 2]"));
        assert_eq!(sent.len(), 4, "{sent:?}");
        assert_eq!(garbage, 1);
    }

    #[test]
    fn a_once_fault_strikes_once_and_a_handshake_fault_never_in_the_loop() {
        let dir = std::env::temp_dir().join(format!("coop-layer-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let once = Fault::new(Point::Task, Behaviour::Garbage).once(dir.join("marker"));
        let (sent, garbage) = served_with(once);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(sent[0], format!("done 1/1 tile@2 [{T}, {T}]"));
        assert_eq!(garbage, 1);

        // It would exit the test process if it struck.
        let (sent, garbage) = served_with(Fault::new(Point::Handshake, Behaviour::Exit));
        assert_eq!(sent.len(), 4, "{sent:?}");
        assert_eq!(garbage, 0);
    }
}
