//! Headers of NumPy's `.npy` format (versions 1.0, 2.0 and 3.0) for 2-D
//! little-endian float matrices.
//!
//! A `.npy` file starts with the magic string `\x93NUMPY`, a major and a minor
//! version byte, the length of the header (a little-endian `u16` for version
//! 1.0, a `u32` for versions 2.0 and 3.0) and the header itself: a Python dict
//! literal such as `{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }`
//! padded with spaces and a final `'\n'`. The matrix data follows the header.
//!
//! [`parse_header`] reads such a header defensively (it never panics and
//! allocates only a bounded amount, whatever the input), [`check_len`] checks
//! that a file's length matches its header, and [`encode_header`] writes a
//! header exactly as `numpy.save` does.

use std::fmt;

/// The magic string every `.npy` file starts with.
const MAGIC: &[u8; 6] = b"\x93NUMPY";

/// `numpy.save` pads headers so that the data starts at a multiple of this.
const ARRAY_ALIGN: usize = 64;

/// `numpy.save` leaves room for a growth axis of this many digits.
const GROWTH_AXIS_MAX_DIGITS: usize = 21;

/// Most characters of found text quoted in an error message.
const SNIPPET_CHARS: usize = 40;

/// Most dimensions [`parse_header`] reads from a shape before giving up.
pub const MAX_DIMS: usize = 32;

/// Element type of a matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Dtype {
    /// Little-endian 32-bit float (`'<f4'`).
    F32,
    /// Little-endian 64-bit float (`'<f8'`).
    F64,
    /// Little-endian 32-bit signed integer (`'<i4'`).
    I32,
}

impl Dtype {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 | Dtype::I32 => 4,
            Dtype::F64 => 8,
        }
    }

    /// NumPy's type descriptor: `"<f4"`, `"<f8"` or `"<i4"`.
    pub fn descr(self) -> &'static str {
        match self {
            Dtype::F32 => "<f4",
            Dtype::F64 => "<f8",
            Dtype::I32 => "<i4",
        }
    }

    /// The dtype a descriptor names, if it is one of the supported ones.
    pub fn from_descr(descr: &str) -> Option<Dtype> {
        match descr {
            "<f4" => Some(Dtype::F32),
            "<f8" => Some(Dtype::F64),
            "<i4" => Some(Dtype::I32),
            _ => None,
        }
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Dtype::F32 => "f32",
            Dtype::F64 => "f64",
            Dtype::I32 => "i32",
        })
    }
}

/// A parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Element type.
    pub dtype: Dtype,
    /// Whether the data is stored column-major (Fortran order) rather than
    /// row-major (C order).
    pub fortran_order: bool,
    /// Dimensions; always two for a header returned by [`parse_header`].
    pub shape: Vec<usize>,
    /// byte offset of the data from the start of the file
    pub data_offset: usize,
}

impl Header {
    /// Number of data bytes the shape implies; None on overflow.
    pub fn data_len(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(self.dtype.size(), |acc, &d| acc.checked_mul(d))
    }

    /// Number of elements the shape implies; None on overflow.
    pub fn num_elements(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }
}

/// Everything that can be wrong with a header (or with a file's length).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NpyError {
    /// The file does not start with `\x93NUMPY`.
    #[error("bad magic string: not a .npy file")]
    BadMagic,
    /// The file ends before the end of the header.
    #[error("header is truncated")]
    Truncated,
    /// The version is not 1.0, 2.0 or 3.0.
    #[error("unsupported format version {major}.{minor}")]
    UnsupportedVersion {
        /// Major version byte found.
        major: u8,
        /// Minor version byte found.
        minor: u8,
    },
    /// The header is not ASCII (versions 1.0 and 2.0) or UTF-8 (version 3.0).
    #[error("header is not valid ASCII/UTF-8")]
    NotText,
    /// The header is not a well-formed Python dict literal.
    #[error("malformed header dictionary: {0}")]
    Malformed(String),
    /// One of the three required keys is missing.
    #[error("header dictionary has no '{0}' key")]
    MissingKey(&'static str),
    /// A key other than `descr`, `fortran_order` and `shape`.
    #[error("unknown key '{0}' in header dictionary")]
    UnknownKey(String),
    /// A key given twice.
    #[error("duplicate key '{0}' in header dictionary")]
    DuplicateKey(&'static str),
    /// A big-endian float descriptor (the text found, quotes included).
    #[error("big-endian data ({0}) is not supported")]
    BigEndian(String),
    /// Any other descriptor (the text found, quotes included for strings).
    #[error("unsupported dtype {0} (only '<f4', '<f8' and '<i4' are supported)")]
    UnsupportedDtype(String),
    /// `fortran_order` is not `True` or `False` (the text found).
    #[error("'fortran_order' must be True or False, found {0}")]
    BadFortranOrder(String),
    /// `shape` is not a tuple of integers (the text found).
    #[error("'shape' must be a tuple of integers, found {0}")]
    BadShape(String),
    /// A negative dimension (the text found).
    #[error("negative dimension {0} in shape")]
    NegativeDim(String),
    /// A dimension that does not fit in `usize` (the text found).
    #[error("dimension {0} in shape is too large")]
    DimTooLarge(String),
    /// More than [`MAX_DIMS`] dimensions.
    #[error("expected a 2-D array, found a shape with more than {} dimensions", MAX_DIMS)]
    TooManyDims,
    /// The shape is not 2-D.
    #[error("expected a 2-D array, found shape {}", ShapeDisplay(.0))]
    NotMatrix(Vec<usize>),
    /// The data size of the shape overflows.
    #[error("shape {} is too large", ShapeDisplay(.0))]
    TooLarge(Vec<usize>),
    /// The file holds less data than the header promises.
    #[error("file is truncated: the header promises {expected} bytes of data, the file holds {found}")]
    FileTruncated {
        /// Data bytes the header promises.
        expected: u64,
        /// Data bytes the file holds.
        found: u64,
    },
    /// The file holds more data than the header promises.
    #[error("file has {0} bytes of trailing data after the matrix")]
    TrailingData(u64),
}

/// Formats a shape the way Python writes a tuple: `()`, `(3,)`, `(3, 4)`.
#[derive(Debug, Clone, Copy)]
pub struct ShapeDisplay<'a>(pub &'a [usize]);

impl fmt::Display for ShapeDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("(")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        if self.0.len() == 1 {
            f.write_str(",")?;
        }
        f.write_str(")")
    }
}

