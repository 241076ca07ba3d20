//! The life of a pool worker process: handshake, [`serve`] over ipc-channel
//! ([`PoolLink`]), and exit.

use std::error::Error;
use std::{env, io, process};

use ipc_channel::IpcError;
use ipc_channel::ipc::{self, IpcBytesReceiver, IpcReceiver, IpcSender};
use nix::sys::signal::{self, SigHandler, Signal};
use nix::unistd::{Pid, getppid};

use crate::fault::{self, Aftermath, Breakable, Fault, FaultyLink, Garbage, Point};
use crate::job::{JobEntry, error_chain};
use crate::link::{Link, PayloadKind};
use crate::panic::capture_panics;
use crate::protocol::{ENV_PARENT, ENV_SERVER, ENV_TOKEN, FromWorker, Hello, Outbox, Payload, ToWorker};
use crate::serve::{ServeError, serve};

/// Exit status of a worker whose coordinator went away or broke the protocol.
const EXIT_PROTOCOL: i32 = 3;

/// Whether this process was started as a worker (by a coordinator's pool).
pub fn is_worker() -> bool {
    env::var_os(ENV_SERVER).is_some()
}

/// If this process was started as a worker, serves its coordinator and exits;
/// otherwise returns at once. Call it first in `main`, before any thread starts.
pub fn run_if_worker(jobs: &[JobEntry]) {
    let Some(server) = env::var_os(ENV_SERVER) else {
        return;
    };
    let parent = env::var(ENV_PARENT).ok().and_then(|p| p.parse::<i32>().ok());
    let token = env::var(ENV_TOKEN).unwrap_or_default();
    let fault = Fault::from_env();
    // SAFETY: we are at the top of `main` (documented contract of `coop::init`),
    // so no other thread reads the environment concurrently. The variables are
    // removed so that programs the job itself starts are not taken for workers.
    unsafe {
        env::remove_var(ENV_SERVER);
        env::remove_var(ENV_PARENT);
        env::remove_var(ENV_TOKEN);
        env::remove_var(fault::ENV_FAULT);
    }
    let outcome = connect(server, parent, token, fault.as_ref()).and_then(|mut link| {
        match fault {
            Some(fault) => serve(jobs, &mut FaultyLink::new(link, fault))?,
            None => serve(jobs, &mut link)?,
        }
        Ok(())
    });
    let code = match outcome {
        Ok(()) => 0,
        // The coordinator hung up on this worker (it is dropping it, or is
        // gone): nothing went wrong here worth a line on the terminal.
        Err(err) if is_hangup(&err) => EXIT_PROTOCOL,
        Err(err) => {
            eprintln!("coop worker {}: {}", process::id(), error_chain(&err));
            EXIT_PROTOCOL
        }
    };
    process::exit(code);
}

