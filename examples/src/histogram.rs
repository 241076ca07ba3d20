//! Histogram, as the Phoenix suite has it: the 256-bin counts of each colour
//! channel of 24-bit uncompressed BMP images.
//!
//! A BMP file is a 14-byte file header (`BM`, the file's size, the pixel
//! array's offset), an information header (its own size first: 12 bytes in
//! the oldest form, 40 or more since), then rows of pixels, each `B, G, R`,
//! each row padded to a multiple of 4 bytes, bottom row first unless the
//! height is negative. Only 24 bits a pixel without compression is taken;
//! every other kind is refused by name.

use std::ops::Range;

use coop::partial::Dense;
use coop::prelude::*;
use coop::split::Span;
use serde::{Deserialize, Serialize};

/// Bins of one channel.
pub const BINS: usize = 256;

/// Where one image's pixels lie in its segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bmp {
    /// Offset of the first row in the file.
    pub offset: usize,
    /// Pixels a row.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// Bytes a row, padding included: `3 * width` rounded up to 4.
    pub stride: usize,
}

/// Why a file is not an image [`Bmp::parse`] takes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BmpError {
    /// Shorter than its headers.
    #[error("not a BMP image: {0} bytes, shorter than its headers")]
    Short(usize),
    /// No `BM` at the start.
    #[error("not a BMP image: it does not start with \"BM\"")]
    NotBmp,
    /// An information header of a size no BMP version has.
    #[error("unknown BMP information header of {0} bytes")]
    Header(u32),
    /// A BMP of another kind.
    #[error("a {bits}-bit BMP{compressed}: only 24-bit uncompressed images are taken")]
    Kind {
        /// Bits a pixel.
        bits: u16,
        /// ", compressed" for a compressed one.
        compressed: &'static str,
    },
    /// Planes other than 1.
    #[error("a BMP with {0} colour planes: only 1 is valid")]
    Planes(u16),
    /// Pixels past the end of the file.
    #[error(
        "the header says {width} x {height} pixels from byte {offset}, {needed} bytes, but the file has {len}"
    )]
    Truncated {
        /// Pixels a row.
        width: u64,
        /// Rows.
        height: u64,
        /// Offset of the pixels.
        offset: u64,
        /// Bytes from the start of the file to the end of the pixels.
        needed: u64,
        /// Bytes of the file.
        len: usize,
    },
}

fn u16_at(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

impl Bmp {
    /// Reads the headers of the BMP file `bytes`, and checks that its pixels
    /// lie within it.
    pub fn parse(bytes: &[u8]) -> Result<Bmp, BmpError> {
        if bytes.len() < 18 {
            return Err(BmpError::Short(bytes.len()));
        }
        if &bytes[..2] != b"BM" {
            return Err(BmpError::NotBmp);
        }
        let offset = u64::from(u32_at(bytes, 10));
        let header = u32_at(bytes, 14);
        let (width, height, planes, bits, compression) = match header {
            12 if bytes.len() >= 26 => (
                i64::from(u16_at(bytes, 18)),
                i64::from(u16_at(bytes, 20)),
                u16_at(bytes, 22),
                u16_at(bytes, 24),
                0,
            ),
            40 | 52 | 56 | 64 | 108 | 124 if bytes.len() >= 34 => (
                i64::from(u32_at(bytes, 18) as i32),
                i64::from(u32_at(bytes, 22) as i32),
                u16_at(bytes, 26),
                u16_at(bytes, 28),
                u32_at(bytes, 30),
            ),
            12 | 40 | 52 | 56 | 64 | 108 | 124 => return Err(BmpError::Short(bytes.len())),
            other => return Err(BmpError::Header(other)),
        };
        if bits != 24 || compression != 0 {
            let compressed = if compression != 0 { ", compressed" } else { "" };
            return Err(BmpError::Kind { bits, compressed });
        }
        if planes != 1 {
            return Err(BmpError::Planes(planes));
        }
        // A negative height is a top-down image; a negative width, nothing.
        let (width, height) = (width.unsigned_abs(), height.unsigned_abs());
        let stride = (3 * width).div_ceil(4) * 4;
        let needed = offset + stride * height;
        if needed > bytes.len() as u64 || offset < 14 + u64::from(header) {
            return Err(BmpError::Truncated {
                width,
                height,
                offset,
                needed,
                len: bytes.len(),
            });
        }
        Ok(Bmp {
            offset: offset as usize,
            width: width as usize,
            height: height as usize,
            stride: stride as usize,
        })
    }

    /// The bytes of the pixel array in the file.
    fn pixels(&self) -> Range<usize> {
        self.offset..self.offset + self.stride * self.height
    }
}

/// Per-channel counts of the images, one a segment, whose headers the
/// coordinator read ([`Bmp::parse`]): tasks are runs of whole rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Histogram {
    /// The image in each segment, in order.
    pub images: Vec<Bmp>,
}

impl Histogram {
    /// The counts of `counts` (a result of this job) of channel `channel`:
    /// 0 for blue, 1 green, 2 red.
    pub fn channel(counts: &Dense<u64>, channel: usize) -> &[u64] {
        &counts[channel * BINS..(channel + 1) * BINS]
    }
}

