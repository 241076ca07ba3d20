//! How many lines of web-server logs have each status code, over the files
//! named on the command line: an everyday job written on coop's library, to
//! compare with `status_codes_rayon` (lines and speed, in BENCHMARKS).
use std::collections::BTreeMap;

use coop::prelude::*;

#[derive(serde::Serialize, serde::Deserialize)]
struct StatusCodes;

impl RecordJob for StatusCodes {
    const NAME: &'static str = "status-codes";
    type Partial = BTreeMap<u16, u64>;

    fn fold(&self, line: &[u8], counts: &mut BTreeMap<u16, u64>) -> Result<(), TaskError> {
        // `10.0.0.1 - - [...] "GET / HTTP/1.1" 200 512`: the status is second to last.
        let status = line
            .rsplit(|&b| b == b' ')
            .nth(1)
            .and_then(|s| std::str::from_utf8(s).ok());
        if let Some(status) = status.and_then(|s| s.parse().ok()) {
            *counts.entry(status).or_default() += 1;
        }
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    coop::init(&[coop::register::<StatusCodes>()])?;
    let input = Input::from_files(std::env::args().skip(1))?;
    for (status, lines) in Pool::new()?.run(&StatusCodes, &input)? {
        println!("{status}\t{lines}");
    }
    Ok(())
}
