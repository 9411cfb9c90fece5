#![no_main]
//! Fuzzes SIPREC body splitting, rs-metadata parsing, partial/complete merging and the
//! stream mapping chain. Seeds: the metadata parts of ../shared/siprec (extract at fuzz
//! time; never commit them).

use vcontap_siprec::{body, mapping, metadata};

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    // The first line, if short, is taken as a Content-Type for the body splitter.
    let (ct, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(i) if i < 200 => (std::str::from_utf8(&data[..i]).ok(), &data[i + 1..]),
        _ => (None, data),
    };
    if let Ok(parts) = body::split(ct, None, rest) {
        for p in [parts.sdp, parts.metadata].into_iter().flatten() {
            // Parts are sub-slices of the input, never copies.
            let r = rest.as_ptr_range();
            assert!(p.is_empty() || r.contains(&p.as_ptr()));
        }
    }
    let Ok(md) = metadata::parse(data) else {
        return;
    };
    assert!(md.participants.len() <= metadata::MAX_OBJECTS);
    assert!(md.streams.len() <= metadata::MAX_OBJECTS);
    assert!(md.extensions.len() <= metadata::MAX_OBJECTS);
    for p in &md.participants {
        assert!(p.aor.as_ref().is_none_or(|a| a.len() <= metadata::MAX_TEXT));
    }
    let labels: Vec<Option<&str>> = md
        .streams
        .iter()
        .map(|s| s.label.as_deref())
        .chain([None, Some("1"), Some("2")])
        .collect();
    for n in [0, 1, 2, labels.len()] {
        for m in mapping::map_streams(Some(&md), &labels[..n.min(labels.len())]) {
            assert!(m.senders.iter().all(|&i| i < md.participants.len()));
        }
    }
    let mut state = md.clone();
    let _ = state.apply(md.clone());
    let mut partial = md;
    partial.datamode = Some(metadata::DataMode::Partial);
    let _ = state.apply(partial);
    assert!(state.participants.len() <= metadata::MAX_OBJECTS);
});
