//! Every vendor message in ../shared/siprec, in CRLF and bare-LF-body variants.

use crate::body;
use crate::mapping::{map_streams, MapSource, StreamMap};
use crate::metadata::{self, Metadata};
use crate::testdata::{vendor, vendor_messages, vendor_names, Body};
use vcontap_sip::{sdp, Message};

/// One request of a vendor file: its metadata (if any) and its SDP labels.
#[derive(Debug)]
struct Seen {
    method: String,
    md: Option<Metadata>,
    labels: Vec<Option<String>>,
    maps: Vec<StreamMap>,
}

fn requests(name: &str, nl: Body) -> Option<Vec<Seen>> {
    let msgs = vendor_messages(name, nl)?;
    let mut out = Vec::new();
    for raw in &msgs {
        let msg = Message::parse(raw).expect("vendor message parses");
        if !msg.is_request() {
            continue;
        }
        let parts = body::split(
            msg.header("Content-Type"),
            msg.header("Content-Disposition"),
            msg.body(),
        )
        .expect("vendor body splits");
        let md = parts.metadata.and_then(|m| metadata::parse(m).ok());
        let labels: Vec<Option<String>> = parts
            .sdp
            .and_then(|s| sdp::parse(s).ok())
            .map(|s| s.media.iter().map(|m| m.label.map(str::to_owned)).collect())
            .unwrap_or_default();
        let lref: Vec<Option<&str>> = labels.iter().map(|l| l.as_deref()).collect();
        let maps = map_streams(md.as_ref(), &lref);
        out.push(Seen {
            method: msg
                .method()
                .map(|m| m.as_str().to_owned())
                .unwrap_or_default(),
            md,
            labels,
            maps,
        });
    }
    Some(out)
}

/// The first request with metadata, in both line-ending variants (which must agree).
fn first_with_md(name: &str) -> Option<Seen> {
    let crlf = requests(name, Body::Crlf)?;
    let lf = requests(name, Body::BareLf)?;
    assert_eq!(
        crlf.len(),
        lf.len(),
        "{name}: same requests in both variants"
    );
    for (a, b) in crlf.iter().zip(&lf) {
        // Raw extensions are kept byte for byte, so only they may differ (by CRs).
        let norm = |m: &Option<Metadata>| {
            m.clone().map(|mut m| {
                for e in &mut m.extensions {
                    e.raw.retain(|c| c != '\r');
                }
                m
            })
        };
        assert_eq!(
            norm(&a.md),
            norm(&b.md),
            "{name}: metadata independent of line endings"
        );
        assert_eq!(
            a.labels, b.labels,
            "{name}: labels independent of line endings"
        );
        assert_eq!(a.maps, b.maps, "{name}");
    }
    crlf.into_iter().find(|s| s.md.is_some())
}

fn aors(md: &Metadata) -> Vec<&str> {
    md.participants
        .iter()
        .map(|p| p.aor.as_deref().unwrap_or(""))
        .collect()
}

fn senders(s: &Seen) -> Vec<(Option<&str>, Vec<&str>, MapSource)> {
    let md = s.md.as_ref().unwrap();
    s.maps
        .iter()
        .map(|m| {
            let who = m
                .senders
                .iter()
                .map(|&i| md.participants[i].aor.as_deref().unwrap_or(""))
                .collect();
            (m.label.as_deref(), who, m.source)
        })
        .collect()
}

#[test]
fn every_vendor_file_parses_in_both_variants() {
    let names = vendor_names();
    if names.is_empty() {
        return;
    }
    assert_eq!(names.len(), 20, "new vendor files need assertions here");
    for name in &names {
        for nl in [Body::Crlf, Body::BareLf] {
            let seen = requests(name, nl).unwrap();
            let is_xml_only = name.starts_with("netsapiens");
            assert_eq!(seen.is_empty(), is_xml_only, "{name}");
            for s in &seen {
                if let Some(md) = &s.md {
                    // Only the mangled BroadWorks fixture is empty; nothing is malformed.
                    assert!(!md.malformed, "{name}");
                    if *name != "broadworks-1" {
                        assert!(!md.participants.is_empty(), "{name}");
                    }
                }
            }
        }
    }
}

