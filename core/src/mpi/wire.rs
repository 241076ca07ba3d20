//! How the messages of `coop_worker::protocol` and their bytes cross MPI.
//!
//! Every exchange is a *control* message (a postcard-encoded `ToWorker` or
//! `FromWorker`, small by the job contract: names, parameters, ranges) on
//! [`TAG_CONTROL`], followed, when the message announces bytes (a task's
//! input chunks, a `Payload::Follows`: an output tile, a partial), by those
//! bytes on [`TAG_DATA`] from the same sender, cut into [`pieces`] that
//! MPI's `i32` counts can carry. MPI keeps
//! the order of messages between two ranks on one tag, so the bytes always
//! follow their announcement.

use std::ops::Range;
use std::time::{Duration, Instant};

use mpi::Tag;
use mpi::datatype::Equivalence;
use mpi::point_to_point::{Destination, MatchedReceiveVec, Source};
use mpi::topology::{Communicator, SimpleCommunicator};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::MpiError;

/// Tag of control messages.
pub(super) const TAG_CONTROL: Tag = 1;
/// Tag of the bytes that follow a control message.
pub(super) const TAG_DATA: Tag = 2;
/// Tag of `ToWorker::Cancel`, which a rank looks for before each task so that
/// a failed job stops at once, ahead of the tasks already queued for it.
pub(super) const TAG_CANCEL: Tag = 3;

/// Largest piece of bytes sent in one MPI message. MPI counts are `i32`, so a
/// message holds less than 2 GiB; 1 GiB pieces stay well inside that.
pub(crate) const MAX_PIECE: usize = 1 << 30;

/// Cuts `len` bytes into consecutive ranges of at most `max` bytes (`max > 0`);
/// no range for `len == 0`.
pub(crate) fn pieces(len: usize, max: usize) -> impl Iterator<Item = Range<usize>> {
    assert!(max > 0, "pieces of 0 bytes");
    (0..len.div_ceil(max)).map(move |i| i * max..((i + 1) * max).min(len))
}

/// A rank's first message, on [`TAG_CONTROL`]: where it runs. (The
/// handshake is MPI's own; every message after it is a
/// [`ToWorker`](coop_worker::protocol::ToWorker) or a
/// [`FromWorker`](coop_worker::protocol::FromWorker).)
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct RankHello {
    /// MPI's processor name (the host name).
    pub(super) host: String,
    /// The rank's pid on its host.
    pub(super) pid: u32,
}

/// Sends a control message to `rank` on `tag`; returns its size in bytes.
pub(super) fn send<T: Serialize>(
    world: &SimpleCommunicator,
    rank: i32,
    tag: Tag,
    message: &T,
) -> Result<u64, MpiError> {
    let bytes = encode(message)?;
    send_encoded(world, rank, tag, &bytes);
    Ok(bytes.len() as u64)
}

/// Encodes a control message, which must fit one MPI message.
pub(super) fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, MpiError> {
    let bytes = postcard::to_allocvec(message).map_err(|err| MpiError::Encode { source: err.into() })?;
    if bytes.len() > MAX_PIECE {
        return Err(MpiError::MessageTooLarge { len: bytes.len() });
    }
    Ok(bytes)
}

/// Sends a control message encoded with [`encode`].
pub(super) fn send_encoded(world: &SimpleCommunicator, rank: i32, tag: Tag, bytes: &[u8]) {
    world.process_at_rank(rank).send_with_tag(bytes, tag);
}

/// Sends `bytes` to `rank` on [`TAG_DATA`], in pieces.
pub(super) fn send_data(world: &SimpleCommunicator, rank: i32, bytes: &[u8]) {
    let process = world.process_at_rank(rank);
    for piece in pieces(bytes.len(), MAX_PIECE) {
        process.send_with_tag(&bytes[piece], TAG_DATA);
    }
}

