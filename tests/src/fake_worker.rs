//! A worker that lies: it completes a real handshake (token and all), then
//! answers the coordinator's messages with whatever a seeded generator picks —
//! correct replies, replies for other tasks or jobs, tiles out of range,
//! partials of random bytes, failures, rejections, goodbyes and job ends
//! unasked, undecodable bytes, silence, or an exit. It fuzzes everything the coordinator reads
//! from a worker, through the real channels.
//!
//! A test points [`coop::PoolBuilder::program`] at a wrapper that sets
//! [`ENV_SEED`] and runs the test binary, whose `main` calls [`serve_if_fake`]
//! before anything else.

use std::ops::Range;
use std::time::Duration;

use coop_worker::ipc_channel::ipc::{self, IpcSender};
use coop_worker::protocol::{
    ENV_SERVER, ENV_TOKEN, Failure, FromWorker, Hello, OutputDesc, Payload, Rejection, Tile, ToWorker,
};
use serde::{Deserialize, Serialize};

/// Environment variable that makes the test binary a fake worker, with the
/// seed of its lies.
pub const ENV_SEED: &str = "COOP_FAKE_WORKER_SEED";

/// If [`ENV_SEED`] is set, plays a lying worker and exits; otherwise returns.
pub fn serve_if_fake() {
    let Some(seed) = std::env::var(ENV_SEED).ok().and_then(|s| s.parse::<u64>().ok()) else {
        return;
    };
    // A replacement worker is started with the same seed: mix in the pid so
    // that it tells other lies.
    let mut rng = Rng(seed ^ u64::from(std::process::id()).rotate_left(32) | 1);
    // Some seeds lie all the time, others once in a while, so that jobs
    // also get far enough for retries to succeed.
    let _ = serve(&mut rng, 1 + seed % 12);
    std::process::exit(0);
}

/// A message no `FromWorker` decodes from.
#[derive(Serialize, Deserialize)]
struct Garbage(u32, Vec<u8>);

/// xorshift64*: small, deterministic for a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn bytes(&mut self, max: u64) -> Vec<u8> {
        let len = self.below(max + 1);
        (0..len).map(|_| self.next() as u8).collect()
    }

    /// A number that is usually near `near`, sometimes anything.
    fn around(&mut self, near: u64) -> u64 {
        match self.below(4) {
            0 => self.next(),
            1 => near.wrapping_add(self.below(3)).wrapping_sub(1),
            _ => near,
        }
    }
}