#[test]
fn oracle_draft_inline_send_and_apkt_hints() {
    let Some(s) = first_with_md("oracle-acme-1") else {
        return;
    };
    let md = s.md.as_ref().unwrap();
    assert_eq!(md.dialect, metadata::Dialect::Draft);
    assert_eq!(
        md.namespace.as_deref(),
        Some("urn:ietf:params:xml:ns:recording")
    );
    assert_eq!(
        aors(md),
        ["sip:9000@192.168.50.102", "sip:1002@192.168.50.10"]
    );
    assert_eq!(md.participants[0].calling, Some(true));
    assert_eq!(md.participants[1].calling, Some(false));
    assert_eq!(md.sessions[0].id, "AavRXwIIQj1Q39eJulTipQ==");
    assert_eq!(
        md.sessions[0].start_time.as_deref(),
        Some("2019-03-09T16:50:20")
    );
    assert_eq!(md.streams[1].mode.as_deref(), Some("separate"));
    assert_eq!(
        senders(&s),
        [
            (
                Some("16777227"),
                vec!["sip:9000@192.168.50.102"],
                MapSource::InlineSend
            ),
            (
                Some("16777228"),
                vec!["sip:1002@192.168.50.10"],
                MapSource::InlineSend
            ),
        ]
    );
    assert!(md
        .extensions
        .iter()
        .all(|e| e.raw.contains("apkt:callingParty")));
    let Some(s) = first_with_md("oracle-acme-2") else {
        return;
    };
    let md = s.md.as_ref().unwrap();
    assert!(md
        .vendor_ids
        .contains(&("ucid".into(), "00FA081003B9CF5E7DF7E5;encoding=hex".into())));
    assert_eq!(s.maps[0].source, MapSource::InlineSend);
    assert_eq!(s.maps[0].senders, [0]);
}

#[test]
fn cisco_cube_three_parts_assoc() {
    let Some(s) = first_with_md("cisco-cube-1") else {
        return;
    };
    let md = s.md.as_ref().unwrap();
    assert_eq!(md.dialect, metadata::Dialect::Rfc7865);
    assert_eq!(
        md.sessions[0].sip_session_ids,
        ["e9fffff2020a598b86962867715db0cf;remote=cd0f7093d62c5f0697098fd69a4aa57b"]
    );
    assert_eq!(md.participants[1].name.as_deref(), Some("7300"));
    assert_eq!(md.participants[0].recv, ["kQOH5VdEEeeJ/dD/VsPGWA=="]);
    assert_eq!(
        senders(&s),
        [
            (Some("1"), vec!["sip:7301@35.162.237.204"], MapSource::Assoc),
            (Some("2"), vec!["sip:7300@35.162.237.204"], MapSource::Assoc),
        ]
    );
}

#[test]
fn ribbon_prefixed_namespace_crossed_assoc_and_calldata() {
    let Some(s) = first_with_md("ribbon-sonus-1") else {
        return;
    };
    let md = s.md.as_ref().unwrap();
    assert_eq!(
        md.namespace.as_deref(),
        Some("urn:ietf:params:xml:ns:recording")
    );
    assert_eq!(
        aors(md),
        ["2249888500@172.16.198.55", "2249888012@172.16.195.72"]
    );
    // A name of a single space is no name.
    assert_eq!(md.participants[1].name, None);
    assert_eq!(md.groups[0].id, "MTQ3YzA3YzAtNjdkNy0xMA==");
    assert_eq!(
        md.sessions[0].group_ref.as_deref(),
        Some("MTQ3YzA3YzAtNjdkNy0xMA==")
    );
    // Label 1 carries the second participant: the association, not the order, decides.
    assert_eq!(
        senders(&s),
        [
            (
                Some("1"),
                vec!["2249888012@172.16.195.72"],
                MapSource::Assoc
            ),
            (
                Some("2"),
                vec!["2249888500@172.16.198.55"],
                MapSource::Assoc
            ),
        ]
    );
    let cd = md.extensions.iter().find(|e| e.name == "callData").unwrap();
    assert_eq!(cd.parent, "group");
    assert_eq!(cd.owner.as_deref(), Some("MTQ3YzA3YzAtNjdkNy0xMA=="));
    assert!(cd.raw.starts_with("<callData") && cd.raw.ends_with("</callData>"));
    assert!(
        cd.raw.contains("&lt;sip:2249888500@172.16.198.55&gt;"),
        "raw stays escaped"
    );
    assert!(md.vendor_ids.contains(&("gcid".into(), "241205267".into())));
}

