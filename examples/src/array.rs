//! A 2-D array of a `.npy` file as an input segment: where its elements lie
//! ([`Operand`]), adding the file ([`add_npy`]), and reading them in a task
//! ([`elements`]).

use std::path::Path;

use anyhow::anyhow;
use bytemuck::Pod;
use coop::prelude::*;
use serde::{Deserialize, Serialize};

use crate::npy;

/// Where a matrix lies in the input: a segment, a byte offset, and its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operand {
    /// Input segment index.
    pub segment: usize,
    /// Byte offset of the first element (a multiple of the element size).
    pub offset: usize,
    /// Column-major (Fortran) order rather than row-major (C).
    pub fortran: bool,
}

/// Maps the `.npy` file at `path` as a segment of `input` and checks its
/// header and length; its data is copied into an aligned segment of its own
/// if the header leaves it misaligned (a conforming file aligns it). Errors
/// name the file.
pub fn add_npy(input: &mut Input, path: &Path) -> anyhow::Result<(npy::Header, Operand)> {
    let segment = input.push_file(path)?;
    let bytes = input.bytes(segment);
    let name = path.display();
    let header = npy::parse_header(bytes).map_err(|e| anyhow!("{name}: {e}"))?;
    npy::check_len(&header, bytes.len() as u64).map_err(|e| anyhow!("{name}: {e}"))?;
    let mut operand = Operand {
        segment,
        offset: header.data_offset,
        fortran: header.fortran_order,
    };
    if header.data_offset % header.dtype.size() != 0 {
        let data = bytes[header.data_offset..].to_vec();
        operand = Operand {
            segment: input.push_bytes(&data),
            offset: 0,
            ..operand
        };
    }
    Ok((header, operand))
}

/// The `count` elements of type `T` from `op` in `input`.
pub fn elements<T: Pod>(input: &Input, op: Operand, count: usize) -> Result<&[T], TaskError> {
    let bytes = input.bytes(op.segment);
    let len = count * size_of::<T>();
    let data = bytes.get(op.offset..op.offset + len).ok_or_else(|| {
        format!(
            "segment {} holds {} bytes, the matrix needs {len} from offset {}",
            op.segment,
            bytes.len(),
            op.offset
        )
    })?;
    if data.is_empty() {
        return Ok(&[]);
    }
    Ok(bytemuck::try_cast_slice(data).map_err(|e| format!("segment {}: {e}", op.segment))?)
}
