use std::path::{Path, PathBuf};
use std::time::Duration;

use super::load::expand_env;
use super::*;
use crate::sinks::http::config::bulk_path_names_an_index;

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(text, Path::new("proxy.toml"))
}

fn problems(text: &str) -> Vec<Problem> {
    match parse(text) {
        Ok(_) => panic!("config was accepted:\n{text}"),
        Err(ConfigError::Invalid { problems, .. }) => problems,
        Err(other) => panic!("unexpected error {other}"),
    }
}

const MINIMAL: &str = r#"
[listen]
address = "127.0.0.1:8080"

[upstream]
url = "http://127.0.0.1:9000"

[[sinks]]
type = "stdout"
"#;

#[test]
fn minimal_config_takes_documented_defaults() {
    let config = parse(MINIMAL).unwrap();
    assert_eq!(config.listen.address, "127.0.0.1:8080".parse().unwrap());
    assert_eq!(
        config.first_route().upstream.authority.as_str(),
        "127.0.0.1:9000"
    );
    assert_eq!(config.first_route().upstream.base_path, "");
    assert_eq!(
        config.first_route().upstream.connect_timeout,
        Duration::from_secs(5)
    );
    assert_eq!(
        config.first_route().upstream.response_timeout,
        Duration::from_secs(30)
    );
    assert!(!config.first_route().upstream.preserve_host);
    assert_eq!(config.capture.max_body_bytes, 1024 * 1024);
    assert_eq!(config.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(config.sinks.len(), 1);
    assert_eq!(config.sinks[0].name, "stdout");
    assert_eq!(config.sinks[0].when_full, WhenFull::Block);
}

#[test]
fn upstream_path_prefix_is_kept_without_trailing_slash() {
    let text = MINIMAL.replace("http://127.0.0.1:9000", "https://saas.example.com/scim/");
    let config = parse(&text).unwrap();
    assert!(config.first_route().upstream.is_https());
    assert_eq!(config.first_route().upstream.base_path, "/scim");
}

#[test]
fn unknown_key_is_named_with_its_line() {
    let text = MINIMAL.replace("[upstream]\n", "[upstream]\nurll = \"x\"\n");
    let p = problems(&text);
    assert_eq!(p[0].key, "upstream.urll", "{p:?}");
    assert_eq!(p[0].line, Some(6), "{p:?}");
    assert!(p[0].message.contains("unknown field"), "{p:?}");
}

#[test]
fn wrong_type_is_named_with_its_line() {
    let text = MINIMAL.replace(
        "[upstream]\n",
        "[upstream]\nconnect_timeout_secs = \"five\"\n",
    );
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "upstream.connect_timeout_secs");
    assert_eq!(p[0].line, Some(6));
}

#[test]
fn missing_listen_address_is_reported() {
    let text = MINIMAL.replace("address = \"127.0.0.1:8080\"\n", "");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "listen.address");
    assert_eq!(p[0].line, Some(2));
}

#[test]
fn every_problem_is_listed_at_once() {
    let text = r#"
[listen]
adress = "127.0.0.1:8080"

[upstream]
url = "ftp://x"
response_timeout_secs = "slow"

[admin]
address = "nowhere"

[[sinks]]
type = "file"
pth = "audit.jsonl"

[[sinks]]
type = "carrier-pigeon"
"#;
    let p = problems(text);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "listen.adress",
        "upstream.response_timeout_secs",
        "sinks[0].pth",
        "sinks[1].type",
        "listen.address",
        "upstream.url",
        "admin.address",
    ] {
        assert!(keys.contains(&expected), "{expected} missing from {p:#?}");
    }
    assert_eq!(
        p.iter().filter(|p| p.key.starts_with("sinks[1]")).count(),
        1,
        "{p:#?}"
    );
    let line_of = |key: &str| p.iter().find(|p| p.key == key).and_then(|p| p.line);
    assert_eq!(line_of("listen.adress"), Some(3));
    assert_eq!(line_of("upstream.response_timeout_secs"), Some(7));
    assert_eq!(line_of("admin.address"), Some(10));
    assert_eq!(line_of("sinks[0].pth"), Some(14));
}