#[test]
fn avaya_dummy_participant_and_camelcase_datamode() {
    let Some(s) = first_with_md("avaya-sbce-1") else {
        return;
    };
    let md = s.md.as_ref().unwrap();
    assert_eq!(md.datamode, Some(metadata::DataMode::Complete));
    assert_eq!(
        aors(md),
        ["sip:9878942259@212.188.68.145", "sip:ASBCE@asbce.com"]
    );
    assert_eq!(s.labels, [Some("10".into()), Some("20".into())]);
    assert_eq!(s.maps[0].senders, [0]);
    assert_eq!(s.maps[1].senders, [1]);
    assert_eq!(s.maps[1].source, MapSource::Assoc);
}

#[test]
fn opensips_no_assoc_falls_back_to_labels() {
    for name in ["opensips-1", "opensips-2", "opensips-3"] {
        let Some(s) = first_with_md(name) else { return };
        let md = s.md.as_ref().unwrap();
        assert!(md.participants.iter().all(|p| p.send.is_empty()));
        assert_eq!(
            senders(&s),
            [
                (
                    Some("1"),
                    vec!["sip:0771121212@52.57.92.239"],
                    MapSource::Label
                ),
                (
                    Some("2"),
                    vec!["sip:0760516936@sip-cust1.connectel.io"],
                    MapSource::Label
                ),
            ],
            "{name}"
        );
        assert_eq!(
            md.sessions[0].sip_session_ids,
            ["2d8abbf0769c66e15bb349f509693d60@52.57.92.239"]
        );
    }
}

#[test]
fn sems_string_labels_and_bare_metadata_type() {
    let Some(s) = first_with_md("sems-1") else {
        return;
    };
    let md = s.md.as_ref().unwrap();
    assert_eq!(
        md.participants[1].aor.as_deref(),
        Some("Extension-016190619@speechpath.ie")
    );
    assert_eq!(
        senders(&s),
        [
            (
                Some("a_leg"),
                vec!["sip:016190200@87.252.209.116"],
                MapSource::Assoc
            ),
            (
                Some("b_leg"),
                vec!["Extension-016190619@speechpath.ie"],
                MapSource::Assoc
            ),
        ]
    );
}

#[test]
fn intrado_full_invite_mixed_single_stream_with_role() {
    let Some(s) = first_with_md("intrado-asterisk-1") else {
        return;
    };
    let md = s.md.as_ref().unwrap();
    assert_eq!(aors(md), ["4058327108@10.105.190.136:5060"]);
    assert_eq!(md.participants[0].calling, Some(true));
    assert_eq!(md.participants[0].name, None);
    assert_eq!(md.groups[0].id, "ZWIxYWRkOTAtYjg4Ny00ZWVhLWFjYWMtZWRl");
    assert_eq!(s.maps[0].senders, [0]);
    assert_eq!(s.maps[0].source, MapSource::Assoc);
    let ch = md.extensions.iter().find(|e| e.name == "channel").unwrap();
    assert_eq!(ch.raw, "<channel>SIP/911202-073e</channel>");
}

#[test]
fn metaswitch_draft_ids_and_mixed_stream() {
    for name in ["metaswitch-1", "metaswitch-2"] {
        let Some(s) = first_with_md(name) else { return };
        let md = s.md.as_ref().unwrap();
        assert_eq!(md.dialect, metadata::Dialect::Draft, "{name}");
        assert_eq!(aors(md), ["7602922411", "7602922410"]);
        // Duplicated <send> lines collapse.
        assert_eq!(md.participants[0].send.len(), 1);
        assert_eq!(s.maps.len(), 1);
        assert_eq!(
            s.maps[0].senders,
            [0, 1],
            "{name}: both parties in the mixed stream"
        );
        assert!(md
            .extensions
            .iter()
            .any(|e| e.raw.contains("<metaswitchRecordingMetadata>")));
        assert!(md.recording_id.is_some());
    }
}

