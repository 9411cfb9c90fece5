//! Full BPF capture filters (`--filter` with the optional `pcap` feature): a tcpdump
//! expression compiled by libpcap into a classic BPF program, which the kernel runs on each
//! frame before it reaches the ring (`SO_ATTACH_FILTER`), so refused frames cost no ring
//! space and no copy.
//!
//! libpcap is the compiler because the expression language *is* libpcap's (every operator
//! knows it from tcpdump); writing a compiler for it is out of proportion. It is reached
//! through the `pcap` crate, on a dead handle (`pcap_open_dead`: nothing is captured with
//! libpcap; the AF_PACKET ring stays ours). The default build has no C dependency and uses the
//! user-space [`Filter`](crate::Filter) instead; without the feature [`compile`] refuses.
//!
//! The program is compiled for the bytes the socket's filter sees: the Ethernet frame on a
//! named interface (`SOCK_RAW`), the network-layer packet on `any` (`SOCK_DGRAM`, compiled
//! as raw IP). The kernel strips VLAN tags before the filter runs, so `vlan N` in a BPF
//! expression does not match on Linux; use the default build's user-space filter for VLANs.
//! The snap length is kept: every accepting `ret #k` returns at most the configured snaplen.

use crate::filter::FilterError;

/// Longest program the kernel accepts (`BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;
/// `BPF_RET | BPF_K`.
#[cfg_attr(not(feature = "pcap"), allow(dead_code))]
const BPF_RET_K: u16 = 0x06;

/// One classic BPF instruction (`struct sock_filter`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Constant operand.
    pub k: u32,
}

/// Compiles `expr` for a socket on `any` (raw IP) or a named Ethernet interface, capping
/// accepted frames at `snaplen` bytes.
#[cfg(feature = "pcap")]
pub fn compile(expr: &str, any: bool, snaplen: u32) -> Result<Vec<Insn>, FilterError> {
    // DLT_RAW is 12 in libpcap on Linux; DLT_EN10MB is 1.
    let link = pcap::Linktype(if any { 12 } else { 1 });
    let dead = pcap::Capture::dead(link).map_err(|e| FilterError(format!("libpcap: {e}")))?;
    let prog = dead
        .compile(expr, true)
        .map_err(|e| FilterError(format!("`{expr}`: {e}")))?;
    let insns = prog.get_instructions();
    if insns.is_empty() || insns.len() > MAX_INSNS {
        return Err(FilterError(format!(
            "`{expr}`: {} BPF instructions (1..={MAX_INSNS} accepted)",
            insns.len()
        )));
    }
    // The crate keeps the instruction's fields private; its Display is `code jt jf k`.
    insns
        .iter()
        .map(|i| parse_insn(&i.to_string()).map(|x| cap_snaplen(x, snaplen)))
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| FilterError(format!("`{expr}`: unexpected libpcap output")))
}

/// Without the `pcap` feature there is no BPF compiler.
#[cfg(not(feature = "pcap"))]
pub fn compile(expr: &str, _any: bool, _snaplen: u32) -> Result<Vec<Insn>, FilterError> {
    Err(FilterError(format!(
        "`{expr}`: BPF expressions need vcontap built with the `pcap` feature"
    )))
}

/// `code jt jf k` (decimal) as printed by the `pcap` crate.
#[cfg_attr(not(feature = "pcap"), allow(dead_code))]
fn parse_insn(s: &str) -> Option<Insn> {
    let mut it = s.split_whitespace();
    let insn = Insn {
        code: it.next()?.parse().ok()?,
        jt: it.next()?.parse().ok()?,
        jf: it.next()?.parse().ok()?,
        k: it.next()?.parse().ok()?,
    };
    it.next().is_none().then_some(insn)
}

/// An accepting return keeps at most `snaplen` bytes (libpcap returns its own, 65535 on a
/// dead handle, or 262144).
#[cfg_attr(not(feature = "pcap"), allow(dead_code))]
fn cap_snaplen(mut i: Insn, snaplen: u32) -> Insn {
    if i.code == BPF_RET_K && i.k != 0 {
        i.k = i.k.min(snaplen);
    }
    i
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instructions_parse_strictly() {
        assert_eq!(
            parse_insn("40 0 0 12"),
            Some(Insn {
                code: 40,
                jt: 0,
                jf: 0,
                k: 12
            })
        );
        for bad in [
            "",
            "40 0 0",
            "40 0 0 12 1",
            "x 0 0 1",
            "70000 0 0 1",
            "1 256 0 1",
            "1 0 0 -1",
        ] {
            assert_eq!(parse_insn(bad), None, "{bad}");
        }
    }

    #[test]
    fn accepting_returns_are_capped_at_the_snaplen() {
        let r = |k| Insn {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k,
        };
        assert_eq!(cap_snaplen(r(262_144), 1500).k, 1500);
        assert_eq!(cap_snaplen(r(0), 1500).k, 0);
        assert_eq!(cap_snaplen(r(100), 1500).k, 100);
    }

    #[cfg(feature = "pcap")]
    #[test]
    fn libpcap_compiles_for_ethernet_and_raw_ip() {
        let eth = compile("udp port 5060", false, 65535).unwrap();
        let raw = compile("udp port 5060", true, 65535).unwrap();
        assert!(eth.len() > 3 && raw.len() > 3);
        assert_ne!(eth, raw, "different link layers, different programs");
        // Ethernet: the first load is the EtherType at offset 12.
        assert_eq!((eth[0].code, eth[0].k), (0x28, 12));
        assert!(eth.iter().any(|i| i.code == BPF_RET_K && i.k == 65535));
        let capped = compile("ip", false, 200).unwrap();
        assert!(capped.iter().any(|i| i.code == BPF_RET_K && i.k == 200));
        for bad in ["port", "udp and and", "host 999.1.1.1", "portrange 9-"] {
            let e = compile(bad, false, 65535).unwrap_err();
            assert!(e.0.contains(bad), "{e}");
        }
    }
}
