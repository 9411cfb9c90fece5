//! Benchmark-scale generation (>= 500 concurrent G.711 calls, >= 2 million packets). Ignored
//! by default because it is slow in debug builds; run with
//! `cargo test --release -p vcontap-synth --test scale -- --ignored --nocapture`.

use std::io::Write;
use std::time::Instant;

use vcontap_synth::{generate, SynthConfig};

/// Streams the pcap through a record parser that checks time order without keeping it.
struct OrderCheck {
    pending: Vec<u8>,
    header_seen: bool,
    records: u64,
    last: (u32, u32),
}

impl Write for OrderCheck {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.pending.extend_from_slice(data);
        let mut off = 0;
        if !self.header_seen && self.pending.len() >= 24 {
            off = 24;
            self.header_seen = true;
        }
        while self.header_seen && self.pending.len() >= off + 16 {
            let u = |o: usize| {
                u32::from_le_bytes(self.pending[off + o..off + o + 4].try_into().unwrap())
            };
            let (ts, len) = ((u(0), u(4)), u(8) as usize);
            if self.pending.len() < off + 16 + len {
                break;
            }
            assert!(
                ts >= self.last,
                "time went backwards at record {}",
                self.records
            );
            self.last = ts;
            self.records += 1;
            off += 16 + len;
        }
        self.pending.drain(..off);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
#[ignore = "benchmark scale; run in release"]
fn two_and_a_half_million_packets() {
    let cfg = SynthConfig {
        calls: 1250,
        concurrent: 500,
        seconds: 20.0,
        ..Default::default()
    };
    let mut check = OrderCheck {
        pending: Vec::new(),
        header_seen: false,
        records: 0,
        last: (0, 0),
    };
    let started = Instant::now();
    let summary = generate(&cfg, &mut check).unwrap();
    let elapsed = started.elapsed();
    println!(
        "{} packets ({} RTP) in {:.2?}: {:.0} packets/s",
        summary.packets,
        summary.rtp_packets,
        elapsed,
        summary.packets as f64 / elapsed.as_secs_f64()
    );
    assert_eq!(check.records, summary.packets);
    assert!(check.pending.is_empty());
    assert!(summary.packets >= 2_000_000);
    assert_eq!(summary.rtp_packets, 1250 * 2 * 1000);
}