#[test]
fn broadworks_and_webex_root_aor_and_nested_send_ids() {
    let Some(s) = first_with_md("broadworks-2") else {
        return;
    };
    let md = s.md.as_ref().unwrap();
    assert_eq!(md.dialect, metadata::Dialect::BroadWorks);
    assert_eq!(
        md.namespace.as_deref(),
        Some("urn:ietf:params:xml:ns:siprec")
    );
    assert_eq!(
        aors(md),
        [
            "sip:8638254725",
            "sip:+19015783200@broadcore.com;user=phone"
        ]
    );
    assert_eq!(md.streams[0].mode.as_deref(), Some("mixed"));
    assert_eq!(s.maps[0].senders, [0, 1]);
    assert!(md.vendor_ids.iter().any(|(k, _)| k == "extTrackingID"));
    assert!(md
        .vendor_ids
        .contains(&("callType".into(), "termCall".into())));

    let Some(s) = first_with_md("cisco-webex-1") else {
        return;
    };
    let md = s.md.as_ref().unwrap();
    assert_eq!(
        md.recording_id.as_deref(),
        Some("urn:uuid:03dd5b5d-6217-425a-ab0d-d04261388c36")
    );
    assert_eq!(
        md.participants[0].send,
        ["urn:uuid:b0bf3143-f601-45b7-a2ef-b7db0f96e534"]
    );
    assert_eq!(
        md.participants[0].send_source,
        Some(metadata::SendSource::Inline)
    );
    assert_eq!(
        md.sessions[0].group_ref.as_deref(),
        Some("urn:uuid:31da9b20-3e4f-4d3e-a11a-bcaeef61e38f")
    );
    assert_eq!(s.maps[0].senders, [0, 1]);
    assert!(md.vendor_ids.contains(&(
        "extTrackingID".into(),
        "45a32b36-2a6a-4ec1-9cf3-47824099fcd4".into()
    )));

    // The conference: a later UPDATE adds a participant.
    let Some(all) = requests("cisco-webex-2", Body::Crlf) else {
        return;
    };
    let counts: Vec<usize> = all
        .iter()
        .filter_map(|s| s.md.as_ref().map(|m| m.participants.len()))
        .collect();
    assert_eq!(counts.first(), Some(&2));
    assert_eq!(counts.iter().max(), Some(&4));
    assert!(all
        .iter()
        .any(|s| s.method == "UPDATE" && s.md.is_some() && s.labels.is_empty()));
}

#[test]
fn broadworks_mangled_body_is_survivable() {
    let Some(s) = first_with_md("broadworks-1") else {
        return;
    };
    let md = s.md.as_ref().unwrap();
    assert_eq!(md.dialect, metadata::Dialect::BroadWorks);
    assert!(md.participants.is_empty());
    assert_eq!(s.labels, [Some("1".into())]);
    assert_eq!(s.maps[0].source, MapSource::Unmapped);
}

#[test]
fn netsapiens_metadata_only_documents() {
    let Some(doc) = vendor("netsapiens-1") else {
        return;
    };
    let md = metadata::parse(doc.trim().as_bytes()).unwrap();
    assert_eq!(md.participants[0].id, "1003@dwang.netsapiens.com");
    assert_eq!(md.participants[0].name.as_deref(), Some("Luke Skywalker"));
    assert_eq!(
        md.participants[1].aor.as_deref(),
        Some("sip:1001w@dwang.netsapiens.com")
    );
    assert_eq!(md.groups[0].id, "d9836b259df931287df49822bd3a5e16");
    assert_eq!(md.streams.len(), 2);
    assert!(md.vendor_ids.contains(&("groupSeq".into(), "0".into())));
    assert_eq!(md.extensions[0].name, "netsapiensExtension");
    let maps = map_streams(Some(&md), &[Some("1"), Some("2")]);
    assert_eq!(maps[0].senders, [0]);
    assert_eq!(maps[0].source, MapSource::Label);
    let Some(doc) = vendor("netsapiens-2") else {
        return;
    };
    let md = metadata::parse(doc.trim().as_bytes()).unwrap();
    assert!(md.streams.is_empty());
    assert_eq!(md.participants.len(), 2);
    assert_eq!(md.sessions[0].id, "20260722210808064141");
    // No streams in the metadata: SDP order decides.
    let maps = map_streams(Some(&md), &[None, None]);
    assert_eq!(
        (maps[1].senders.clone(), maps[1].source),
        (vec![1], MapSource::SdpOrder)
    );
}

#[test]
fn non_siprec_cisco_dialects_have_no_metadata() {
    for name in ["cisco-cube-nbr-1", "cisco-cucm-bib-1"] {
        let Some(seen) = requests(name, Body::Crlf) else {
            return;
        };
        assert!(seen.iter().all(|s| s.md.is_none()), "{name}");
        assert!(seen
            .iter()
            .all(|s| s.maps.iter().all(|m| m.source == MapSource::Unmapped)));
    }
}
