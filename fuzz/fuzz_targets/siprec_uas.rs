#![no_main]
//! Fuzzes the SIPREC user-agent server: the input is a sequence of messages (separated
//! by a `0xff` byte) fed as UDP datagrams and as TCP stream bytes, with a shell that binds
//! ports for every media request and timeouts in between. Checks that outputs stay
//! bounded and every `MediaRequest` is answered by `Opened`/`StreamsChanged` or `Ended`.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use vcontap_siprec::answer::{Bound, MAX_KEY_MATERIAL};
use vcontap_siprec::uas::{Config, Event, Peer, Transport, Uas};
use vcontap_wire::Timestamp;

fn drain(uas: &mut Uas, now: Timestamp) {
    for _ in 0..64 {
        let mut any = false;
        while let Some(t) = uas.poll_transmit() {
            assert!(t.bytes.len() < 64 * 1024);
            any = true;
        }
        while let Some(e) = uas.poll_event() {
            any = true;
            if let Event::MediaRequest { rs, plans, existing } = e {
                let bound = plans
                    .iter()
                    .zip(&existing)
                    .enumerate()
                    .map(|(i, (p, e))| {
                        e.or_else(|| {
                            p.accepted().then(|| Bound {
                                port: 40000 + 2 * i as u16,
                                key: [1; MAX_KEY_MATERIAL],
                            })
                        })
                    })
                    .collect();
                let _used = uas.media_ready(now, rs, bound);
            }
        }
        if !any {
            return;
        }
    }
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let mut cfg = Config::new(
        "192.0.2.2".parse().unwrap(),
        "<sip:srs@192.0.2.2>".into(),
        "192.0.2.2:5060".into(),
        1,
    );
    cfg.max_sessions = 4;
    let mut uas = Uas::new(cfg);
    let udp = Peer {
        transport: Transport::Udp,
        addr: SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 5070)),
        conn: 0,
    };
    let tcp = Peer {
        transport: Transport::Tcp,
        conn: 9,
        ..udp
    };
    let mut now = Timestamp(1_000_000_000);
    for (i, msg) in data.split(|&b| b == 0xff).enumerate().take(64) {
        uas.handle_datagram(now, udp, msg);
        drain(&mut uas, now);
        uas.handle_stream(now, tcp, msg);
        drain(&mut uas, now);
        now = now.add_millis(if i % 3 == 0 { 600 } else { 40_000 });
        if let Some(t) = uas.poll_timeout() {
            assert!(t >= Timestamp(0));
        }
        uas.handle_timeout(now);
        drain(&mut uas, now);
        assert!(uas.sessions() <= 4);
    }
    uas.set_draining(true);
    uas.handle_timeout(now.add_millis(3_600_000));
    drain(&mut uas, now);
});