#[test]
fn unknown_section_does_not_cascade() {
    let text = format!("{MINIMAL}\n[upstreem]\nurl = \"x\"\nfoo = 1\n");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].key, "upstreem");
}

#[test]
fn syntax_error_names_its_line() {
    let text = MINIMAL.replace("[upstream]", "[upstream");
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:?}");
    assert_eq!(p[0].line, Some(5));
    assert!(p[0].message.starts_with("invalid TOML"));
}

#[test]
fn display_lists_file_line_and_key() {
    let text = MINIMAL.replace("[upstream]\n", "[upstream]\nbogus = 1\n");
    let err = parse(&text).unwrap_err().to_string();
    assert!(
        err.contains("proxy.toml:6: upstream.bogus: unknown field `bogus`"),
        "{err}"
    );
}

#[test]
fn credentials_in_upstream_url_are_refused() {
    let text = MINIMAL.replace(
        "http://127.0.0.1:9000",
        "https://user:secret@saas.example.com",
    );
    let p = problems(&text);
    assert_eq!(p[0].key, "upstream.url");
    assert!(!p[0].message.contains("secret"));
}

#[test]
fn tls_key_without_cert_is_refused() {
    let text = MINIMAL.replace(
        "address = \"127.0.0.1:8080\"\n",
        "address = \"127.0.0.1:8080\"\ntls_key_file = \"key.pem\"\n",
    );
    let p = problems(&text);
    assert_eq!(p[0].key, "listen.tls_cert_file");
}

#[test]
fn missing_tls_files_are_reported_with_their_paths() {
    let text = MINIMAL.replace(
        "address = \"127.0.0.1:8080\"\n",
        "address = \"127.0.0.1:8080\"\ntls_cert_file = \"/nonexistent/cert.pem\"\ntls_key_file = \"/nonexistent/key.pem\"\n",
    );
    let p = problems(&text);
    assert_eq!(p.len(), 2, "{p:?}");
    assert!(p[0].message.contains("/nonexistent/cert.pem"));
}

#[test]
fn sinks_are_required_and_names_unique() {
    let text = MINIMAL.replace("[[sinks]]\ntype = \"stdout\"\n", "");
    assert_eq!(problems(&text)[0].key, "sinks");
    let text = format!("{MINIMAL}\n[[sinks]]\ntype = \"stdout\"\nname = \"stdout-0\"\n");
    let p = problems(&text);
    assert_eq!(p[0].key, "sinks[1].name", "{p:?}");
}

