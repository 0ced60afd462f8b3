//! Cutting content into chunks (docs/FORMAT.md section 17.2): FastCDC 2020
//! with the repository's parameters and keyed gear table. Chunks come out
//! one at a time, so memory holds at most one maximum-size chunk whatever
//! the size of a file or dump.

use std::borrow::Cow;
use std::io::{self, Read};

use bytes::{Bytes, BytesMut};
use fastcdc::v2020::Normalization;
use serde::{Deserialize, Serialize};

/// `config`'s `chunker` (section 16.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkerParams {
    pub algorithm: Algorithm,
    pub min: u32,
    pub avg: u32,
    pub max: u32,
    pub normalization: u8,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "fastcdc-2020")]
    FastCdc2020,
}

/// restic's sizes (section 17.2, tentative until measured).
pub const DEFAULT_PARAMS: ChunkerParams = ChunkerParams {
    algorithm: Algorithm::FastCdc2020,
    min: 512 * 1024,
    avg: 1024 * 1024,
    max: 8 * 1024 * 1024,
    normalization: 1,
};

/// Why a `chunker` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "chunker parameters min {min}, avg {avg}, max {max}, normalization {normalization} are outside what FastCDC 2020 allows (min 64..=1048576, avg 256..=4194304, max 1024..=16777216, min <= avg <= max, all even; normalization 0..=3)"
)]
pub struct BadParams {
    min: u32,
    avg: u32,
    max: u32,
    normalization: u8,
}

impl ChunkerParams {
    /// Refuses what the crate would refuse (it only asserts in debug
    /// builds): a repository's `config` is read from the store.
    pub fn check(&self) -> Result<(), BadParams> {
        use fastcdc::v2020::*;
        let (min, avg, max) = (self.min as usize, self.avg as usize, self.max as usize);
        let ok = (MINIMUM_MIN..=MINIMUM_MAX).contains(&min)
            && (AVERAGE_MIN..=AVERAGE_MAX).contains(&avg)
            && (MAXIMUM_MIN..=MAXIMUM_MAX).contains(&max)
            && min <= avg
            && avg <= max
            && [min, avg, max].iter().all(|v| v % 2 == 0)
            && self.normalization <= 3;
        if ok {
            Ok(())
        } else {
            Err(BadParams {
                min: self.min,
                avg: self.avg,
                max: self.max,
                normalization: self.normalization,
            })
        }
    }

    fn level(&self) -> Normalization {
        match self.normalization {
            0 => Normalization::Level0,
            1 => Normalization::Level1,
            2 => Normalization::Level2,
            _ => Normalization::Level3,
        }
    }
}

/// How much a refill reads at once: the copy of what is left over (less
/// than one maximum chunk) is then spread over this many new bytes.
const READ_AHEAD_CHUNKS: usize = 2;

/// Bytes asked of the source per read.
const READ_SIZE: usize = 256 * 1024;

/// The chunks of `source`, in order, each as its plaintext bytes.
///
/// Cut points are found in place in a read-ahead buffer and chunks are
/// split off it without copying (the crate's `StreamCDC` copies the whole
/// remaining buffer after every chunk, and ran at a quarter of the speed of
/// the scan itself on the bench corpus: docs/BENCH.md).
pub struct Chunker<R: Read> {
    source: R,
    buf: BytesMut,
    eof: bool,
    cutter: Cutter,
}

/// Where the next chunk of a buffer ends: the cut point search alone, for
/// callers that push bytes (a file list being written) rather than pull.
pub struct Cutter {
    min: usize,
    avg: usize,
    max: usize,
    masks: (u64, u64),
    gear: (Cow<'static, [u64]>, Cow<'static, [u64]>),
}

impl Cutter {
    pub fn new(params: &ChunkerParams, seed: u64) -> Result<Self, BadParams> {
        params.check()?;
        Ok(Cutter {
            min: params.min as usize,
            avg: params.avg as usize,
            max: params.max as usize,
            masks: fastcdc::v2020::select_masks(params.avg as usize, params.level()),
            gear: fastcdc::v2020::get_gear_with_seed(seed),
        })
    }

    /// The largest chunk this cutter makes.
    pub fn max(&self) -> usize {
        self.max
    }

    /// The length of the chunk at the start of `buf`. Only final when
    /// `buf` holds at least [`Cutter::max`] bytes or all that is left.
    pub fn cut(&self, buf: &[u8]) -> usize {
        let (mask_s, mask_l) = self.masks;
        let (_, end) = fastcdc::v2020::cut_gear(
            buf,
            self.min,
            self.avg,
            self.max,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
            &self.gear.0,
            &self.gear.1,
        );
        end.max(1).min(buf.len())
    }
}

impl<R: Read> Chunker<R> {
    pub fn new(source: R, params: &ChunkerParams, seed: u64) -> Result<Self, BadParams> {
        Ok(Chunker {
            source,
            buf: BytesMut::new(),
            eof: false,
            cutter: Cutter::new(params, seed)?,
        })
    }