/// Why a pool worker could not serve its coordinator.
#[derive(Debug, thiserror::Error)]
enum WorkerError {
    #[error("coordinator (pid {0}) exited before this worker started")]
    Orphaned(i32),
    #[error("setting up the worker process")]
    Setup(#[source] nix::Error),
    #[error("rendezvous name is not UTF-8")]
    ServerName,
    #[error("connecting to the coordinator")]
    Connect(#[source] io::Error),
    #[error("saying hello to the coordinator")]
    Hello(#[source] IpcError),
    #[error(transparent)]
    Serve(#[from] ServeError<IpcError>),
}

/// Whether `err`, or an error it comes from, says the coordinator's end of
/// a channel is closed.
fn is_hangup(err: &(dyn Error + 'static)) -> bool {
    let mut cause = Some(err);
    while let Some(err) = cause {
        let io = match err.downcast_ref::<IpcError>() {
            Some(IpcError::Disconnected) => return true,
            Some(IpcError::Io(io)) => Some(io),
            _ => err.downcast_ref::<io::Error>(),
        };
        if io.is_some_and(|io| {
            matches!(
                io.kind(),
                io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionReset
            )
        }) {
            return true;
        }
        cause = err.source();
    }
    false
}

/// Strikes if `fault` fires at `point` (a handshake point); returns what is
/// left to do with the channel.
fn strikes(fault: Option<&Fault>, point: Point) -> Option<Aftermath> {
    let fault = fault?;
    fault
        .fires(point, None)
        .then(|| fault::strike(point, fault.behaviour))
}

/// The handshake: connects to the coordinator's rendezvous channel and
/// sends it the [`Hello`] that carries this worker's channels.
fn connect(
    server: std::ffi::OsString,
    parent: Option<i32>,
    token: String,
    fault: Option<&Fault>,
) -> Result<PoolLink, WorkerError> {
    die_with_parent(parent)?;
    // Ctrl-C reaches the whole foreground process group; the coordinator
    // decides what happens to its workers (they die with it in any case).
    // SAFETY: SIG_IGN installs no handler code, so no async-signal-safety concern.
    unsafe { signal::signal(Signal::SIGINT, SigHandler::SigIgn) }.map_err(WorkerError::Setup)?;
    capture_panics();

    let server = server.into_string().map_err(|_| WorkerError::ServerName)?;
    let early = strikes(fault, Point::BeforeConnect);
    let rendezvous = IpcSender::<Hello>::connect(server).map_err(WorkerError::Connect)?;
    let (to_coordinator, from_worker) = ipc::channel::<FromWorker>().map_err(WorkerError::Connect)?;
    if let Some(aftermath) = early.or_else(|| strikes(fault, Point::Handshake)) {
        match aftermath {
            Aftermath::SendGarbage => {
                (rendezvous.to_opaque().to::<Garbage>())
                    .send(Garbage::new())
                    .map_err(WorkerError::Hello)?;
                fault::idle()
            }
            Aftermath::CloseChannel => {
                drop(rendezvous);
                fault::idle()
            }
        }
    }
    let (to_worker, from_coordinator) = ipc::channel::<ToWorker>().map_err(WorkerError::Connect)?;
    let (bulk, bulk_in) = ipc::bytes_channel().map_err(WorkerError::Connect)?;
    rendezvous
        .send(Hello {
            pid: process::id(),
            token,
            to_worker,
            bulk,
            from_worker,
        })
        .map_err(WorkerError::Hello)?;
    Ok(PoolLink {
        rx: from_coordinator,
        bulk: bulk_in,
        tx: Some(to_coordinator),
        outbox: Outbox::default(),
    })
}

/// Makes the kernel kill this process when the thread that spawned it exits,
/// and exits now if that already happened (the window between fork and prctl).
fn die_with_parent(parent: Option<i32>) -> Result<(), WorkerError> {
    nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(WorkerError::Setup)?;
    if let Some(parent) = parent
        && getppid() != Pid::from_raw(parent)
    {
        return Err(WorkerError::Orphaned(parent));
    }
    Ok(())
}

/// A pool worker's [`Link`]: its three ipc-channels to the coordinator, and
/// the shared region its large partials go out in.
#[derive(Debug)]
struct PoolLink {
    /// Control messages and tasks.
    rx: IpcReceiver<ToWorker>,
    /// The bytes of input chunks sent with tasks, in pieces
    /// ([`send_chunk`](crate::protocol::send_chunk)).
    bulk: IpcBytesReceiver,
    /// Everything the worker says; `None` once closed by an injected fault.
    tx: Option<IpcSender<FromWorker>>,
    /// Carries large partials.
    outbox: Outbox,
}

impl Link for PoolLink {
    type Error = IpcError;

    fn receive(&mut self) -> Result<Option<ToWorker>, IpcError> {
        match self.rx.recv() {
            Ok(message) => Ok(Some(message)),
            Err(IpcError::Disconnected) => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Messages until `len` bytes came, or one that is empty or goes past
    /// them (the loop reports the mismatch).
    fn receive_chunk(&mut self, len: u64) -> Result<Vec<Vec<u8>>, IpcError> {
        let (mut pieces, mut received) = (Vec::new(), 0u64);
        while received < len {
            let piece = self.bulk.recv()?;
            received += piece.len() as u64;
            let wrong = piece.is_empty() || received > len;
            pieces.push(piece);
            if wrong {
                break;
            }
        }
        Ok(pieces)
    }

    fn payload(&mut self, kind: PayloadKind, bytes: Vec<u8>) -> Payload {
        match kind {
            // Each tile in a region of its own: several may be in flight.
            PayloadKind::Tile => Payload::new(bytes),
            PayloadKind::Partial => self.outbox.payload(bytes),
        }
    }

    fn send(&mut self, message: FromWorker) -> Result<(), IpcError> {
        // Only a fault closes it, and the worker then idles: never reached.
        let Some(tx) = &self.tx else {
            return Err(IpcError::Disconnected);
        };
        tx.send(message)
    }
}

impl Breakable for PoolLink {
    fn send_garbage(&mut self) -> Result<(), IpcError> {
        let Some(tx) = &self.tx else {
            return Err(IpcError::Disconnected);
        };
        tx.clone().to_opaque().to::<Garbage>().send(Garbage::new())
    }

    fn close_sending(&mut self) {
        self.tx = None;
    }
}
