//! [`Dense`]: numbers merged element by element.

use std::ops::{AddAssign, Deref, DerefMut};

use serde::{Deserialize, Serialize};

use super::Combine;

/// A fixed-size array of numbers (counters, sums) that merges element by
/// element: as a [`Job::Partial`](crate::Job::Partial), each worker fills its
/// own, and the coordinator adds them up.
///
/// The empty array (its `Default`, what a worker starts a partial from)
/// counts as zeros of any length: it takes the length of the first array it
/// is given ([`Dense::add`] past its end also grows it), so a job whose size
/// comes from its parameters need not size its partials beforehand. Integer
/// sums overflow as `+=` does (a panic in debug builds).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Dense<T> {
    values: Vec<T>,
}

impl<T: Copy + Default + AddAssign> Dense<T> {
    /// `len` zeros.
    pub fn new(len: usize) -> Self {
        Dense {
            values: vec![T::default(); len],
        }
    }

    /// Adds `value` at `index`, growing the array with zeros if it is shorter.
    pub fn add(&mut self, index: usize, value: T) {
        if index >= self.values.len() {
            self.values.resize(index + 1, T::default());
        }
        self.values[index] += value;
    }

    fn add_all(&mut self, values: &[T]) {
        for (into, &value) in self.values.iter_mut().zip(values) {
            *into += value;
        }
    }

    /// The numbers.
    pub fn into_vec(self) -> Vec<T> {
        self.values
    }
}

/// Element by element; the result is as long as the longer of the two.
impl<T: Copy + Default + AddAssign> Combine for Dense<T> {
    fn combine(&mut self, other: Dense<T>) {
        if other.values.len() > self.values.len() {
            let mut other = other;
            other.add_all(&self.values);
            *self = other;
        } else {
            self.add_all(&other.values);
        }
    }
}

impl<T> From<Vec<T>> for Dense<T> {
    fn from(values: Vec<T>) -> Self {
        Dense { values }
    }
}

impl<T> Deref for Dense<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.values
    }
}

impl<T> DerefMut for Dense<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.values
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_merge_element_by_element_and_the_empty_one_is_zeros() {
        let mut sums = Dense::<f64>::default();
        sums.combine(Dense::from(vec![1.5, 2.0]));
        sums.combine(Dense::from(vec![0.5, 1.0, 4.0]));
        sums.combine(Dense::default());
        assert_eq!(&*sums, &[2.0, 3.0, 4.0]);
        let mut grown = Dense::<u32>::default();
        grown.add(3, 2);
        assert_eq!(grown.into_vec(), [0, 0, 0, 2]);
    }

    #[test]
    fn an_array_travels_as_its_numbers() {
        let counts = Dense::from(vec![0u64, 7, 300]);
        let bytes = postcard::to_allocvec(&counts).unwrap();
        assert_eq!(bytes, postcard::to_allocvec(&vec![0u64, 7, 300]).unwrap());
        assert_eq!(postcard::from_bytes::<Dense<u64>>(&bytes).unwrap(), counts);
    }
}