/// Parses the header at the start of `file` (the file's bytes from offset 0;
/// may be the whole file or just a prefix).
///
/// Accepts versions 1.0 (u16 LE header length), 2.0 and 3.0 (u32 LE header
/// length); the header is a Python dict literal with keys 'descr',
/// 'fortran_order', 'shape' in any order, single or double quotes, optional
/// trailing comma, spaces/newline padding. Only the descriptors `'<f4'` and
/// `'<f8'` are accepted, and the shape must be 2-D. Unknown, duplicate and
/// missing keys are errors, and so is a shape whose data size overflows
/// (`data_offset + data_len` must fit in `usize` and `u64`).
///
/// Never panics, and allocates at most a small bounded amount whatever the
/// input.
pub fn parse_header(file: &[u8]) -> Result<Header, NpyError> {
    // Magic string.
    let n = file.len().min(MAGIC.len());
    if file[..n] != MAGIC[..n] {
        return Err(NpyError::BadMagic);
    }
    let (&major, &minor) = match (file.get(6), file.get(7)) {
        (Some(major), Some(minor)) => (major, minor),
        _ => return Err(NpyError::Truncated),
    };
    let len_bytes = match (major, minor) {
        (1, 0) => 2,
        (2, 0) | (3, 0) => 4,
        _ => return Err(NpyError::UnsupportedVersion { major, minor }),
    };
    let prefix_len = 8 + len_bytes;
    let len_field = file.get(8..prefix_len).ok_or(NpyError::Truncated)?;
    let header_len = len_field
        .iter()
        .rev()
        .fold(0u64, |acc, &b| (acc << 8) | u64::from(b));
    let data_offset = usize::try_from(header_len)
        .ok()
        .and_then(|h| h.checked_add(prefix_len))
        .ok_or(NpyError::Truncated)?;
    let text = file.get(prefix_len..data_offset).ok_or(NpyError::Truncated)?;

    // Versions 1.0 and 2.0 are latin-1, 3.0 is UTF-8; every valid header is
    // ASCII, so anything else is rejected up front.
    let text_ok = if major == 3 {
        std::str::from_utf8(text).is_ok()
    } else {
        text.is_ascii()
    };
    if !text_ok {
        return Err(NpyError::NotText);
    }

    let fields = parse_dict(text)?;
    if let Some(key) = fields.unknown {
        return Err(NpyError::UnknownKey(snippet(key)));
    }
    if let Some(key) = fields.duplicate {
        return Err(NpyError::DuplicateKey(key));
    }
    let descr = fields.descr.ok_or(NpyError::MissingKey("descr"))?;
    let fortran = fields
        .fortran_order
        .ok_or(NpyError::MissingKey("fortran_order"))?;
    let shape = fields.shape.ok_or(NpyError::MissingKey("shape"))?;

    let dtype = parse_descr(descr)?;
    let fortran_order = match fortran {
        Value::Word(b"True") => true,
        Value::Word(b"False") => false,
        other => return Err(NpyError::BadFortranOrder(other.to_string())),
    };
    let shape = parse_shape(shape)?;
    if shape.len() != 2 {
        return Err(NpyError::NotMatrix(shape));
    }

    let header = Header {
        dtype,
        fortran_order,
        shape,
        data_offset,
    };
    let fits = header
        .data_len()
        .and_then(|len| len.checked_add(data_offset))
        .is_some_and(|end| u64::try_from(end).is_ok());
    if !fits {
        return Err(NpyError::TooLarge(header.shape));
    }
    Ok(header)
}

/// Checks that the file length matches the header:
/// `file_len == data_offset + data_len`.
///
/// Errors are [`NpyError::FileTruncated`] (too little data; or
/// [`NpyError::Truncated`] when the file does not even hold the header),
/// [`NpyError::TrailingData`] (too much) and [`NpyError::TooLarge`] (the
/// size computation overflows).
pub fn check_len(header: &Header, file_len: u64) -> Result<(), NpyError> {
    let too_large = || NpyError::TooLarge(header.shape.clone());
    let data_len = header
        .data_len()
        .and_then(|n| u64::try_from(n).ok())
        .ok_or_else(too_large)?;
    let data_offset = u64::try_from(header.data_offset).map_err(|_| too_large())?;
    let expected_end = data_offset.checked_add(data_len).ok_or_else(too_large)?;
    if file_len < data_offset {
        return Err(NpyError::Truncated);
    }
    if file_len < expected_end {
        return Err(NpyError::FileTruncated {
            expected: data_len,
            found: file_len - data_offset,
        });
    }
    if file_len > expected_end {
        return Err(NpyError::TrailingData(file_len - expected_end));
    }
    Ok(())
}

/// Encodes a version 1.0 header (version 2.0 if the dict is too long for
/// u16) for a matrix of `dtype` and `shape`, padded with spaces and ending in
/// '\n' so that the total header length is a multiple of 64, exactly as
/// numpy.save writes it:
/// `{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }`.
///
/// Any number of dimensions is encoded, although [`parse_header`] only
/// accepts two.
///
/// # Panics
///
/// If the header would be longer than 4 GiB, which takes a shape of hundreds
/// of millions of dimensions.
pub fn encode_header(dtype: Dtype, fortran_order: bool, shape: &[usize]) -> Vec<u8> {
    let mut dict = format!(
        "{{'descr': '{}', 'fortran_order': {}, 'shape': {}, }}",
        dtype.descr(),
        if fortran_order { "True" } else { "False" },
        ShapeDisplay(shape),
    );
    // Room for the growth axis to be rewritten in place, as numpy leaves it.
    let growth_axis = if fortran_order {
        shape.last()
    } else {
        shape.first()
    };
    if let Some(d) = growth_axis {
        let digits = d.to_string().len();
        dict.extend(std::iter::repeat_n(
            ' ',
            GROWTH_AXIS_MAX_DIGITS.saturating_sub(digits),
        ));
    }

    // Text, padding and the final '\n'.
    let hlen = dict.len() + 1;
    let padded = |len_bytes: usize| {
        let pad = ARRAY_ALIGN - (MAGIC.len() + 2 + len_bytes + hlen) % ARRAY_ALIGN;
        hlen + pad
    };
    let v1_len = padded(2);
    let (major, len_field) = match u16::try_from(v1_len) {
        Ok(len) => (1u8, len.to_le_bytes().to_vec()),
        Err(_) => {
            let len = padded(4);
            // A header over 4 GiB cannot be written in any version.
            let len = u32::try_from(len).expect("npy header longer than 4 GiB");
            (2u8, len.to_le_bytes().to_vec())
        }
    };
    let total_header = MAGIC.len() + 2 + len_field.len();
    let pad = ARRAY_ALIGN - (total_header + hlen) % ARRAY_ALIGN;

    let mut out = Vec::with_capacity(total_header + hlen + pad);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[major, 0]);
    out.extend_from_slice(&len_field);
    out.extend_from_slice(dict.as_bytes());
    out.extend(std::iter::repeat_n(b' ', pad));
    out.push(b'\n');
    debug_assert_eq!(out.len() % ARRAY_ALIGN, 0);
    out
}

// ---------------------------------------------------------------------------
// The dict-literal parser.
// ---------------------------------------------------------------------------

/// A value in the header dictionary, as raw text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Value<'a> {
    /// A quoted string, without its quotes.
    Str(&'a [u8]),
    /// A run of identifier or number characters: `True`, `3`, `-1`, `1.5`.
    Word(&'a [u8]),
    /// A bracketed group, brackets included: `(3, 4)`, `[('a', '<f4')]`.
    Group(&'a [u8]),
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Value::Str(s) => write!(f, "'{}'", snippet(s)),
            Value::Word(s) | Value::Group(s) => f.write_str(&snippet(s)),
        }
    }
}

/// The recognised entries of the header dictionary.
#[derive(Debug, Default)]
struct Fields<'a> {
    descr: Option<Value<'a>>,
    fortran_order: Option<Value<'a>>,
    shape: Option<Value<'a>>,
    /// The first unknown key.
    unknown: Option<&'a [u8]>,
    /// The first key given twice.
    duplicate: Option<&'static str>,
}