    /// Reads until the buffer holds a maximum chunk, or the source ends.
    fn fill(&mut self) -> io::Result<()> {
        let max = self.cutter.max;
        if self.eof || self.buf.len() >= max {
            return Ok(());
        }
        while !self.eof && self.buf.len() < max * READ_AHEAD_CHUNKS {
            let at = self.buf.len();
            // Reads of a bounded size: each is zero-filled first, and a
            // small file must not cost a buffer of the maximum chunk size.
            self.buf.resize(at + READ_SIZE, 0);
            match self.source.read(&mut self.buf[at..]) {
                Ok(0) => {
                    self.buf.truncate(at);
                    self.eof = true;
                }
                Ok(n) => self.buf.truncate(at + n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => self.buf.truncate(at),
                Err(e) => {
                    self.buf.truncate(at);
                    return Err(e);
                }
            }
        }
        Ok(())
    }
}

impl<R: Read> Iterator for Chunker<R> {
    type Item = io::Result<Bytes>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Err(e) = self.fill() {
            return Some(Err(e));
        }
        if self.buf.is_empty() {
            return None;
        }
        let end = self.cutter.cut(&self.buf);
        Some(Ok(self.buf.split_to(end).freeze()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::tests::noise as pseudo_random;

    fn cut(data: &[u8], seed: u64) -> Vec<Vec<u8>> {
        Chunker::new(data, &DEFAULT_PARAMS, seed)
            .unwrap()
            .map(|c| c.map(|b| b.to_vec()))
            .collect::<io::Result<_>>()
            .unwrap()
    }

    /// The same cut points as the crate's own chunker over the whole input,
    /// however the source hands out its bytes.
    #[test]
    fn cut_points_match_the_crate_whatever_the_reads() {
        struct Dribble<'a>(&'a [u8], usize);
        impl Read for Dribble<'_> {
            fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
                let n = self.1.min(b.len()).min(self.0.len());
                b[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let data = pseudo_random(30 << 20, 4);
        let want: Vec<usize> = fastcdc::v2020::FastCDC::with_level_and_seed(
            &data,
            DEFAULT_PARAMS.min as usize,
            DEFAULT_PARAMS.avg as usize,
            DEFAULT_PARAMS.max as usize,
            Normalization::Level1,
            77,
        )
        .map(|c| c.length)
        .collect();
        for step in [1 << 20, 65_537, 10 << 20] {
            let got: Vec<usize> = Chunker::new(Dribble(&data, step), &DEFAULT_PARAMS, 77)
                .unwrap()
                .map(|c| c.unwrap().len())
                .collect();
            assert_eq!(got, want, "reads of {step} bytes");
        }
    }

    #[test]
    fn chunks_rejoin_to_the_input_within_the_size_limits() {
        let data = pseudo_random(20 << 20, 1);
        let chunks = cut(&data, 42);
        assert_eq!(chunks.concat(), data);
        let (min, max) = (DEFAULT_PARAMS.min as usize, DEFAULT_PARAMS.max as usize);
        for c in &chunks[..chunks.len() - 1] {
            assert!((min..=max).contains(&c.len()), "chunk of {} bytes", c.len());
        }
        assert!(chunks.len() > 5, "20 MiB in {} chunks", chunks.len());
    }

    #[test]
    fn an_edit_in_the_middle_changes_only_the_chunks_around_it() {
        let data = pseudo_random(16 << 20, 2);
        let mut edited = data.clone();
        edited[8 << 20] ^= 0xff;
        let (a, b) = (cut(&data, 9), cut(&edited, 9));
        let shared = a.iter().filter(|c| b.contains(c)).count();
        assert!(
            shared + 2 >= a.len(),
            "only {shared} of {} chunks survived a one-byte edit",
            a.len()
        );
    }

    #[test]
    fn the_seed_moves_the_cut_points() {
        let data = pseudo_random(16 << 20, 3);
        let (a, b) = (cut(&data, 1), cut(&data, 2));
        assert_ne!(
            a.iter().map(Vec::len).collect::<Vec<_>>(),
            b.iter().map(Vec::len).collect::<Vec<_>>()
        );
    }

    #[test]
    fn empty_and_small_inputs() {
        assert!(cut(b"", 1).is_empty());
        assert_eq!(cut(b"tiny", 1), vec![b"tiny".to_vec()]);
    }

    #[test]
    fn parameters_from_a_store_are_checked() {
        let mut p = DEFAULT_PARAMS;
        p.max = 1 << 30;
        assert!(p.check().is_err());
        p = DEFAULT_PARAMS;
        p.min = p.avg * 2;
        assert!(p.check().is_err());
        assert!(DEFAULT_PARAMS.check().is_ok());
    }
}
