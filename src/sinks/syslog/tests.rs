use super::*;

fn config(protocol: SyslogProtocol, max: usize) -> SyslogSinkConfig {
    SyslogSinkConfig {
        address: "127.0.0.1:1".into(),
        protocol,
        facility: 4,
        app_name: "scimtap".into(),
        hostname: Some("host1".into()),
        extra_roots: Vec::new(),
        tls_server_name: None,
        max_message_bytes: max,
        connect_timeout: Duration::from_secs(1),
    }
}

#[test]
fn messages_are_rfc5424_with_the_event_as_msg() {
    let w = SyslogWriter::new(&config(SyslogProtocol::Udp, 8192), Counter::default()).unwrap();
    let mut out = Vec::new();
    w.message(br#"{"outcome":"success"}"#, Severity::Info, &mut out);
    let text = String::from_utf8(out).unwrap();
    // auth (4) * 8 + informational (6) = 38.
    assert!(text.starts_with("<38>1 "), "{text}");
    assert!(text.contains(" host1 scimtap "), "{text}");
    assert!(
        text.ends_with(r#" audit - {"outcome":"success"}"#),
        "{text}"
    );
    // The severity comes from the record, whatever the line says (CEF, OCSF and ECS lines
    // have no `"outcome":"failure"` in them).
    let mut out = Vec::new();
    w.message(
        b"CEF:0|scimtap|scimtap|0.1.0|user.deactivate|...",
        Severity::Warning,
        &mut out,
    );
    assert!(out.starts_with(b"<36>1 "), "failures are warnings");
    let mut out = Vec::new();
    w.message(
        b"CEF:0|scimtap|scimtap|0.1.0|user.delete|...",
        Severity::Error,
        &mut out,
    );
    // auth (4) * 8 + error (3) = 35.
    assert!(out.starts_with(b"<35>1 "), "refused writes are errors");
    let mut out = Vec::new();
    w.message(br#"{"outcome":"failure"}"#, Severity::Info, &mut out);
    assert!(out.starts_with(b"<38>1 "), "the line is not searched");
}

#[test]
fn udp_datagrams_carry_one_event_each_and_oversized_events_are_counted_not_cut() {
    let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut cfg = config(SyslogProtocol::Udp, 600);
    cfg.address = receiver.local_addr().unwrap().to_string();
    let too_large = Counter::default();
    let mut w = SyslogWriter::new(&cfg, too_large.clone()).unwrap();
    use bytes::Bytes;
    let big = format!("{{\"x\":\"{}\"}}\n", "a".repeat(700));
    w.write_batch(&[
        Record::from(Bytes::from_static(b"{\"n\":1}\n")),
        Record::from(Bytes::from(big)),
        Record::from(Bytes::from_static(b"{\"n\":2}\n")),
    ])
    .unwrap();
    let mut buf = [0u8; 2048];
    for n in 1..=2 {
        let len = receiver.recv(&mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..len]).unwrap();
        assert!(text.ends_with(&format!("{{\"n\":{n}}}")), "{text}");
    }
    assert_eq!(too_large.get(), 1);
}