/// Serves until told to stop, lying in about one message in `one_in`.
fn serve(rng: &mut Rng, one_in: u64) -> Result<(), Box<dyn std::error::Error>> {
    let server = std::env::var(ENV_SERVER)?;
    let token = std::env::var(ENV_TOKEN)?;
    let rendezvous = IpcSender::<Hello>::connect(server)?;
    let (tx, from_worker) = ipc::channel::<FromWorker>()?;
    let (to_worker, rx) = ipc::channel::<ToWorker>()?;
    let (bulk, bulk_rx) = ipc::bytes_channel()?;
    rendezvous.send(Hello {
        pid: std::process::id(),
        token,
        to_worker,
        bulk,
        from_worker,
    })?;
    // The output's length, and whether tiles go back in messages.
    let (mut output_len, mut private) = (0u64, false);
    // Lengths of the shared outputs seen, which the coordinator names by id
    // once it believes this worker keeps them mapped.
    let mut shared_lens = std::collections::HashMap::new();
    loop {
        let lie = rng.below(one_in) == 0;
        let reply = match rx.recv()? {
            ToWorker::StartJob { job, output, .. } => {
                (output_len, private) = match output {
                    Some(OutputDesc::Private { len }) => (len, true),
                    Some(OutputDesc::Shared { id, region }) => {
                        shared_lens.insert(id, region.len() as u64);
                        (region.len() as u64, false)
                    }
                    Some(OutputDesc::Held { id }) => (shared_lens.get(&id).copied().unwrap_or(0), false),
                    Some(OutputDesc::File { len, .. }) => (len, false),
                    None => (0, false),
                };
                match rng.below(if lie { 3 } else { u64::MAX }) {
                    0 => Some(FromWorker::JobRejected {
                        job: rng.around(job),
                        reason: Rejection::Setup("the fake worker refuses".into()),
                    }),
                    1 => Some(FromWorker::JobRejected {
                        job: rng.around(job),
                        reason: Rejection::UnknownJob {
                            registered: vec!["lies".into()],
                        },
                    }),
                    _ => None,
                }
            }
            ToWorker::Task {
                job,
                task,
                spec,
                chunks,
                ..
            } => {
                for _ in &chunks {
                    bulk_rx.recv()?;
                }
                let range: Range<u64> = postcard::from_bytes::<Range<usize>>(spec.bytes())
                    .map(|r| r.start as u64 * 8..r.end as u64 * 8)
                    .unwrap_or(0..0);
                Some(match lie {
                    true => task_reply(rng, job, task, range, output_len, private),
                    false => task_done(job, task, range, private),
                })
            }
            // An honest partial is well-formed; its value is made up (the
            // fake computes nothing), so a finished job's result is wrong.
            ToWorker::Flush { job } if !lie => Some(FromWorker::Partial {
                job,
                data: Payload::new(postcard::to_allocvec(&rng.below(1 << 20))?),
            }),
            ToWorker::Flush { job } => Some(FromWorker::Partial {
                job: rng.around(job),
                data: Payload::new(match rng.below(2) {
                    0 => rng.bytes(24),
                    _ => postcard::to_allocvec(&rng.below(1 << 20))?,
                }),
            }),
            ToWorker::EndJob { job } => Some(FromWorker::JobEnded { job }),
            ToWorker::MoreInput { .. } | ToWorker::Cancel { .. } => None,
            ToWorker::Shutdown => return Ok(()),
        };
        let Some(reply) = reply else { continue };
        match rng.below(if lie { 5 } else { u64::MAX }) {
            0 => {
                tx.clone()
                    .to_opaque()
                    .to::<Garbage>()
                    .send(Garbage(0xBAD, rng.bytes(64)))?;
            }
            1 => std::thread::sleep(Duration::from_secs(3600)), // silence
            2 => std::process::exit(3),
            // Messages that answer nothing it was asked.
            3 => tx.send(match rng.below(2) {
                0 => FromWorker::Bye,
                _ => FromWorker::JobEnded { job: rng.around(0) },
            })?,
            _ => tx.send(reply)?,
        }
    }
}

fn task_reply(
    rng: &mut Rng,
    job: u64,
    task: u32,
    range: Range<u64>,
    output_len: u64,
    private: bool,
) -> FromWorker {
    let task = rng.around(u64::from(task)) as u32;
    let job = rng.around(job);
    match rng.below(8) {
        0 => FromWorker::TaskFailed {
            job,
            task,
            failure: if rng.below(2) == 0 {
                Failure::Panic("fake panic".into())
            } else {
                Failure::Error("fake error".into())
            },
        },
        1 | 2 => {
            // A tile somewhere near where it belongs, or anywhere.
            let offset = rng.around(range.start).min(output_len + 16);
            let len = rng.around(range.end - range.start).min(1 << 16);
            FromWorker::TaskDone {
                job,
                task,
                tile: Some(Tile {
                    offset,
                    bytes: Payload::new(vec![0xAB; len as usize]),
                }),
            }
        }
        _ => task_done(job, task, range, private),
    }
}

/// A well-formed result for `task` of `job` (its tile, zeros, if tiles go
/// back in messages).
fn task_done(job: u64, task: u32, range: Range<u64>, private: bool) -> FromWorker {
    FromWorker::TaskDone {
        job,
        task,
        tile: private.then(|| Tile {
            offset: range.start,
            bytes: Payload::new(vec![0; (range.end - range.start) as usize]),
        }),
    }
}
