//! [`Output`]: where a worker writes the output tiles of its tasks.

use std::io;

use ipc_channel::ipc::IpcSharedMemory;
use memmap2::MmapMut;

use crate::protocol::OutputDesc;

/// The output region of a job, as a worker holds it.
#[derive(Debug)]
pub enum Output {
    /// The job has no output.
    None,
    /// Shared with the coordinator and all workers: tiles are written in place.
    Shared(IpcSharedMemory),
    /// Private to this worker (message passing): tiles are sent back.
    Private(Option<MmapMut>),
}

impl Output {
    /// Maps the output a coordinator described.
    pub fn open(desc: Option<OutputDesc>) -> io::Result<Self> {
        Ok(match desc {
            None => Output::None,
            Some(OutputDesc::Shared(region)) => Output::Shared(region),
            Some(OutputDesc::Private { len: 0 }) => Output::Private(None),
            Some(OutputDesc::Private { len }) => Output::Private(Some(MmapMut::map_anon(len as usize)?)),
        })
    }

    /// Whether tiles must be sent back to the coordinator.
    pub fn is_private(&self) -> bool {
        matches!(self, Output::Private(_))
    }

    /// The output's bytes.
    pub fn bytes(&self) -> &[u8] {
        match self {
            Output::None | Output::Private(None) => &[],
            Output::Shared(region) => region,
            Output::Private(Some(map)) => map,
        }
    }

    /// The output's bytes, writable.
    ///
    /// # Safety
    /// For a shared output, the caller must write only a range no other
    /// process writes or reads at the same time (the coordinator checks that
    /// tasks' output ranges are disjoint, and reads only after the job).
    pub unsafe fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Output::None | Output::Private(None) => &mut [],
            // SAFETY: forwarded to the caller's contract.
            Output::Shared(region) => unsafe { region.deref_mut() },
            Output::Private(Some(map)) => map,
        }
    }
}