/// A position in the header text.
struct Cursor<'a> {
    text: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a [u8]) -> Self {
        Cursor { text, pos: 0 }
    }

    fn peek(&self) -> Option<u8> {
        self.text.get(self.pos).copied()
    }

    fn rest(&self) -> &'a [u8] {
        self.text.get(self.pos..).unwrap_or_default()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(is_ws) {
            self.pos += 1;
        }
    }

    /// Describes what is at the cursor, for an error message.
    fn found(&self) -> String {
        if self.pos >= self.text.len() {
            "end of header".to_owned()
        } else {
            format!("'{}'", snippet(self.rest()))
        }
    }

    /// Consumes `byte` or fails with a message naming `what`.
    fn expect(&mut self, byte: u8, what: &str) -> Result<(), NpyError> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(malformed(format!("expected {what}, found {}", self.found())))
        }
    }

    /// Reads one value: a string, a word or a bracketed group.
    fn value(&mut self) -> Result<Value<'a>, NpyError> {
        let start = self.pos;
        match self.peek() {
            Some(q @ (b'\'' | b'"')) => {
                self.pos += 1;
                let body = self.pos;
                self.skip_string(q)?;
                Ok(Value::Str(&self.text[body..self.pos - 1]))
            }
            Some(b'(' | b'[' | b'{') => {
                // Bracket depth only: a mismatched pair like `(]` is caught
                // later by whoever interprets the group.
                let mut depth = 0usize;
                loop {
                    match self.peek() {
                        None => return Err(malformed("unbalanced brackets")),
                        Some(q @ (b'\'' | b'"')) => {
                            self.pos += 1;
                            self.skip_string(q)?;
                        }
                        Some(b'(' | b'[' | b'{') => {
                            depth += 1;
                            self.pos += 1;
                        }
                        Some(b')' | b']' | b'}') => {
                            depth -= 1;
                            self.pos += 1;
                            if depth == 0 {
                                return Ok(Value::Group(&self.text[start..self.pos]));
                            }
                        }
                        Some(_) => self.pos += 1,
                    }
                }
            }
            Some(b) if is_word(b) => {
                while self.peek().is_some_and(is_word) {
                    self.pos += 1;
                }
                Ok(Value::Word(&self.text[start..self.pos]))
            }
            _ => Err(malformed(format!("expected a value, found {}", self.found()))),
        }
    }

    /// Skips to just after the closing quote `q` of a string whose opening
    /// quote has been consumed.
    fn skip_string(&mut self, q: u8) -> Result<(), NpyError> {
        loop {
            match self.peek() {
                None => return Err(malformed("unterminated string")),
                Some(b'\\') => {
                    return Err(malformed("escape sequences in strings are not supported"));
                }
                Some(b'\n' | b'\r') => return Err(malformed("line break inside a string")),
                Some(b) => {
                    self.pos += 1;
                    if b == q {
                        return Ok(());
                    }
                }
            }
        }
    }
}

fn malformed(msg: impl Into<String>) -> NpyError {
    NpyError::Malformed(msg.into())
}

fn is_ws(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0c')
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'-' | b'.')
}

