//! [`Mappings`]: the input and output a worker keeps mapped from one job to the next.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use ipc_channel::ipc::IpcSharedMemory;

use crate::job::JobInstance;
use crate::output::Output;
use crate::pack::Pack;
use crate::protocol::{OutputDesc, SegmentDesc};
use crate::region::{Region, not_held};

/// The input segments (shared memory and files) and shared output of a
/// worker's last job, by id, kept mapped so that the next job on the same
/// data finds its pages mapped already (see
/// [`new_region_id`](crate::protocol::new_region_id) for what that saves).
///
/// While a job is open its regions are lent to it; [`reclaim`](Self::reclaim)
/// takes them back when the job closes, and [`open`](Self::open) unmaps those
/// the next job does not name. The coordinator mirrors this: it names a
/// region by id alone ([`SegmentDesc::Held`], [`OutputDesc::Held`]) only
/// when this worker opened its last job with it and that job did not fail
/// (a worker that refused a job holds less), and the memory of a shared
/// region it drops is freed at once ([`release_pages`](crate::release_pages)),
/// whoever still maps it.
#[derive(Debug, Default)]
pub(crate) struct Mappings {
    held: HashMap<u64, Kept>,
}

#[derive(Debug)]
enum Kept {
    Segment(Region),
    Pack(Arc<Pack>),
    Output(IpcSharedMemory),
}

