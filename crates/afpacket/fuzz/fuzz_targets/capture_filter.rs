//! Fuzz target: the capture filter's expression parser and its frame parser. Layout: byte 0
//! picks the link type, then a filter expression up to the first NUL, then the frame.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vcontap_afpacket::Filter;
use vcontap_wire::LinkType;

const LINKS: [LinkType; 5] = [
    LinkType::ETHERNET,
    LinkType::LINUX_SLL,
    LinkType::LINUX_SLL2,
    LinkType::RAW,
    LinkType(147),
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let link = LINKS[usize::from(pick) % LINKS.len()];
    let (expr, frame) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let Ok(text) = std::str::from_utf8(expr) else {
        return;
    };
    if let Ok(f) = Filter::parse(text) {
        let _ = f.matches(link, frame);
    }
    // Always also run the frame parser with a filter that reads every field.
    let all = Filter::parse("port 1 or net ::/0 or net 0.0.0.0/0 or vlan 1 or udp").unwrap();
    let _ = all.matches(link, frame);
});