#[test]
fn file_sink_reads_rotation_and_queue_options() {
    let text = MINIMAL.replace(
        "type = \"stdout\"",
        "type = \"file\"\npath = \"a.jsonl\"\nmax_file_bytes = 1000\nkeep_files = 3\nwhen_full = \"drop_newest\"\nbuffer = { type = \"memory\", max_events = 7 }",
    );
    let config = parse(&text).unwrap();
    let sink = &config.sinks[0];
    assert_eq!(sink.when_full, WhenFull::DropNewest);
    assert_eq!(sink.max_events, 7);
    match &sink.kind {
        SinkKind::File(f) => {
            assert_eq!(f.path, PathBuf::from("a.jsonl"));
            assert_eq!(f.max_file_bytes, 1000);
            assert_eq!(f.keep_files, 3);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bundled_proxy_toml_is_valid() {
    let text = include_str!("../../proxy.toml");
    parse(text).unwrap();
}

#[test]
fn scim_clients_redaction_and_privacy_sections_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("pii.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    let text = format!(
        "{MINIMAL}\n[scim]\nbase_path = \"/scim/v2/\"\nresource_types = [{{ name = \"Device\", endpoint = \"/Devices\" }}]\n\
         [[clients]]\nname = \"okta-prod\"\nidp = \"okta\"\ntoken_sha256 = \"{}\"\n\
         [redact]\nattributes = [\"ssn\"]\n[privacy]\nhash_key_file = \"{}\"\n[capture]\ninclude_bodies = \"redacted\"\n",
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        key.display()
    );
    let config = parse(&text).unwrap();
    assert_eq!(config.scim.base_path.as_deref(), Some("/scim/v2"));
    assert_eq!(
        config.scim.resource_types,
        vec![("devices".to_owned(), "Device".to_owned())]
    );
    assert_eq!(config.scim.clients[0].name, "okta-prod");
    assert_eq!(config.scim.clients[0].token_sha256.unwrap()[0], 0x9f);
    assert_eq!(config.scim.redact_attributes, vec!["ssn".to_owned()]);
    assert_eq!(
        config.scim.hash_key.as_ref().unwrap().0,
        b"0123456789abcdef0123456789abcdef"
    );
    assert_eq!(config.capture.include_bodies, IncludeBodies::Redacted);
    assert!(
        !format!("{config:?}").contains("0123456789abcdef"),
        "Debug never shows the key"
    );
}

#[test]
fn bad_client_hash_short_key_and_base_path_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("short.key");
    std::fs::write(&key, "short").unwrap();
    let text = format!(
        "{MINIMAL}\n[scim]\nbase_path = \"scim\"\n[[clients]]\nname = \"a\"\ntoken_sha256 = \"xyz\"\n[privacy]\nhash_key_file = \"{}\"\n",
        key.display()
    );
    let keys: Vec<String> = problems(&text).into_iter().map(|p| p.key).collect();
    assert!(keys.contains(&"scim.base_path".to_owned()), "{keys:?}");
    assert!(
        keys.contains(&"clients[0].token_sha256".to_owned()),
        "{keys:?}"
    );
    assert!(
        keys.contains(&"privacy.hash_key_file".to_owned()),
        "{keys:?}"
    );
}

#[test]
fn sub_table_of_a_sink_is_reported_against_that_sink() {
    let text = format!(
        "{MINIMAL}\n[[sinks]]\ntype = \"file\"\npath = \"b.jsonl\"\n[sinks.buffer]\ntype = \"memory\"\nmax_events = \"many\"\n"
    );
    let p = problems(&text);
    assert_eq!(p.len(), 1, "{p:#?}");
    assert_eq!(p[0].key, "sinks[1].buffer.max_events", "{p:#?}");
    assert_eq!(p[0].line, Some(16), "{p:#?}");
}

fn with_sinks(sinks: &str) -> String {
    MINIMAL.replace("[[sinks]]\ntype = \"stdout\"\n", sinks)
}

#[test]
fn http_sink_reads_encoding_headers_secrets_batch_and_retry() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cr3t-token\n").unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "api-key-value").unwrap();
    let text = with_sinks(&format!(
        r#"[[sinks]]
type = "http"
url = "https://splunk.example.com:8088/services/collector/event"
encoding = "splunk_hec"
format = "ocsf"
token_file = "{}"
headers = {{ "X-Tenant" = "acme" }}
header_files = {{ "X-Api-Key" = "{}" }}
index = "scim"
batch = {{ max_events = 100, max_bytes = 65536, timeout_secs = 0.5 }}
retry = {{ max_attempts = 4, initial_backoff_secs = 0.2, max_backoff_secs = 5 }}
"#,
        token.display(),
        key.display()
    ));
    let config = parse(&text).unwrap();
    let sink = &config.sinks[0];
    assert_eq!(sink.name, "http");
    assert_eq!(sink.format, EventFormat::Ocsf);
    assert_eq!(sink.batch.max_events, 100);
    assert_eq!(sink.batch.max_bytes, 65536);
    assert_eq!(sink.batch.timeout, Duration::from_millis(500));
    assert_eq!(sink.retry.max_attempts, 4);
    assert_eq!(sink.retry.max_backoff, Duration::from_secs(5));
    let SinkKind::Http(http) = &sink.kind else {
        panic!("{:?}", sink.kind)
    };
    assert_eq!(http.encoding, HttpEncoding::SplunkHec);
    assert_eq!(http.sourcetype, "scimtap:ocsf");
    let header = |name: &str| {
        http.headers
            .iter()
            .find(|(n, _)| n.as_str() == name)
            .map(|(_, v)| v.clone())
            .unwrap()
    };
    assert_eq!(header("authorization"), "Splunk s3cr3t-token");
    assert!(header("authorization").is_sensitive());
    assert!(header("x-api-key").is_sensitive());
    assert!(!header("x-tenant").is_sensitive());
    // Debug output never shows a secret.
    let debug = format!("{config:?}");
    assert!(!debug.contains("s3cr3t-token"), "{debug}");
    assert!(!debug.contains("api-key-value"), "{debug}");
}