/// Receives bytes sent with [`send_data`] by `rank`, exactly filling `buf`.
pub(super) fn receive_data(world: &SimpleCommunicator, rank: i32, buf: &mut [u8]) -> Result<(), MpiError> {
    let process = world.process_at_rank(rank);
    for piece in pieces(buf.len(), MAX_PIECE) {
        let expected = piece.len();
        let status = process.receive_into_with_tag(&mut buf[piece], TAG_DATA);
        let got = status.count(u8::equivalent_datatype());
        if usize::try_from(got).ok() != Some(expected) {
            return Err(MpiError::DataLength {
                expected,
                received: got,
            });
        }
    }
    Ok(())
}

/// Receives and drops `len` bytes sent with [`send_data`] by `rank`, in
/// pieces: bytes that announce more than their message may carry.
pub(super) fn discard_data(world: &SimpleCommunicator, rank: i32, len: u64) -> Result<(), MpiError> {
    let mut left = len;
    let mut buf = Vec::new();
    while left > 0 {
        let piece = left.min(MAX_PIECE as u64) as usize;
        buf.resize(piece, 0);
        receive_data(world, rank, &mut buf)?;
        left -= piece as u64;
    }
    Ok(())
}

/// Waits for the next control message on `tag` from `from` (any rank if
/// `None`). Polls rather than blocks in MPI, so that an idle rank sleeps
/// instead of spinning a core that a busy rank on the same host could use.
pub(super) fn receive<T: DeserializeOwned>(
    world: &SimpleCommunicator,
    from: Option<i32>,
    tag: Tag,
) -> Result<(i32, T), MpiError> {
    let mut backoff = Backoff::default();
    loop {
        if let Some(received) = poll(world, from, tag)? {
            return Ok(received);
        }
        backoff.wait();
    }
}

