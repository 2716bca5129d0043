use super::*;
use crate::sinks::RecordMeta;
use bytes::Bytes;

#[test]
fn murmur2_matches_the_java_clients_own_test_vectors() {
    // org.apache.kafka.common.utils.UtilsTest#testMurmur2.
    let cases: [(&[u8], i32); 6] = [
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (
            b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
            -58_897_971,
        ),
        (b"abc", 479_470_107),
    ];
    for (key, want) in cases {
        assert_eq!(murmur2(key), want, "{}", String::from_utf8_lossy(key));
    }
}

#[test]
fn partition_is_the_positive_hash_modulo_the_partition_count() {
    // murmur2("21") is negative: toPositive masks the sign bit (not abs()).
    let positive = (-973_932_308_i32 & 0x7fff_ffff) as usize;
    for n in 1..=12 {
        assert_eq!(partition_for(b"21", n), positive % n);
        assert_eq!(partition_for(b"abc", n), 479_470_107 % n);
    }
    assert_eq!(partition_for(b"", 1), 0);
    assert_eq!(partition_for(b"anything", 0), 0, "no division by zero");
    let key = b"2819c223-7f76-453a-919d-413861904646";
    assert_eq!(partition_for(key, 3), partition_for(key, 3));
}

fn record(key: &str, line: &str) -> Record {
    Record {
        line: Bytes::from(line.to_owned()),
        meta: Arc::new(RecordMeta {
            ack: None,
            event_id: "ev-1".to_owned(),
            key: key.to_owned(),
            time_millis: 1_700_000_000_123,
            severity: crate::sinks::Severity::Info,
        }),
    }
}

#[test]
fn a_record_carries_key_value_without_newline_timestamp_and_event_id() {
    let produced = kafka_record(&record("u1", "{\"a\":1}\n"));
    assert_eq!(produced.key.as_deref(), Some(&b"u1"[..]));
    assert_eq!(produced.value.as_deref(), Some(&b"{\"a\":1}"[..]));
    assert_eq!(produced.timestamp.timestamp_millis(), 1_700_000_000_123);
    assert_eq!(
        produced.headers.get("event_id").map(Vec::as_slice),
        Some(&b"ev-1"[..])
    );
    // A line without a newline (never made, but harmless) keeps all its bytes.
    let produced = kafka_record(&record("u1", "x"));
    assert_eq!(produced.value.as_deref(), Some(&b"x"[..]));
}

#[test]
fn an_unknown_time_is_stamped_now() {
    let now = timestamp(0).timestamp_millis();
    assert!(now > 1_700_000_000_000, "{now}");
    assert_eq!(timestamp(5).timestamp_millis(), 5);
}

#[test]
fn large_partitions_are_split_in_ordered_requests_below_the_bound() {
    let big = "x".repeat(300 * 1024);
    let records: Vec<Record> = (0..7).map(|_| record("k", &big)).collect();
    let indices: Vec<usize> = (0..7).collect();
    let split = chunks(&records, &indices);
    assert_eq!(split, vec![vec![0, 1], vec![2, 3], vec![4, 5], vec![6]]);
    let huge = vec![record("k", "small"), record("k", &"y".repeat(2 << 20))];
    assert_eq!(chunks(&huge, &[0, 1]), vec![vec![0], vec![1]]);
    assert_eq!(chunks(&huge, &[]), Vec::<Vec<usize>>::new());
}

#[test]
fn every_configured_compression_maps_to_its_codec() {
    assert_eq!(
        compression(KafkaCompression::None),
        Compression::NoCompression
    );
    assert_eq!(compression(KafkaCompression::Gzip), Compression::Gzip);
    assert_eq!(compression(KafkaCompression::Lz4), Compression::Lz4);
    assert_eq!(compression(KafkaCompression::Snappy), Compression::Snappy);
    assert_eq!(compression(KafkaCompression::Zstd), Compression::Zstd);
}

#[test]
fn a_non_utf8_sasl_password_is_a_setup_error() {
    let config = KafkaSinkConfig {
        brokers: vec!["127.0.0.1:9092".to_owned()],
        topic: "t".to_owned(),
        compression: KafkaCompression::Zstd,
        tls_extra_roots: Some(Vec::new()),
        sasl: Some(crate::config::KafkaSasl {
            mechanism: SaslMechanism::ScramSha512,
            username: "u".to_owned(),
            password: crate::config::SecretKey(vec![0xff, 0xfe]),
        }),
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(1),
    };
    assert!(matches!(
        KafkaWriter::new(&config),
        Err(SinkError::Setup(_))
    ));
}

#[tokio::test]
async fn a_broker_that_is_down_fails_the_whole_batch_for_retry() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let config = KafkaSinkConfig {
        brokers: vec![format!("127.0.0.1:{port}")],
        topic: "t".to_owned(),
        compression: KafkaCompression::Zstd,
        tls_extra_roots: None,
        sasl: None,
        connect_timeout: Duration::from_secs(3),
        request_timeout: Duration::from_secs(3),
    };
    let mut writer = KafkaWriter::new(&config).unwrap();
    let err = writer
        .send(&[record("u1", "{}\n"), record("u2", "{}\n")])
        .await
        .unwrap_err();
    assert_eq!(err.delivered, Delivered::Leading(0));
    assert!(
        err.error.to_string().contains("cannot connect"),
        "{}",
        err.error
    );
    assert!(writer.connection.is_none());
}