#[test]
fn network_sinks_batch_by_default_and_local_ones_do_not() {
    let config = parse(&with_sinks(
        "[[sinks]]\ntype = \"http\"\nurl = \"http://127.0.0.1:1/\"\n\n[[sinks]]\ntype = \"stdout\"\n",
    ))
    .unwrap();
    assert_eq!(config.sinks[0].batch.timeout, Duration::from_secs(1));
    assert_eq!(config.sinks[1].batch.timeout, Duration::from_millis(5));
    assert_eq!(config.sinks[0].retry.max_attempts, 8);
    assert!(config.sinks[0].disk_buffer.is_none());
}

#[test]
fn kafka_sink_and_disk_buffer_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pw");
    std::fs::write(&password, "hunter2").unwrap();
    let text = with_sinks(&format!(
        r#"[[sinks]]
type = "kafka"
brokers = ["k1:9092", "k2:9092"]
topic = "scim.audit"
compression = "lz4"
tls = true
sasl_mechanism = "scram-sha-512"
sasl_username = "scimtap"
sasl_password_file = "{}"
buffer = {{ type = "disk", path = "/var/lib/scimtap/kafka", max_bytes = 10485760 }}
"#,
        password.display()
    ));
    let config = parse(&text).unwrap();
    let sink = &config.sinks[0];
    let disk = sink.disk_buffer.as_ref().unwrap();
    assert_eq!(disk.path, Path::new("/var/lib/scimtap/kafka"));
    assert_eq!(disk.max_bytes, 10_485_760);
    let SinkKind::Kafka(kafka) = &sink.kind else {
        panic!("{:?}", sink.kind)
    };
    assert_eq!(kafka.brokers, ["k1:9092", "k2:9092"]);
    assert_eq!(kafka.topic, "scim.audit");
    assert_eq!(kafka.compression, KafkaCompression::Lz4);
    assert_eq!(kafka.tls_extra_roots.as_ref().map(Vec::len), Some(0));
    let sasl = kafka.sasl.as_ref().unwrap();
    assert_eq!(sasl.mechanism, SaslMechanism::ScramSha512);
    assert_eq!(sasl.password.0, b"hunter2");
    assert!(!format!("{config:?}").contains("hunter2"));
}

#[test]
fn bad_network_sink_options_are_each_reported_with_key_and_line() {
    let text = with_sinks(
        r#"[[sinks]]
type = "http"
url = "ftp://collector"

[[sinks]]
type = "http"
url = "http://collector/"
encoding = "ndjson"
source = "x"
token_file = "/nonexistent/token"
batch = { max_events = 0, timeout_secs = -1 }
retry = { max_attempts = 0, initial_backoff_secs = 5, max_backoff_secs = 1 }

[[sinks]]
type = "kafka"
topic = "bad topic!"

[[sinks]]
type = "kafka"
brokers = ["nohost"]
topic = "t"
sasl_mechanism = "GSSAPI"
sasl_username = "u"
sasl_password_file = "/nonexistent/pw"
buffer = { type = "disk" }

[[sinks]]
type = "stdout"
buffer = { type = "memory", path = "/tmp/x" }

[[sinks]]
type = "http"
url = "http://es:9200/_bulk"
encoding = "elasticsearch_bulk"
token_file = "/nonexistent/token"
headers = { "Content-Type" = "text/plain", "Authorization" = "Basic eA==" }
"#,
    );
    let p = problems(&text);
    let keys: Vec<&str> = p.iter().map(|p| p.key.as_str()).collect();
    for expected in [
        "sinks[0].url",
        "sinks[1].encoding",
        "sinks[1].token_file",
        "sinks[1].batch.max_events",
        "sinks[1].batch.timeout_secs",
        "sinks[1].retry.max_attempts",
        "sinks[1].retry.max_backoff_secs",
        "sinks[2].topic",
        "sinks[3].brokers",
        "sinks[3].sasl_mechanism",
        "sinks[3].sasl_password_file",
        "sinks[3].buffer.path",
        "sinks[4].buffer.type",
        "sinks[5].index",
        "sinks[5].headers.Content-Type",
        "sinks[5].headers.Authorization",
    ] {
        assert!(keys.contains(&expected), "{expected} missing from {p:#?}");
    }
    assert!(p.iter().all(|p| p.line.is_some()), "{p:#?}");
}