/// Up to [`SNIPPET_CHARS`] characters of `bytes` for an error message, with
/// control characters escaped so that the message stays on one line.
fn snippet(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (i, c) in text.chars().enumerate() {
        if i == SNIPPET_CHARS {
            out.push_str("...");
            break;
        }
        if c.is_control() {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses the whole header text as a dict literal.
fn parse_dict(text: &[u8]) -> Result<Fields<'_>, NpyError> {
    let mut c = Cursor::new(text);
    let mut fields = Fields::default();
    c.skip_ws();
    c.expect(b'{', "'{' at the start of the header")?;
    loop {
        c.skip_ws();
        if c.peek() == Some(b'}') {
            c.pos += 1;
            break;
        }
        let key = match c.value()? {
            Value::Str(key) => key,
            other => {
                return Err(malformed(format!(
                    "dictionary keys must be strings, found {other}"
                )));
            }
        };
        c.skip_ws();
        c.expect(b':', "':' after a key")?;
        c.skip_ws();
        let value = c.value()?;
        let known = match key {
            b"descr" => Some((&mut fields.descr, "descr")),
            b"fortran_order" => Some((&mut fields.fortran_order, "fortran_order")),
            b"shape" => Some((&mut fields.shape, "shape")),
            _ => None,
        };
        match known {
            Some((slot, name)) => {
                if slot.replace(value).is_some() && fields.duplicate.is_none() {
                    fields.duplicate = Some(name);
                }
            }
            None => {
                fields.unknown.get_or_insert(key);
            }
        }
        c.skip_ws();
        match c.peek() {
            Some(b',') => c.pos += 1,
            Some(b'}') => {
                c.pos += 1;
                break;
            }
            _ => {
                return Err(malformed(format!(
                    "expected ',' or '}}' after a value, found {}",
                    c.found()
                )));
            }
        }
    }
    c.skip_ws();
    if c.peek().is_some() {
        return Err(malformed(format!(
            "unexpected text after the dictionary: {}",
            c.found()
        )));
    }
    Ok(fields)
}

/// Interprets the value of `descr`.
fn parse_descr(value: Value<'_>) -> Result<Dtype, NpyError> {
    if let Value::Str(s) = value {
        match s {
            b"<f4" => return Ok(Dtype::F32),
            b"<f8" => return Ok(Dtype::F64),
            b"<i4" => return Ok(Dtype::I32),
            b">f4" | b">f8" | b">i4" => return Err(NpyError::BigEndian(value.to_string())),
            _ => {}
        }
    }
    Err(NpyError::UnsupportedDtype(value.to_string()))
}

/// Interprets the value of `shape`: a tuple of non-negative integers with at
/// most [`MAX_DIMS`] entries.
fn parse_shape(value: Value<'_>) -> Result<Vec<usize>, NpyError> {
    let bad = || NpyError::BadShape(value.to_string());
    let inner = match value {
        Value::Group([b'(', inner @ .., b')']) => inner,
        _ => return Err(bad()),
    };
    let mut c = Cursor::new(inner);
    let mut dims = Vec::new();
    let mut saw_comma = false;
    loop {
        c.skip_ws();
        if c.peek().is_none() {
            break;
        }
        let start = c.pos;
        while c.peek().is_some_and(is_word) {
            c.pos += 1;
        }
        let word = &inner[start..c.pos];
        if word.is_empty() {
            return Err(bad());
        }
        if dims.len() == MAX_DIMS {
            return Err(NpyError::TooManyDims);
        }
        dims.push(parse_dim(word).ok_or_else(bad)??);
        c.skip_ws();
        match c.peek() {
            None => break,
            Some(b',') => {
                c.pos += 1;
                saw_comma = true;
            }
            Some(_) => return Err(bad()),
        }
    }
    // `(3)` is the integer 3 in parentheses, not a tuple.
    if dims.len() == 1 && !saw_comma {
        return Err(bad());
    }
    Ok(dims)
}

/// Parses one dimension: an optionally signed decimal integer. `None` if the
/// word is not an integer at all.
fn parse_dim(word: &[u8]) -> Option<Result<usize, NpyError>> {
    let (negative, digits) = match word {
        [b'-', rest @ ..] => (true, rest),
        [b'+', rest @ ..] => (false, rest),
        _ => (false, word),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let value = digits.iter().try_fold(0usize, |acc, &d| {
        acc.checked_mul(10)?.checked_add(usize::from(d - b'0'))
    });
    Some(match value {
        Some(0) => Ok(0),
        _ if negative => Err(NpyError::NegativeDim(snippet(word))),
        Some(v) => Ok(v),
        None => Err(NpyError::DimTooLarge(snippet(word))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `numpy.save(f, np.zeros((3, 4), dtype='<f8'))`, header bytes (numpy 2.4).
    const NUMPY_F8_3X4_C: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), }                                                          \n";
    /// `numpy.save(f, np.zeros((1000, 7), dtype='<f4', order='F'))`.
    const NUMPY_F4_1000X7_F: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': True, 'shape': (1000, 7), }                                                        \n";
    /// `numpy.save(f, np.zeros((0, 0)))`.
    const NUMPY_F8_0X0_C: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (0, 0), }                                                          \n";
    /// numpy's header writer with `shape=(5, 0)`, Fortran order.
    const NUMPY_F8_5X0_F: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': True, 'shape': (5, 0), }                                                           \n";
    /// numpy's header writer with a 20-digit dimension.
    const NUMPY_F4_BIG_C: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (12345678901234567890, 5), }                                       \n";
    /// numpy's header writer with two 20-digit dimensions, Fortran order.
    const NUMPY_F4_BIG_F: &[u8] = b"\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': True, 'shape': (12345678901234567890, 18446744073709551615), }                     \n";

    /// A file with the given version and header text (no padding added).
    fn with_text(major: u8, text: &str) -> Vec<u8> {
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&[major, 0]);
        if major == 1 {
            out.extend_from_slice(&u16::try_from(text.len()).unwrap().to_le_bytes());
        } else {
            out.extend_from_slice(&u32::try_from(text.len()).unwrap().to_le_bytes());
        }
        out.extend_from_slice(text.as_bytes());
        out
    }

    fn v1(text: &str) -> Vec<u8> {
        with_text(1, text)
    }

    /// Parses a version 1.0 file with a dict whose entries are given.
    fn parse_dict_text(text: &str) -> Result<Header, NpyError> {
        parse_header(&v1(text))
    }

    fn dict(descr: &str, fortran: &str, shape: &str) -> String {
        format!("{{'descr': {descr}, 'fortran_order': {fortran}, 'shape': {shape}, }}\n")
    }

    fn err_msg(r: Result<Header, NpyError>) -> String {
        r.unwrap_err().to_string()
    }

    #[test]
    fn dtype_basics() {
        assert_eq!(Dtype::F32.size(), 4);
        assert_eq!(Dtype::F64.size(), 8);
        assert_eq!(Dtype::F32.descr(), "<f4");
        assert_eq!(Dtype::F64.descr(), "<f8");
        assert_eq!(Dtype::F32.to_string(), "f32");
        assert_eq!(Dtype::F64.to_string(), "f64");
        assert_eq!(Dtype::from_descr("<f4"), Some(Dtype::F32));
        assert_eq!(Dtype::from_descr("<f8"), Some(Dtype::F64));
        assert_eq!(Dtype::from_descr(">f8"), None);
    }

    #[test]
    fn shape_display_matches_python() {
        assert_eq!(ShapeDisplay(&[]).to_string(), "()");
        assert_eq!(ShapeDisplay(&[3]).to_string(), "(3,)");
        assert_eq!(ShapeDisplay(&[3, 4]).to_string(), "(3, 4)");
        assert_eq!(ShapeDisplay(&[2, 3, 4]).to_string(), "(2, 3, 4)");
    }

    #[test]
    fn encode_matches_numpy_bytes() {
        assert_eq!(encode_header(Dtype::F64, false, &[3, 4]), NUMPY_F8_3X4_C);
        assert_eq!(encode_header(Dtype::F32, true, &[1000, 7]), NUMPY_F4_1000X7_F);
        assert_eq!(encode_header(Dtype::F64, false, &[0, 0]), NUMPY_F8_0X0_C);
        assert_eq!(encode_header(Dtype::F64, true, &[5, 0]), NUMPY_F8_5X0_F);
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(
                encode_header(Dtype::F32, false, &[12345678901234567890, 5]),
                NUMPY_F4_BIG_C
            );
            assert_eq!(
                encode_header(Dtype::F32, true, &[12345678901234567890, 18446744073709551615]),
                NUMPY_F4_BIG_F
            );
        }
    }

    #[test]
    fn encode_other_ranks_matches_numpy_bytes() {
        // numpy's header writer with shape=() and shape=(3,).
        let zero_d = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (), }                                                              \n";
        let one_d = b"\x93NUMPY\x01\x00v\x00{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }                                                            \n";
        assert_eq!(encode_header(Dtype::F64, false, &[]), zero_d);
        assert_eq!(encode_header(Dtype::F64, false, &[3]), one_d);
    }

    #[test]
    fn encode_switches_to_version_2_like_numpy() {
        // numpy writes 21800 ones in version 1.0 (65536 bytes, length 0xfff6)
        // and 21900 ones in version 2.0 (65792 bytes, length 0x000100f4).
        let h = encode_header(Dtype::F64, false, &vec![1; 21800]);
        assert_eq!(h.len(), 65536);
        assert_eq!(&h[..10], b"\x93NUMPY\x01\x00\xf6\xff");
        let h = encode_header(Dtype::F64, false, &vec![1; 21900]);
        assert_eq!(h.len(), 65792);
        assert_eq!(&h[..12], b"\x93NUMPY\x02\x00\xf4\x00\x01\x00");
        assert_eq!(*h.last().unwrap(), b'\n');
        // It parses as far as the shape, which is not 2-D.
        assert_eq!(parse_header(&h), Err(NpyError::TooManyDims));
    }

    #[test]
    fn parse_numpy_bytes() {
        let h = parse_header(NUMPY_F8_3X4_C).unwrap();
        assert_eq!(
            h,
            Header {
                dtype: Dtype::F64,
                fortran_order: false,
                shape: vec![3, 4],
                data_offset: 128
            }
        );
        assert_eq!(h.data_len(), Some(96));
        assert_eq!(h.num_elements(), Some(12));
        let h = parse_header(NUMPY_F4_1000X7_F).unwrap();
        assert_eq!(h.dtype, Dtype::F32);
        assert!(h.fortran_order);
        assert_eq!(h.shape, [1000, 7]);
        assert_eq!(h.data_len(), Some(28000));
    }

    #[test]
    fn round_trips() {
        for dtype in [Dtype::F32, Dtype::F64] {
            for fortran_order in [false, true] {
                for shape in [[3, 4], [0, 0], [0, 5], [5, 0], [1, 1], [65536, 3], [7, 123456]] {
                    let bytes = encode_header(dtype, fortran_order, &shape);
                    assert_eq!(bytes.len() % 64, 0);
                    let h = parse_header(&bytes).unwrap();
                    assert_eq!(
                        h,
                        Header {
                            dtype,
                            fortran_order,
                            shape: shape.to_vec(),
                            data_offset: bytes.len()
                        }
                    );
                    assert_eq!(h.data_len(), Some(shape[0] * shape[1] * dtype.size()));
                    // The whole file parses too, and its length checks out.
                    let mut file = bytes.clone();
                    file.resize(bytes.len() + h.data_len().unwrap(), 0);
                    assert_eq!(parse_header(&file).unwrap(), h);
                    assert_eq!(check_len(&h, file.len() as u64), Ok(()));
                }
            }
        }
    }

    #[test]
    fn empty_shapes_are_valid() {
        for shape in ["(0, 0)", "(0, 9)", "(9, 0)"] {
            let h = parse_dict_text(&dict("'<f8'", "False", shape)).unwrap();
            assert_eq!(h.data_len(), Some(0));
            assert_eq!(check_len(&h, h.data_offset as u64), Ok(()));
        }
    }

    #[test]
    fn lenient_syntax() {
        let expect = |text: &str, dtype, fortran_order, shape: [usize; 2]| {
            let h = parse_dict_text(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(
                (h.dtype, h.fortran_order, h.shape.as_slice()),
                (dtype, fortran_order, shape.as_slice()),
                "{text:?}"
            );
        };
        // Any key order, double quotes, no trailing comma, no padding.
        expect(
            r#"{"shape": (2, 3), "fortran_order": True, "descr": "<f4"}"#,
            Dtype::F32,
            true,
            [2, 3],
        );
        expect(
            "{'fortran_order':False,'shape':(2,3,),'descr':'<f8'}",
            Dtype::F64,
            false,
            [2, 3],
        );
        // Whitespace and newlines everywhere.
        expect(
            "\n  {\n\t'descr' : '<f8' ,\r\n 'fortran_order' :\tTrue ,\n 'shape' : ( 2 ,\n 3 ) ,\n }  \n\n",
            Dtype::F64,
            true,
            [2, 3],
        );
        // Explicit plus sign, -0.
        expect(&dict("'<f8'", "False", "(+2, -0)"), Dtype::F64, false, [2, 0]);
    }

    #[test]
    fn versions_2_and_3() {
        let text = dict("'<f8'", "False", "(3, 4)");
        for major in [2, 3] {
            let file = with_text(major, &text);
            let h = parse_header(&file).unwrap();
            assert_eq!(h.shape, [3, 4]);
            assert_eq!(h.data_offset, 12 + text.len());
        }
        // Version 3.0 headers are UTF-8: a non-ASCII dtype is just unsupported.
        let file = with_text(3, &dict("'<f8é'", "False", "(3, 4)"));
        assert_eq!(
            err_msg(parse_header(&file)),
            "unsupported dtype '<f8é' (only '<f4', '<f8' and '<i4' are supported)"
        );
    }

    #[test]
    fn not_text() {
        // Latin-1 in a version 1.0/2.0 header.
        let mut file = v1(&dict("'<f8'", "False", "(3, 4)"));
        file[20] = 0xe9;
        assert_eq!(parse_header(&file), Err(NpyError::NotText));
        // Invalid UTF-8 in a version 3.0 header.
        let mut file = with_text(3, &dict("'<f8'", "False", "(3, 4)"));
        file[20] = 0xff;
        assert_eq!(parse_header(&file), Err(NpyError::NotText));
        assert_eq!(NpyError::NotText.to_string(), "header is not valid ASCII/UTF-8");
    }

    #[test]
    fn bad_magic() {
        for file in [
            &b"PK\x03\x04 a zip file, not npy"[..],
            b"\x93NUMPZ\x01\x00",
            b"x",
            b"\x93numpy\x01\x00v\x00{}",
        ] {
            assert_eq!(parse_header(file), Err(NpyError::BadMagic), "{file:?}");
        }
        assert_eq!(
            NpyError::BadMagic.to_string(),
            "bad magic string: not a .npy file"
        );
    }

    #[test]
    fn every_prefix_is_truncated() {
        let v2 = with_text(2, &dict("'<f4'", "True", "(1, 2)"));
        for full in [NUMPY_F8_3X4_C, v2.as_slice()] {
            for len in 0..full.len() {
                assert_eq!(
                    parse_header(&full[..len]),
                    Err(NpyError::Truncated),
                    "prefix of {len} bytes"
                );
            }
            assert!(parse_header(full).is_ok());
        }
        assert_eq!(NpyError::Truncated.to_string(), "header is truncated");
    }

    #[test]
    fn header_length_past_end() {
        let mut file = NUMPY_F8_3X4_C.to_vec();
        file[8] = 0xff;
        file[9] = 0xff;
        assert_eq!(parse_header(&file), Err(NpyError::Truncated));
        let mut file = with_text(2, &dict("'<f8'", "False", "(3, 4)"));
        file[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(parse_header(&file), Err(NpyError::Truncated));
    }

    #[test]
    fn wrong_versions() {
        for (major, minor) in [(0, 0), (1, 1), (2, 1), (4, 0), (9, 0), (255, 255)] {
            let mut file = NUMPY_F8_3X4_C.to_vec();
            file[6] = major;
            file[7] = minor;
            let e = parse_header(&file).unwrap_err();
            assert_eq!(e, NpyError::UnsupportedVersion { major, minor });
            assert_eq!(
                e.to_string(),
                format!("unsupported format version {major}.{minor}")
            );
        }
        // The version is reported even when nothing follows it.
        assert_eq!(
            err_msg(parse_header(b"\x93NUMPY\x09\x00")),
            "unsupported format version 9.0"
        );
    }

    #[test]
    fn not_a_dict() {
        for text in [
            "",
            "   \n",
            "[('descr', '<f8')]",
            "'descr'",
            "None",
            "(3, 4)",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4)",
            "{'descr': '<f8' 'fortran_order': False, 'shape': (3, 4)}",
            "{'descr' '<f8', 'fortran_order': False, 'shape': (3, 4)}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4)} x",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4)}}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4),,}",
            "{,}",
            "{'descr': '<f8, 'fortran_order': False, 'shape': (3, 4)}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4}",
            "{'descr': '\\x3cf8', 'fortran_order': False, 'shape': (3, 4)}",
            "{'descr': '<f8\n', 'fortran_order': False, 'shape': (3, 4)}",
            "{descr: '<f8', 'fortran_order': False, 'shape': (3, 4)}",
            "{'descr': , 'fortran_order': False, 'shape': (3, 4)}",
            "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4)}\0",
        ] {
            let e = parse_dict_text(text).unwrap_err();
            assert!(matches!(e, NpyError::Malformed(_)), "{text:?}: {e:?}");
            let msg = e.to_string();
            assert!(msg.starts_with("malformed header dictionary: "), "{msg}");
            assert!(!msg.contains('\n'), "{msg:?}");
        }
        assert_eq!(
            err_msg(parse_dict_text("[1, 2]")),
            "malformed header dictionary: expected '{' at the start of the header, found '[1, 2]'"
        );
        assert_eq!(
            err_msg(parse_dict_text("")),
            "malformed header dictionary: expected '{' at the start of the header, found end of header"
        );
    }

    #[test]
    fn missing_keys() {
        let cases = [
            ("{'fortran_order': False, 'shape': (3, 4)}", "descr"),
            ("{'descr': '<f8', 'shape': (3, 4)}", "fortran_order"),
            ("{'descr': '<f8', 'fortran_order': False}", "shape"),
            ("{}", "descr"),
        ];
        for (text, key) in cases {
            let e = parse_dict_text(text).unwrap_err();
            assert_eq!(e, NpyError::MissingKey(key), "{text:?}");
            assert_eq!(e.to_string(), format!("header dictionary has no '{key}' key"));
        }
    }

    #[test]
    fn unknown_and_duplicate_keys() {
        let text = "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), 'extra': 1}";
        assert_eq!(
            err_msg(parse_dict_text(text)),
            "unknown key 'extra' in header dictionary"
        );
        // Unknown keys win over missing keys.
        assert_eq!(
            parse_dict_text("{'Descr': '<f8'}"),
            Err(NpyError::UnknownKey("Descr".into()))
        );
        let text = "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4), 'descr': '<f4'}";
        assert_eq!(
            err_msg(parse_dict_text(text)),
            "duplicate key 'descr' in header dictionary"
        );
        assert!(matches!(parse_dict_text("{1: 2}"), Err(NpyError::Malformed(_))));
    }

    #[test]
    fn bad_descr() {
        let cases = [
            (
                "'<i8'",
                "unsupported dtype '<i8' (only '<f4', '<f8' and '<i4' are supported)",
            ),
            ("'>f8'", "big-endian data ('>f8') is not supported"),
            ("'>f4'", "big-endian data ('>f4') is not supported"),
            (
                "'|b1'",
                "unsupported dtype '|b1' (only '<f4', '<f8' and '<i4' are supported)",
            ),
            (
                "'|O'",
                "unsupported dtype '|O' (only '<f4', '<f8' and '<i4' are supported)",
            ),
            (
                "'object'",
                "unsupported dtype 'object' (only '<f4', '<f8' and '<i4' are supported)",
            ),
            (
                "'=f8'",
                "unsupported dtype '=f8' (only '<f4', '<f8' and '<i4' are supported)",
            ),
            (
                "'<f2'",
                "unsupported dtype '<f2' (only '<f4', '<f8' and '<i4' are supported)",
            ),
            (
                "''",
                "unsupported dtype '' (only '<f4', '<f8' and '<i4' are supported)",
            ),
            (
                "[('a', '<f4')]",
                "unsupported dtype [('a', '<f4')] (only '<f4', '<f8' and '<i4' are supported)",
            ),
            (
                "None",
                "unsupported dtype None (only '<f4', '<f8' and '<i4' are supported)",
            ),
        ];
        for (descr, msg) in cases {
            assert_eq!(err_msg(parse_dict_text(&dict(descr, "False", "(3, 4)"))), msg);
        }
        // Long descriptors are shortened in the message.
        let long = format!("'{}'", "x".repeat(1000));
        let msg = err_msg(parse_dict_text(&dict(&long, "False", "(3, 4)")));
        assert!(msg.len() < 120, "{msg}");
    }

    #[test]
    fn bad_fortran_order() {
        for (value, found) in [
            ("'False'", "'False'"),
            ("0", "0"),
            ("1", "1"),
            ("false", "false"),
            ("None", "None"),
            ("(True,)", "(True,)"),
        ] {
            assert_eq!(
                err_msg(parse_dict_text(&dict("'<f8'", value, "(3, 4)"))),
                format!("'fortran_order' must be True or False, found {found}")
            );
        }
    }

    #[test]
    fn bad_shape() {
        for shape in [
            "[3, 4]",
            "3",
            "(3)",
            "'(3, 4)'",
            "{3: 4}",
            "(3.0, 4)",
            "(3, None)",
            "(3 4)",
            "(3,, 4)",
            "(,)",
            "((3, 4),)",
            "(3, 4]",
            "(1e3, 4)",
            "(0x10, 4)",
            "(3, 4 5)",
        ] {
            let e = parse_dict_text(&dict("'<f8'", "False", shape)).unwrap_err();
            assert!(matches!(e, NpyError::BadShape(_)), "{shape}: {e:?}");
        }
        assert_eq!(
            err_msg(parse_dict_text(&dict("'<f8'", "False", "[3, 4]"))),
            "'shape' must be a tuple of integers, found [3, 4]"
        );
    }

    #[test]
    fn negative_and_huge_dims() {
        assert_eq!(
            err_msg(parse_dict_text(&dict("'<f8'", "False", "(3, -1)"))),
            "negative dimension -1 in shape"
        );
        assert_eq!(
            err_msg(parse_dict_text(&dict(
                "'<f8'",
                "False",
                "(99999999999999999999999, 1)"
            ))),
            "dimension 99999999999999999999999 in shape is too large"
        );
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(
                err_msg(parse_dict_text(&dict(
                    "'<f8'",
                    "False",
                    "(4294967296, 4294967296)"
                ))),
                "shape (4294967296, 4294967296) is too large"
            );
            // numpy happily writes such headers; the data size overflows.
            assert_eq!(
                parse_header(NUMPY_F4_BIG_C),
                Err(NpyError::TooLarge(vec![12345678901234567890, 5]))
            );
            // The element count fits, the byte count does not.
            let n = usize::MAX / 8 + 1;
            assert_eq!(
                parse_dict_text(&dict("'<f8'", "False", &format!("({n}, 1)"))),
                Err(NpyError::TooLarge(vec![n, 1]))
            );
            // The byte count fits, adding the data offset does not.
            let n = usize::MAX / 4;
            assert_eq!(
                parse_dict_text(&dict("'<f4'", "False", &format!("(1, {n})"))),
                Err(NpyError::TooLarge(vec![1, n]))
            );
        }
        // A zero dimension makes any other dimension harmless.
        let h = parse_dict_text(&dict("'<f8'", "False", "(0, 18446744073709551615)"));
        #[cfg(target_pointer_width = "64")]
        assert_eq!(h.unwrap().data_len(), Some(0));
        #[cfg(not(target_pointer_width = "64"))]
        assert!(h.is_err());
    }

    #[test]
    fn wrong_rank() {
        let cases = [
            ("()", "expected a 2-D array, found shape ()"),
            ("(3,)", "expected a 2-D array, found shape (3,)"),
            ("(2, 3, 4)", "expected a 2-D array, found shape (2, 3, 4)"),
            ("(2, 3, 4,)", "expected a 2-D array, found shape (2, 3, 4)"),
        ];
        for (shape, msg) in cases {
            assert_eq!(err_msg(parse_dict_text(&dict("'<f8'", "False", shape))), msg);
        }
        let many = format!("({})", vec!["1"; 1000].join(", "));
        assert_eq!(
            parse_dict_text(&dict("'<f8'", "False", &many)),
            Err(NpyError::TooManyDims)
        );
        let max = format!("({})", vec!["1"; MAX_DIMS].join(", "));
        assert_eq!(
            parse_dict_text(&dict("'<f8'", "False", &max)),
            Err(NpyError::NotMatrix(vec![1; MAX_DIMS]))
        );
    }

    #[test]
    fn check_len_cases() {
        let h = parse_header(NUMPY_F8_3X4_C).unwrap();
        assert_eq!(h.data_offset, 128);
        assert_eq!(check_len(&h, 128 + 96), Ok(()));
        let e = check_len(&h, 128 + 88).unwrap_err();
        assert_eq!(
            e.to_string(),
            "file is truncated: the header promises 96 bytes of data, the file holds 88"
        );
        assert_eq!(
            check_len(&h, 128),
            Err(NpyError::FileTruncated {
                expected: 96,
                found: 0
            })
        );
        assert_eq!(check_len(&h, 100), Err(NpyError::Truncated));
        assert_eq!(
            check_len(&h, 128 + 104).unwrap_err().to_string(),
            "file has 8 bytes of trailing data after the matrix"
        );
        let h = Header {
            dtype: Dtype::F64,
            fortran_order: false,
            shape: vec![10, 10],
            data_offset: 128,
        };
        assert_eq!(
            check_len(&h, 128 + 792).unwrap_err().to_string(),
            "file is truncated: the header promises 800 bytes of data, the file holds 792"
        );
        assert_eq!(
            check_len(&h, u64::MAX),
            Err(NpyError::TrailingData(u64::MAX - 928))
        );
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn check_len_overflow() {
        let h = Header {
            dtype: Dtype::F64,
            fortran_order: false,
            shape: vec![1 << 32, 1 << 32],
            data_offset: 128,
        };
        assert_eq!(h.data_len(), None);
        assert_eq!(
            check_len(&h, 0).unwrap_err().to_string(),
            "shape (4294967296, 4294967296) is too large"
        );
        let h = Header {
            dtype: Dtype::F32,
            fortran_order: false,
            shape: vec![1, usize::MAX / 4],
            data_offset: 128,
        };
        assert!(h.data_len().is_some());
        assert!(matches!(check_len(&h, 0), Err(NpyError::TooLarge(_))));
    }

    #[test]
    fn messages_are_one_line() {
        let weird = "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 4)} x\t\x01\x02";
        let msg = err_msg(parse_dict_text(weird));
        assert!(!msg.contains(['\n', '\t', '\x01']), "{msg:?}");
        assert!(msg.contains("\\t"), "{msg:?}");
    }

    /// A valid header with random dtype, order and shape.
    fn valid_header() -> impl Strategy<Value = Vec<u8>> {
        (any::<bool>(), any::<bool>(), 0usize..100_000, 0usize..100_000).prop_map(
            |(f64, fortran, rows, cols)| {
                let dtype = if f64 { Dtype::F64 } else { Dtype::F32 };
                encode_header(dtype, fortran, &[rows, cols])
            },
        )
    }

    /// Counts this thread's heap allocations, so that a test can bound what
    /// one call allocates whatever the input claims.
    struct CountingAllocator;

    thread_local! {
        static LIVE: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
        static PEAK: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

    // SAFETY: every call is forwarded unchanged to the system allocator; the
    // counters are thread-local `Cell`s that never allocate.
    unsafe impl std::alloc::GlobalAlloc for CountingAllocator {
        unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
            let _ = LIVE.try_with(|live| {
                live.set(live.get() + layout.size());
                let _ = PEAK.try_with(|peak| peak.set(peak.get().max(live.get())));
            });
            // SAFETY: the caller's contract for `alloc` is passed on.
            unsafe { std::alloc::System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
            let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(layout.size())));
            // SAFETY: the caller's contract for `dealloc` is passed on.
            unsafe { std::alloc::System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static ALLOCATOR: CountingAllocator = CountingAllocator;

    /// Most bytes [`parse_header`] may have allocated at once, whatever the
    /// header declares: an error message or a shape of at most `MAX_DIMS`.
    const PARSE_ALLOC_LIMIT: usize = 4096;

    /// Parses `file`, checking that the parse allocated at most
    /// [`PARSE_ALLOC_LIMIT`] bytes, and the invariants of a success.
    fn parse_checked(file: &[u8]) -> Result<Header, NpyError> {
        let base = LIVE.with(|live| live.get());
        PEAK.with(|peak| peak.set(base));
        let parsed = parse_header(file);
        let peak = PEAK.with(|peak| peak.get()) - base;
        assert!(
            peak <= PARSE_ALLOC_LIMIT,
            "parse_header allocated {peak} bytes ({parsed:?})"
        );
        match &parsed {
            Ok(h) => check_parsed(file, h),
            Err(e) => {
                let msg = e.to_string();
                assert!(!msg.is_empty() && !msg.contains(['\n', '\r']), "{msg:?}");
            }
        }
        parsed
    }

    #[test]
    fn huge_declared_shapes_allocate_nothing_by_their_size() {
        for shape in [
            "(18446744073709551615, 18446744073709551615)",
            "(4294967296, 4294967296)",
            "(1000000000, 1000000000)",
            "(2305843009213693951, 1)",
            "(99999999999999999999999999999999, 1)",
        ] {
            let file = v1(&dict("'<f8'", "False", shape));
            let _ = parse_checked(&file);
        }
        let h = parse_checked(&v1(&dict("'<f8'", "False", "(1000000000, 1000000000)"))).unwrap();
        assert!(matches!(check_len(&h, 200), Err(NpyError::FileTruncated { .. })));
    }

    /// Invariants of any successful parse: a 2-D shape whose data fits, and a
    /// header that `encode_header` writes back to the same matrix.
    fn check_parsed(file: &[u8], h: &Header) {
        assert_eq!(h.shape.len(), 2);
        assert!(h.data_offset <= file.len());
        assert!(h.data_offset >= 10);
        let len = h.data_len().expect("data_len fits");
        assert!(len.checked_add(h.data_offset).is_some());
        // Round trip: the same dtype, order and shape, in numpy's layout.
        let encoded = encode_header(h.dtype, h.fortran_order, &h.shape);
        match parse_header(&encoded) {
            Ok(again) => assert_eq!(
                again,
                Header {
                    data_offset: encoded.len(),
                    ..h.clone()
                }
            ),
            // numpy's padding can push a data size that just fitted past usize.
            Err(NpyError::TooLarge(shape)) => {
                assert_eq!(shape, h.shape);
                assert!(len.checked_add(encoded.len()).is_none());
            }
            Err(e) => panic!("{h:?} does not round-trip: {e}"),
        }
    }

    /// Proptest cases per property: few by default (CI), `PROPTEST_CASES` for
    /// a long fuzzing run.
    fn fuzz_config() -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(1000);
        ProptestConfig::with_cases(cases)
    }

    /// A dimension, often extreme.
    fn dim_text() -> impl Strategy<Value = String> {
        prop_oneof![
            (0usize..10).prop_map(|d| d.to_string()),
            any::<usize>().prop_map(|d| d.to_string()),
            any::<u64>().prop_map(|d| format!("-{d}")),
            (1u32..=u32::MAX).prop_map(|d| d.to_string()),
            Just(usize::MAX.to_string()),
            Just((usize::MAX / 8).to_string()),
            Just("18446744073709551616".to_owned()),
            Just("+3".to_owned()),
            Just("3.0".to_owned()),
            Just("0x10".to_owned()),
            Just("".to_owned()),
        ]
    }

    /// A header dict with edited fields: each of the three keys (or a
    /// stranger) present or not, valid or damaged values, in any order, with
    /// either quotes and any spacing.
    fn edited_dict() -> impl Strategy<Value = String> {
        let descr = prop::sample::select(vec![
            "'<f8'",
            "'<f4'",
            "\"<f8\"",
            "'>f8'",
            "'<i8'",
            "'<f2'",
            "'f8'",
            "'<f8",
            "8",
            "None",
            "[('a', '<f8')]",
            "''",
        ]);
        let fortran = prop::sample::select(vec![
            "False", "True", "false", "1", "'True'", "None", "Falsey", "",
        ]);
        let shape = (
            proptest::collection::vec(dim_text(), 0..5),
            any::<bool>(),
            prop::sample::select(vec![("(", ")"), ("[", "]"), ("(", ""), ("", ")")]),
        )
            .prop_map(|(dims, trailing_comma, (open, close))| {
                let mut inner = dims.join(", ");
                if trailing_comma {
                    inner.push(',');
                }
                format!("{open}{inner}{close}")
            });
        let key = prop::sample::select(vec![
            "'descr'",
            "'fortran_order'",
            "'shape'",
            "\"shape\"",
            "'extra'",
            "descr",
        ]);
        (
            descr,
            fortran,
            shape,
            proptest::collection::vec((key, 0usize..3), 0..5),
            prop::sample::select(vec![", ", ",", " , ", ",\n"]),
            any::<bool>(),
        )
            .prop_map(|(descr, fortran, shape, entries, sep, trailing)| {
                let body: Vec<String> = entries
                    .iter()
                    .map(|(key, which)| {
                        let value = match (key.trim_matches(['\'', '"']), which) {
                            ("descr", _) => descr.to_owned(),
                            ("fortran_order", _) => fortran.to_owned(),
                            ("shape", _) => shape.clone(),
                            (_, 0) => descr.to_owned(),
                            (_, 1) => fortran.to_owned(),
                            _ => shape.clone(),
                        };
                        format!("{key}: {value}")
                    })
                    .collect();
                let mut text = format!("{{{}", body.join(sep));
                if trailing {
                    text.push_str(sep);
                }
                text.push('}');
                text
            })
    }

    proptest! {
        #![proptest_config(fuzz_config())]

        #[test]
        fn never_panics_on_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_checked(&bytes);
        }

        #[test]
        fn never_panics_on_arbitrary_headers(
            major in 0u8..5,
            text in proptest::collection::vec(
                prop_oneof![
                    4 => prop::sample::select(&b"{}()[]'\",: \\\n-019<f8Tre"[..]),
                    1 => any::<u8>(),
                ],
                0..200,
            ),
        ) {
            let mut file = MAGIC.to_vec();
            file.extend_from_slice(&[major, 0]);
            let len = u32::try_from(text.len()).unwrap();
            if major == 1 {
                file.extend_from_slice(&u16::try_from(len).unwrap().to_le_bytes());
            } else {
                file.extend_from_slice(&len.to_le_bytes());
            }
            file.extend_from_slice(&text);
            let _ = parse_checked(&file);
        }

        #[test]
        fn never_panics_on_mutated_headers(
            header in valid_header(),
            index in any::<prop::sample::Index>(),
            byte in any::<u8>(),
            extra in proptest::collection::vec(any::<u8>(), 0..16),
        ) {
            let mut file = header.clone();
            file[index.index(header.len())] = byte;
            file.extend_from_slice(&extra);
            let _ = parse_checked(&file);
        }

        #[test]
        fn never_panics_on_mutated_dict_text(
            header in valid_header(),
            edits in proptest::collection::vec(
                (any::<prop::sample::Index>(), prop::sample::select(&b"{}()[]'\",: -0123456789TrueFals<>f48\n\\x"[..])),
                1..4,
            ),
        ) {
            let mut file = header.clone();
            for (index, byte) in edits {
                // Leave the magic, version and length alone.
                let i = 10 + index.index(header.len() - 10);
                file[i] = byte;
            }
            let _ = parse_checked(&file);
        }

        #[test]
        fn never_panics_on_truncated_or_extended_headers(
            header in valid_header(),
            cut in any::<prop::sample::Index>(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        ) {
            let mut file = header.clone();
            for (index, bit) in flips {
                let i = index.index(file.len());
                file[i] ^= bit;
            }
            let cut = cut.index(file.len() + 1);
            let _ = parse_checked(&file[..cut]);
            // A prefix of an intact header is always "truncated".
            if cut < header.len() {
                prop_assert_eq!(parse_checked(&header[..cut]), Err(NpyError::Truncated));
            }
        }

        #[test]
        fn edited_dicts_parse_or_fail_cleanly(major in 1u8..=3, dict in edited_dict(), data in 0usize..64) {
            let mut file = with_text(major, &dict);
            file.resize(file.len() + data, 0);
            if let Ok(h) = parse_checked(&file) {
                // Accepted: the dict had each key once, and the shape read is
                // the one written.
                prop_assert!(dict.contains("descr") && dict.contains("fortran_order") && dict.contains("shape"));
                let written = dict.split("shape").nth(1).unwrap_or_default();
                for d in &h.shape {
                    let d = d.to_string();
                    prop_assert!(written.contains(d.as_str()), "{} not in {}", d, written);
                }
            }
        }

        #[test]
        fn overflowing_products_are_too_large(
            rows in (usize::MAX >> 40)..=usize::MAX,
            cols in 2usize..=usize::MAX,
            f64 in any::<bool>(),
        ) {
            let dtype = if f64 { Dtype::F64 } else { Dtype::F32 };
            let file = encode_header(dtype, false, &[rows, cols]);
            let fits = rows.checked_mul(cols).and_then(|n| n.checked_mul(dtype.size())).and_then(|n| n.checked_add(file.len())).is_some();
            match parse_checked(&file) {
                Ok(h) => {
                    prop_assert!(fits);
                    // The file holds only the header: a length error, not an allocation.
                    let truncated = matches!(check_len(&h, file.len() as u64), Err(NpyError::FileTruncated { .. }));
                    prop_assert!(truncated);
                }
                Err(e) => prop_assert_eq!(e, NpyError::TooLarge(vec![rows, cols])),
            }
        }

        #[test]
        fn round_trip_any_shape(
            f64 in any::<bool>(),
            fortran in any::<bool>(),
            rows in any::<usize>(),
            cols in any::<usize>(),
        ) {
            let dtype = if f64 { Dtype::F64 } else { Dtype::F32 };
            let bytes = encode_header(dtype, fortran, &[rows, cols]);
            prop_assert_eq!(bytes.len() % 64, 0);
            let fits = rows
                .checked_mul(cols)
                .and_then(|n| n.checked_mul(dtype.size()))
                .and_then(|n| n.checked_add(bytes.len()))
                .is_some();
            match parse_checked(&bytes) {
                Ok(h) => {
                    prop_assert!(fits);
                    prop_assert_eq!(h, Header { dtype, fortran_order: fortran, shape: vec![rows, cols], data_offset: bytes.len() });
                }
                Err(e) => {
                    prop_assert!(!fits);
                    prop_assert_eq!(e, NpyError::TooLarge(vec![rows, cols]));
                }
            }
        }
    }
}
