//! Throughput of each format-2 stage on one core, over the files of a
//! directory: `cargo run --release --example chunk_throughput -- DIR`.
//! Figures for the design of the snapshot pipeline (docs/BENCH.md); not a
//! test. Each stage's time is measured alone, on the same chunks.

use std::time::{Duration, Instant};

use coffer::chunks::ChunkKeys;
use coffer::chunks::cut::{Chunker, DEFAULT_PARAMS};
use coffer::chunks::pack::{BlobType, PackWriter};
use coffer::crypto::MasterKey;
use sha2::{Digest, Sha256};

fn main() {
    let dir = std::env::args()
        .nth(1)
        .expect("usage: chunk_throughput DIR");
    let keys = ChunkKeys::derive(&MasterKey::generate(), "00000000000000000000000000000000");
    let (mut t_read, mut t_cut, mut t_scan, mut t_id, mut t_sha, mut t_pack) = (
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
        Duration::ZERO,
    );
    let (mut bytes, mut chunks, mut files, mut stored) = (0u64, 0u64, 0u64, 0u64);
    let mut pack = PackWriter::new(&keys, 3);
    for e in walkdir::WalkDir::new(&dir)
        .into_iter()
        .filter_map(Result::ok)
    {
        if !e.file_type().is_file() {
            continue;
        }
        let t = Instant::now();
        let data = std::fs::read(e.path()).expect("read");
        t_read += t.elapsed();
        files += 1;
        bytes += data.len() as u64;
        let t = Instant::now();
        let mut sha = Sha256::new();
        sha.update(&data);
        let _ = sha.finalize();
        t_sha += t.elapsed();
        let t = Instant::now();
        let cut: Vec<bytes::Bytes> =
            Chunker::new(data.as_slice(), &DEFAULT_PARAMS, keys.chunker_seed)
                .expect("params")
                .collect::<Result<_, _>>()
                .expect("chunk");
        t_cut += t.elapsed();
        // The same cut points found in place, without copying chunks out.
        let t = Instant::now();
        let n = fastcdc::v2020::FastCDC::with_level_and_seed(
            &data,
            DEFAULT_PARAMS.min as usize,
            DEFAULT_PARAMS.avg as usize,
            DEFAULT_PARAMS.max as usize,
            fastcdc::v2020::Normalization::Level1,
            keys.chunker_seed,
        )
        .count();
        t_scan += t.elapsed();
        assert_eq!(n, cut.len());
        for c in cut {
            chunks += 1;
            let t = Instant::now();
            let id = keys.id_of(&c);
            t_id += t.elapsed();
            let t = Instant::now();
            pack.add(id, BlobType::Data, &c);
            if pack.len() >= coffer::chunks::pack::PACK_TARGET {
                let p = std::mem::replace(&mut pack, PackWriter::new(&keys, 3)).finish();
                stored += p.bytes.len() as u64;
            }
            t_pack += t.elapsed();
        }
    }
    stored += pack.finish().bytes.len() as u64;
    let mbs = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    println!(
        "{files} files, {:.1} MB, {chunks} chunks (avg {:.0} KiB), stored {:.1} MB ({:.1} %)",
        bytes as f64 / 1e6,
        bytes as f64 / chunks.max(1) as f64 / 1024.0,
        stored as f64 / 1e6,
        100.0 * stored as f64 / bytes.max(1) as f64
    );
    println!("read (page cache)       {:8.0} MB/s", mbs(t_read));
    println!("SHA-256 of files        {:8.0} MB/s", mbs(t_sha));
    println!("FastCDC cut (Chunker)   {:8.0} MB/s", mbs(t_cut));
    println!("FastCDC scan in place   {:8.0} MB/s", mbs(t_scan));
    println!("HMAC-SHA256 chunk ids   {:8.0} MB/s", mbs(t_id));
    println!(
        "packs (zstd/raw, AES-GCM, SHA-256 name) {:8.0} MB/s",
        mbs(t_pack)
    );
    let all = t_sha + t_cut + t_id + t_pack;
    println!("all CPU stages, 1 core  {:8.0} MB/s", mbs(all));
    // The sealing alone, on incompressible 1 MiB buffers.
    use aes_gcm::aead::Aead;
    use aes_gcm::{Aes256Gcm, KeyInit, Nonce};
    let c = Aes256Gcm::new_from_slice(&[1u8; 32]).unwrap();
    let buf: Vec<u8> = (0..1 << 20)
        .map(|i: u32| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let t = Instant::now();
    for i in 0..512u64 {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&i.to_be_bytes());
        let _ = c.encrypt(&Nonce::from(n), buf.as_slice()).unwrap();
    }
    println!(
        "AES-256-GCM alone       {:8.0} MB/s",
        512.0 * 1.048576 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    for _ in 0..64 {
        let _ = zstd::bulk::compress(&buf, 3).unwrap();
    }
    println!(
        "zstd-3 on noise alone   {:8.0} MB/s",
        64.0 * 1.048576 / t.elapsed().as_secs_f64()
    );
}