#[test]
fn a_bulk_url_may_carry_the_index() {
    assert!(bulk_path_names_an_index("/audit/_bulk"));
    assert!(bulk_path_names_an_index("/es/audit/_bulk/"));
    assert!(!bulk_path_names_an_index("/_bulk"));
    assert!(!bulk_path_names_an_index("/audit/_doc"));
}

#[test]
fn on_audit_failure_defaults_to_drop_and_reads_reject() {
    assert_eq!(
        parse(MINIMAL).unwrap().audit.on_audit_failure,
        OnAuditFailure::Drop
    );
    let text = format!("{MINIMAL}\n[audit]\non_audit_failure = \"reject\"\n");
    assert_eq!(
        parse(&text).unwrap().audit.on_audit_failure,
        OnAuditFailure::Reject
    );
    let text = format!("{MINIMAL}\n[audit]\non_audit_failure = \"halt\"\n");
    assert_eq!(problems(&text)[0].key, "audit.on_audit_failure");
}

#[test]
fn environment_variables_expand_and_unset_ones_are_named_by_line() {
    let lookup = |name: &str| (name == "CREDS").then(|| "/run/creds".to_owned());
    let (text, problems) = expand_env(
        "a = \"${CREDS}/hec.token\"\nb = \"$${CREDS}\"\nc = \"${MISSING}\"\nd = \"$5 ${ not a var\"\n",
        lookup,
    );
    assert_eq!(
        text,
        "a = \"/run/creds/hec.token\"\nb = \"${CREDS}\"\nc = \"\"\nd = \"$5 ${ not a var\"\n"
    );
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].line, Some(3));
    assert_eq!(problems[0].key, "${MISSING}");
}

#[test]
fn state_defaults_to_a_sqlite_file_and_reads_a_postgres_url() {
    let sqlite = parse(&format!("{MINIMAL}\n[state]\n")).unwrap();
    assert!(matches!(
        sqlite.state.map(|s| s.store),
        Some(StateStore::Sqlite(path)) if path == Path::new("scimtap-state.db")
    ));
    let dir = tempfile::tempdir().unwrap();
    let password = dir.path().join("pg-password");
    std::fs::write(&password, "hunter2\n").unwrap();
    let pg = parse(&format!(
        "{MINIMAL}\n[state]\nurl = \"postgres://scimtap@db.internal:5432/scimtap\"\npassword_file = \"{}\"\n",
        password.display()
    ))
    .unwrap();
    let debug = format!("{pg:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    let Some(StateStore::Postgres(target)) = pg.state.map(|s| s.store) else {
        panic!("not postgres: {debug}");
    };
    assert_eq!(target.config.get_password(), Some(&b"hunter2"[..]));
    assert_eq!(target.config.get_dbname(), Some("scimtap"));
}