/// Like [`receive`], but gives up at `deadline`.
pub(super) fn receive_until<T: DeserializeOwned>(
    world: &SimpleCommunicator,
    from: Option<i32>,
    tag: Tag,
    deadline: Instant,
) -> Result<Option<(i32, T)>, MpiError> {
    let mut backoff = Backoff::default();
    loop {
        if let Some(received) = poll(world, from, tag)? {
            return Ok(Some(received));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        backoff.wait();
    }
}

/// Takes a pending control message on `tag` from `from` (any rank if `None`),
/// if there is one; never waits.
fn poll<T: DeserializeOwned>(
    world: &SimpleCommunicator,
    from: Option<i32>,
    tag: Tag,
) -> Result<Option<(i32, T)>, MpiError> {
    let probe = match from {
        Some(rank) => world.process_at_rank(rank).immediate_matched_probe_with_tag(tag),
        None => world.any_process().immediate_matched_probe_with_tag(tag),
    };
    let Some(matched) = probe else {
        return Ok(None);
    };
    let (bytes, status) = matched.matched_receive_vec::<u8>();
    let rank = status.source_rank();
    Ok(Some((rank, decode(rank, &bytes)?)))
}

/// Decodes a control message `rank` sent.
fn decode<T: DeserializeOwned>(rank: i32, bytes: &[u8]) -> Result<T, MpiError> {
    postcard::from_bytes(bytes).map_err(|err| MpiError::Decode {
        rank,
        source: err.into(),
    })
}

/// Takes a pending message on `tag` from `rank`, if there is one; never waits.
pub(super) fn try_receive<T: DeserializeOwned>(
    world: &SimpleCommunicator,
    rank: i32,
    tag: Tag,
) -> Result<Option<T>, MpiError> {
    Ok(poll(world, Some(rank), tag)?.map(|(_, message)| message))
}

/// Spins briefly, then sleeps longer and longer (up to 1 ms) between polls.
#[derive(Debug, Default)]
struct Backoff {
    polls: u32,
}

impl Backoff {
    const SPINS: u32 = 64;
    const LONGEST: Duration = Duration::from_millis(1);

    fn wait(&mut self) {
        self.polls = self.polls.saturating_add(1);
        if self.polls <= Self::SPINS {
            std::hint::spin_loop();
            return;
        }
        let doublings = (self.polls - Self::SPINS).min(7);
        let sleep = Duration::from_micros(10 << doublings).min(Self::LONGEST);
        std::thread::sleep(sleep);
    }
}

#[cfg(test)]
mod tests {
    use coop_worker::protocol::{Chunk, Payload, ToWorker};

    use super::*;

    #[test]
    fn pieces_cover_the_bytes_in_order() {
        assert_eq!(pieces(0, 4).count(), 0);
        assert_eq!(pieces(3, 4).collect::<Vec<_>>(), vec![Range { start: 0, end: 3 }]);
        assert_eq!(pieces(4, 4).collect::<Vec<_>>(), vec![Range { start: 0, end: 4 }]);
        assert_eq!(pieces(9, 4).collect::<Vec<_>>(), [0..4, 4..8, 8..9]);
        assert_eq!(pieces(5, 1).count(), 5);
    }

    #[test]
    fn pieces_of_huge_messages_fit_mpi_counts() {
        // 5 GiB + 1 byte: six pieces, each one MPI message (count < 2^31).
        let len = 5 * (1usize << 30) + 1;
        let all: Vec<_> = pieces(len, MAX_PIECE).collect();
        assert_eq!(all.len(), 6);
        assert!(
            all.iter()
                .all(|p| !p.is_empty() && i32::try_from(p.len()).is_ok())
        );
        assert_eq!(all.first().unwrap().start, 0);
        assert_eq!(all.last().unwrap().end, len);
        assert!(all.windows(2).all(|w| w[0].end == w[1].start));
        // Just under and over 2 GiB, the limit of one message.
        assert_eq!(pieces(i32::MAX as usize, MAX_PIECE).count(), 2);
        assert_eq!(pieces(1 << 31, MAX_PIECE).count(), 2);
    }

    #[test]
    fn codec_errors_are_kept_as_sources() {
        use std::error::Error as _;

        let err = decode::<ToWorker>(2, &[0xff, 0xff]).unwrap_err();
        assert!(matches!(err, MpiError::Decode { rank: 2, .. }), "{err:?}");
        let codec = err.source().expect("the codec's error is the source");
        assert!(codec.downcast_ref::<postcard::Error>().is_some(), "{codec:?}");
        let codec = codec.to_string();
        assert_eq!(
            err.to_string(),
            format!("undecodable message from rank 2: {codec}")
        );
        let err = crate::Error::from(err);
        assert!(
            err.to_string()
                .starts_with("MPI: undecodable message from rank 2: "),
            "{err}"
        );
        let chain: Vec<String> = std::iter::successors(err.source(), |e| (*e).source())
            .map(ToString::to_string)
            .collect();
        assert_eq!(chain.len(), 2, "{chain:?}");
        assert_eq!(chain[1], codec);
    }

    #[test]
    fn oversized_and_short_messages_keep_their_texts() {
        let too_large = MpiError::MessageTooLarge { len: 5 };
        assert_eq!(
            too_large.to_string(),
            "a control message of 5 bytes is more than one MPI message carries; \
             jobs and tasks hold parameters and ranges, data goes in the Input"
        );
        let short = MpiError::DataLength {
            expected: 8,
            received: 3,
        };
        assert_eq!(short.to_string(), "8 bytes announced, 3 received");
    }

    #[test]
    fn messages_round_trip() {
        let message = ToWorker::Task {
            job: 3,
            task: 4,
            spec: Payload::Inline(vec![1, 2, 3]),
            chunks: vec![Chunk {
                segment: 1,
                offset: 4096,
                len: 10,
            }],
        };
        let bytes = postcard::to_allocvec(&message).unwrap();
        match postcard::from_bytes::<ToWorker>(&bytes).unwrap() {
            ToWorker::Task {
                job: 3,
                task: 4,
                spec,
                chunks,
            } => {
                assert_eq!(spec.bytes(), [1, 2, 3]);
                assert_eq!(chunks.len(), 1);
                assert_eq!(chunks[0].offset, 4096);
            }
            other => panic!("decoded as {other:?}"),
        }
    }
}
