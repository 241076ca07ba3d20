//! placeholder
pub mod cli;
pub mod matmul;
pub mod npy;
pub mod wordcount;
pub mod words;