#[test]
fn state_path_and_url_together_or_a_bad_url_are_refused_with_their_line() {
    let both = problems(&format!(
        "{MINIMAL}\n[state]\npath = \"s.db\"\nurl = \"postgres://a@db/x\"\n"
    ));
    assert_eq!(both[0].key, "state.path");
    assert_eq!(both[0].line, Some(12), "{both:?}");
    let bad = problems(&format!(
        "{MINIMAL}\n[state]\nurl = \"postgres://a:topsecret@db:port/x\"\n"
    ));
    assert_eq!(bad[0].key, "state.url");
    assert_eq!(bad[0].line, Some(12), "{bad:?}");
    assert!(!bad[0].message.contains("topsecret"), "{bad:?}");
    let missing = problems(&format!(
        "{MINIMAL}\n[state]\nurl = \"postgres://a@db/x\"\npassword_file = \"/nonexistent/pw\"\n"
    ));
    assert_eq!(missing[0].key, "state.password_file");
    let stray = problems(&format!(
        "{MINIMAL}\n[state]\npassword_file = \"/nonexistent/pw\"\n"
    ));
    assert_eq!(stray[0].key, "state.password_file");
    let settle_without_url = problems(&format!("{MINIMAL}\n[state]\nsettle_ms = 50\n"));
    assert_eq!(settle_without_url[0].key, "state.settle_ms");
}

#[test]
fn a_shared_state_settles_100_ms_by_default_and_a_file_not_at_all() {
    let pg = parse(&format!(
        "{MINIMAL}\n[state]\nurl = \"postgres://a@db/x\"\n"
    ))
    .unwrap();
    assert_eq!(pg.state.unwrap().settle, Duration::from_millis(100));
    let set = parse(&format!(
        "{MINIMAL}\n[state]\nurl = \"postgres://a@db/x\"\nsettle_ms = 0\n"
    ))
    .unwrap();
    assert_eq!(set.state.unwrap().settle, Duration::ZERO);
    let file = parse(&format!("{MINIMAL}\n[state]\n")).unwrap();
    assert_eq!(file.state.unwrap().settle, Duration::ZERO);
}

const TWO_ROUTES: &str = r#"
[listen]
address = "127.0.0.1:8080"

[[clients]]
name = "okta-crm"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

[[routes]]
name = "crm"
host = "SCIM.Example.com"
path_prefix = "/crm/"
clients = ["okta-crm"]
sinks = ["audit"]
[routes.upstream]
url = "https://crm.example.com/scim/v2"
response_timeout_secs = 7

[[routes]]
name = "hr"
upstream = { url = "http://127.0.0.1:9001" }
state_namespace = "hr-prod"
redact = { attributes = ["employeeNumber"] }

[[sinks]]
type = "stdout"
name = "audit"
"#;

#[test]
fn routes_resolve_with_their_defaults_and_an_upstream_config_is_one_implicit_route() {
    let config = parse(TWO_ROUTES).unwrap();
    let [crm, hr] = &config.routes[..] else {
        panic!("two routes expected: {:?}", config.routes);
    };
    assert_eq!(crm.name, "crm");
    assert_eq!(crm.host.as_deref(), Some("scim.example.com"));
    assert_eq!(crm.path_prefix.as_deref(), Some("/crm"));
    assert_eq!(crm.upstream.base_path, "/scim/v2");
    assert_eq!(crm.upstream.response_timeout, Duration::from_secs(7));
    assert_eq!(crm.clients.as_deref(), Some(&["okta-crm".to_owned()][..]));
    assert_eq!(crm.state_namespace, "crm");
    assert_eq!(crm.sinks.as_deref(), Some(&["audit".to_owned()][..]));
    assert_eq!(hr.state_namespace, "hr-prod");
    assert_eq!(hr.redact_attributes, ["employeeNumber"]);
    assert!(hr.host.is_none() && hr.path_prefix.is_none());

    let single = parse(MINIMAL).unwrap();
    let [only] = &single.routes[..] else {
        panic!("one implicit route expected");
    };
    assert_eq!(only.name, DEFAULT_ROUTE);
    // The state an [upstream] configuration built stays where it was.
    assert_eq!(only.state_namespace, "127.0.0.1:9000");
}