impl Job for Histogram {
    const NAME: &'static str = "coop-examples/histogram";
    type Task = Span;
    /// Blue's 256 bins, then green's, then red's.
    type Partial = Dense<u64>;

    fn new_partial(&self) -> Dense<u64> {
        Dense::new(3 * BINS)
    }

    fn split(&self, input: &Input, hint: usize) -> Result<Vec<Span>, TaskError> {
        if self.images.len() != input.len() {
            return Err(format!("{} images for {} segments", self.images.len(), input.len()).into());
        }
        let total = self
            .images
            .iter()
            .map(|image| image.pixels().len())
            .sum::<usize>()
            .max(1);
        let mut spans = Vec::new();
        for (segment, image) in self.images.iter().enumerate() {
            if image.pixels().is_empty() {
                continue; // No rows, or rows of no pixels: nothing to count.
            }
            // Each image's rows are records of its own size.
            let share = (hint * image.pixels().len()).div_ceil(total);
            spans.extend(Records::Fixed(image.stride).split_ranges(
                input,
                &[(segment, image.pixels())],
                share,
            )?);
        }
        Ok(spans)
    }

    fn map(&self, span: &Span, input: &Input, counts: &mut Dense<u64>) -> Result<(), TaskError> {
        let image = &self.images[span.segment];
        let mut bins = [[0u64; BINS]; 3];
        for row in span.bytes(input).chunks_exact(image.stride) {
            for pixel in row[..3 * image.width].chunks_exact(3) {
                bins[0][usize::from(pixel[0])] += 1;
                bins[1][usize::from(pixel[1])] += 1;
                bins[2][usize::from(pixel[2])] += 1;
            }
        }
        for (bin, count) in bins.iter().flatten().enumerate() {
            counts.add(bin, *count);
        }
        Ok(())
    }

    fn merge(&self, into: &mut Dense<u64>, other: Dense<u64>) {
        coop::partial::Combine::combine(into, other);
    }
}

/// The entry that lets workers run [`Histogram`]; list it in `coop::init`.
pub fn register() -> coop::JobEntry {
    coop::register::<Histogram>()
}

/// A 24-bit BMP of `width` x `height` pixels, `pixel(x, y)` each (`y = 0` the
/// bottom row, stored first): for tests and benches.
pub fn encode_bmp(width: usize, height: usize, pixel: impl Fn(usize, usize) -> [u8; 3]) -> Vec<u8> {
    let stride = (3 * width).div_ceil(4) * 4;
    let size = 54 + stride * height;
    let mut bytes = Vec::with_capacity(size);
    bytes.extend_from_slice(b"BM");
    bytes.extend_from_slice(&(size as u32).to_le_bytes());
    bytes.extend_from_slice(&[0; 4]);
    bytes.extend_from_slice(&54u32.to_le_bytes());
    bytes.extend_from_slice(&40u32.to_le_bytes());
    bytes.extend_from_slice(&(width as i32).to_le_bytes());
    bytes.extend_from_slice(&(height as i32).to_le_bytes());
    bytes.extend_from_slice(&1u16.to_le_bytes());
    bytes.extend_from_slice(&24u16.to_le_bytes());
    bytes.extend_from_slice(&[0; 24]);
    for y in 0..height {
        for x in 0..width {
            bytes.extend_from_slice(&pixel(x, y));
        }
        bytes.resize(bytes.len() + stride - 3 * width, 0xEE);
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read_and_other_kinds_refused_by_name() {
        let image = encode_bmp(5, 3, |x, y| [x as u8, y as u8, 7]);
        assert_eq!(
            Bmp::parse(&image),
            Ok(Bmp {
                offset: 54,
                width: 5,
                height: 3,
                stride: 16
            })
        );
        let mut top_down = image.clone();
        top_down[22..26].copy_from_slice(&(-3i32).to_le_bytes());
        assert_eq!(Bmp::parse(&top_down).unwrap().height, 3);
        let mut eight_bit = image.clone();
        eight_bit[28] = 8;
        assert_eq!(
            Bmp::parse(&eight_bit).unwrap_err().to_string(),
            "a 8-bit BMP: only 24-bit uncompressed images are taken"
        );
        let mut compressed = image.clone();
        compressed[30] = 1;
        assert!(matches!(
            Bmp::parse(&compressed),
            Err(BmpError::Kind {
                compressed: ", compressed",
                ..
            })
        ));
        assert_eq!(
            Bmp::parse(b"PK\x03\x04 not an image at all"),
            Err(BmpError::NotBmp)
        );
        assert_eq!(Bmp::parse(&image[..10]), Err(BmpError::Short(10)));
        assert!(matches!(
            Bmp::parse(&image[..image.len() - 1]),
            Err(BmpError::Truncated { .. })
        ));
        let mut lying = image.clone();
        lying[18..22].copy_from_slice(&i32::MAX.to_le_bytes());
        assert!(matches!(Bmp::parse(&lying), Err(BmpError::Truncated { .. })));
        let mut header = image;
        header[14] = 99;
        assert_eq!(Bmp::parse(&header), Err(BmpError::Header(99)));
    }
}