impl Mappings {
    /// Maps the input segments and output a coordinator described for a job:
    /// those named by id come from the ones held, and those held but not
    /// named are unmapped. Afterwards nothing is held until
    /// [`reclaim`](Self::reclaim), also on an error.
    pub fn open(
        &mut self,
        input: Vec<SegmentDesc>,
        output: Option<OutputDesc>,
    ) -> io::Result<(Vec<Region>, Output)> {
        let mut held = std::mem::take(&mut self.held);
        // The packs of this job: described in it, or taken from those held.
        let mut packs: HashMap<u64, Arc<Pack>> = HashMap::new();
        let mut regions = Vec::with_capacity(input.len());
        for desc in input {
            regions.push(match desc {
                SegmentDesc::Held { id } => match held.remove(&id) {
                    Some(Kept::Segment(region)) => region,
                    _ => return Err(not_held(id)),
                },
                SegmentDesc::Pack { id, region } => {
                    packs.insert(id, Arc::new(Pack::from_coordinator(id, region)));
                    continue;
                }
                SegmentDesc::InPack { pack, offset, len } => {
                    let pack = match packs.get(&pack) {
                        Some(pack) => pack.clone(),
                        None => match held.remove(&pack) {
                            Some(Kept::Pack(kept)) => packs.entry(pack).or_insert(kept).clone(),
                            _ => return Err(not_held(pack)),
                        },
                    };
                    let range = (offset as usize)..(offset as usize).saturating_add(len as usize);
                    if range.end > pack.capacity() {
                        return Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "segment {range:?} lies outside pack {} of {} bytes",
                                pack.id(),
                                pack.capacity()
                            ),
                        ));
                    }
                    Region::in_pack(pack, range)
                }
                desc => Region::open(desc)?,
            });
        }
        let output = match output {
            Some(OutputDesc::Held { id }) => match held.remove(&id) {
                Some(Kept::Output(region)) => Ok(Output::Shared { id, region }),
                _ => Err(not_held(id)),
            },
            desc => Output::open(desc),
        }
        .map_err(|err| io::Error::new(err.kind(), format!("output: {err}")))?;
        Ok((regions, output))
    }

    /// Takes back the input segments and output lent to a job that is closing.
    pub fn reclaim(&mut self, job: &mut dyn JobInstance) {
        for region in job.regions_mut() {
            if let Some(pack) = region.pack() {
                self.held
                    .entry(pack.id())
                    .or_insert_with(|| Kept::Pack(pack.clone()));
            } else if let Some(region) = region.take_kept() {
                self.held.insert(region.id(), Kept::Segment(region));
            }
        }
        if let Output::Shared { id, region } = std::mem::replace(job.output_mut(), Output::None) {
            self.held.insert(id, Kept::Output(region));
        }
    }

    /// Ids of the regions held.
    #[cfg(test)]
    fn ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.held.keys().copied().collect();
        ids.sort_unstable();
        ids
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Range;

    use super::*;
    use crate::Region;

    /// A job that only holds what it was lent.
    #[derive(Debug)]
    struct Lent {
        regions: Vec<Region>,
        output: Output,
    }

    impl JobInstance for Lent {
        fn run_task(&mut self, _: &[u8]) -> Result<Range<usize>, crate::InstanceError> {
            Ok(0..0)
        }
        fn regions_mut(&mut self) -> &mut [Region] {
            &mut self.regions
        }
        fn output(&self) -> &Output {
            &self.output
        }
        fn output_mut(&mut self) -> &mut Output {
            &mut self.output
        }
        fn take_partial(&mut self) -> Result<Vec<u8>, crate::InstanceError> {
            Ok(Vec::new())
        }
    }

    fn shared(id: u64, bytes: &[u8]) -> SegmentDesc {
        SegmentDesc::Shared {
            id,
            region: IpcSharedMemory::from_bytes(bytes),
        }
    }

    fn open(
        mappings: &mut Mappings,
        input: Vec<SegmentDesc>,
        output: Option<OutputDesc>,
    ) -> io::Result<Lent> {
        mappings
            .open(input, output)
            .map(|(regions, output)| Lent { regions, output })
    }

    #[test]
    fn a_pack_is_mapped_once_and_kept_for_the_next_job() {
        let pack = || SegmentDesc::Pack {
            id: 5,
            region: IpcSharedMemory::from_bytes(b"onetwothree"),
        };
        let in_pack = |offset, len| SegmentDesc::InPack { pack: 5, offset, len };
        let mut mappings = Mappings::default();
        let mut job = open(
            &mut mappings,
            vec![pack(), in_pack(0, 3), in_pack(3, 3), in_pack(6, 5)],
            None,
        )
        .unwrap();
        let texts: Vec<&[u8]> = job.regions.iter().map(Region::bytes).collect();
        assert_eq!(texts, [&b"one"[..], b"two", b"three"], "a pack is not a segment");
        assert_eq!(
            job.regions[1].bytes().as_ptr(),
            job.regions[0].bytes()[3..].as_ptr()
        );
        mappings.reclaim(&mut job);
        drop(job);
        assert_eq!(mappings.ids(), vec![5], "kept once, by the pack's id");
        // The next job names it by id alone, in other pieces.
        let job = open(&mut mappings, vec![in_pack(3, 8), in_pack(0, 0)], None).unwrap();
        assert_eq!(job.regions[0].bytes(), b"twothree");
        assert_eq!(job.regions[1].bytes(), b"");
        // A segment outside the pack, or in a pack neither described nor held.
        let err = open(&mut mappings, vec![pack(), in_pack(6, 6)], None).unwrap_err();
        assert!(err.to_string().contains("outside pack 5"), "{err}");
        let err = open(&mut mappings, vec![in_pack(0, 1)], None).unwrap_err();
        assert!(err.to_string().contains("does not hold it"), "{err}");
    }

    #[test]
    fn a_job_on_the_same_regions_gets_the_same_mappings() {
        let dir = tempfile_dir();
        let path = dir.join("input.txt");
        std::fs::write(&path, b"a file").unwrap();
        let mut mappings = Mappings::default();
        let mut job = open(
            &mut mappings,
            vec![
                shared(7, b"input"),
                SegmentDesc::File { id: 9, path, len: 6 },
                SegmentDesc::Private { len: 3 },
            ],
            Some(OutputDesc::Shared {
                id: 8,
                region: IpcSharedMemory::from_byte(0, 16),
            }),
        )
        .unwrap();
        assert_eq!(
            mappings.ids(),
            Vec::<u64>::new(),
            "lent to the job while it is open"
        );
        let at = |job: &Lent| {
            (
                job.regions[0].bytes().as_ptr(),
                job.regions[1].bytes().as_ptr(),
                job.output.bytes().as_ptr(),
            )
        };
        let first = at(&job);
        mappings.reclaim(&mut job);
        drop(job);
        assert_eq!(mappings.ids(), [7, 8, 9]);

        let job = open(
            &mut mappings,
            vec![SegmentDesc::Held { id: 7 }, SegmentDesc::Held { id: 9 }],
            Some(OutputDesc::Held { id: 8 }),
        )
        .unwrap();
        assert_eq!(job.regions[0].bytes(), b"input");
        assert_eq!(job.regions[1].bytes(), b"a file");
        assert_eq!(at(&job), first, "nothing mapped again");
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("coop-mappings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn regions_the_next_job_does_not_name_are_unmapped() {
        let mut mappings = Mappings::default();
        let mut job = open(&mut mappings, vec![shared(1, b"old")], None).unwrap();
        mappings.reclaim(&mut job);
        let mut job = open(&mut mappings, vec![shared(2, b"new")], None).unwrap();
        assert_eq!(job.regions[0].bytes(), b"new");
        mappings.reclaim(&mut job);
        assert_eq!(mappings.ids(), [2]);
    }

    #[test]
    fn a_region_named_by_id_that_is_not_held_is_refused_and_nothing_is_kept() {
        let mut mappings = Mappings::default();
        let mut job = open(&mut mappings, vec![shared(1, b"kept")], None).unwrap();
        mappings.reclaim(&mut job);
        let err = open(
            &mut mappings,
            vec![SegmentDesc::Held { id: 1 }],
            Some(OutputDesc::Held { id: 2 }),
        )
        .expect_err("region 2 was never sent");
        assert_eq!(
            err.to_string(),
            "output: region 2 was named by id, but this worker does not hold it"
        );
        assert_eq!(mappings.ids(), Vec::<u64>::new());
        let err = open(&mut mappings, vec![SegmentDesc::Held { id: 1 }], None)
            .expect_err("region 1 went with the failed job");
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        // An input segment named as the output is not held either.
        let mut job = open(&mut mappings, vec![shared(3, b"input")], None).unwrap();
        mappings.reclaim(&mut job);
        assert!(open(&mut mappings, vec![], Some(OutputDesc::Held { id: 3 })).is_err());
    }

    #[test]
    fn the_owner_dropping_a_region_frees_it_for_every_mapping() {
        let owned = Region::shared(IpcSharedMemory::from_bytes(&[9; 3 * 4096]));
        let desc = owned.describe(|_| false);
        let id = desc.kept_id().expect("a shared region has an id");
        let mut mappings = Mappings::default();
        let mut job = open(&mut mappings, vec![desc], None).unwrap();
        mappings.reclaim(&mut job);
        assert!(job.regions[0].bytes().is_empty(), "taken back from the job");
        drop(owned);
        // The kept mapping now reads zeros: the memory is gone.
        let job = open(&mut mappings, vec![SegmentDesc::Held { id }], None).unwrap();
        assert_eq!(job.regions[0].bytes().len(), 3 * 4096);
        assert!(job.regions[0].bytes().iter().all(|&b| b == 0));
    }
}