#[test]
fn a_route_matches_its_host_and_its_prefix_at_a_segment_boundary() {
    let config = parse(TWO_ROUTES).unwrap();
    let crm = &config.routes[0];
    assert_eq!(
        crm.matches(0, Some("scim.example.com"), "/crm/Users"),
        Some(4)
    );
    assert_eq!(crm.matches(0, Some("scim.example.com"), "/crm"), Some(4));
    assert_eq!(
        crm.matches(0, Some("scim.example.com"), "/crmx/Users"),
        None
    );
    assert_eq!(
        crm.matches(0, Some("other.example.com"), "/crm/Users"),
        None
    );
    assert_eq!(crm.matches(0, None, "/crm/Users"), None);
    // Any case: a request cannot slip past its route by spelling the prefix differently.
    assert_eq!(
        crm.matches(0, Some("scim.example.com"), "/CRM/Users"),
        Some(4)
    );
    assert_eq!(crm.matches(0, Some("scim.example.com"), "/c"), None);
    let hr = &config.routes[1];
    assert_eq!(hr.matches(0, None, "/anything"), Some(0));
}

#[test]
fn bad_routes_are_refused_with_their_lines() {
    let both = format!("{TWO_ROUTES}\n[upstream]\nurl = \"http://127.0.0.1:9\"\n");
    let p = problems(&both);
    assert!(
        p.iter()
            .any(|p| p.key == "upstream" && p.message.contains("cannot both")),
        "{p:?}"
    );

    let unknown = TWO_ROUTES
        .replace(r#"clients = ["okta-crm"]"#, r#"clients = ["okta-typo"]"#)
        .replace(r#"sinks = ["audit"]"#, r#"sinks = ["nope"]"#);
    let p = problems(&unknown);
    let clients = p
        .iter()
        .find(|p| p.key == "routes[0].clients")
        .expect("clients");
    assert!(clients.message.contains("okta-typo"), "{clients:?}");
    assert_eq!(clients.line, Some(13));
    assert!(p.iter().any(|p| p.key == "routes[0].sinks"), "{p:?}");

    // A route every request of which an earlier one takes, a duplicate name, a bad prefix.
    let shadowed = format!(
        "{TWO_ROUTES}\n[[routes]]\nname = \"hr\"\npath_prefix = \"/x/../y\"\nupstream = {{ url = \"http://127.0.0.1:9\" }}\n"
    );
    let p = problems(&shadowed);
    for key in ["routes[2].name", "routes[2].path_prefix"] {
        assert!(p.iter().any(|p| p.key == key), "{key}: {p:?}");
    }
    assert!(
        p.iter().any(|p| p.message.contains("duplicate route name")),
        "{p:?}"
    );
    assert!(
        p.iter().any(|p| p.message.contains("can never match")),
        "{p:?}"
    );

    let neither = MINIMAL.replace("[upstream]\nurl = \"http://127.0.0.1:9000\"\n", "");
    let p = problems(&neither);
    assert!(p.iter().any(|p| p.key == "upstream"), "{p:?}");
}

#[test]
fn a_route_listen_names_one_of_the_listen_addresses() {
    let text = TWO_ROUTES
        .replace(
            "address = \"127.0.0.1:8080\"\n",
            "address = \"127.0.0.1:8080\"\nextra_addresses = [\"127.0.0.1:8443\"]\n",
        )
        .replace(
            "name = \"hr\"\n",
            "name = \"hr\"\nlisten = \"127.0.0.1:8443\"\n",
        );
    let config = parse(&text).unwrap();
    assert_eq!(
        config.listen.addresses().collect::<Vec<_>>(),
        [
            "127.0.0.1:8080".parse().unwrap(),
            "127.0.0.1:8443".parse().unwrap()
        ]
    );
    let hr = &config.routes[1];
    assert_eq!(hr.listen, Some(("127.0.0.1:8443".parse().unwrap(), 1)));
    assert_eq!(hr.matches(1, None, "/Users"), Some(0));
    assert_eq!(hr.matches(0, None, "/Users"), None);

    let elsewhere = text.replace("listen = \"127.0.0.1:8443\"", "listen = \"127.0.0.1:9443\"");
    let p = problems(&elsewhere);
    assert!(
        p.iter()
            .any(|p| p.key == "routes[1].listen" && p.message.contains("9443")),
        "{p:?}"
    );
    let twice = text.replace(
        "[\"127.0.0.1:8443\"]",
        "[\"127.0.0.1:8443\", \"127.0.0.1:8080\"]",
    );
    let p = problems(&twice);
    assert!(p.iter().any(|p| p.key == "listen.extra_addresses"), "{p:?}");
}
