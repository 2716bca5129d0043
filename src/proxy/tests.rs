//! Unit tests of the forwarding rules that need no network: headers, ids, refusals.

use super::*;

#[test]
fn hop_by_hop_headers_and_those_named_in_connection_are_removed() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CONNECTION,
        HeaderValue::from_static("keep-alive, x-secret-hop"),
    );
    h.insert("x-secret-hop", HeaderValue::from_static("1"));
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert(header::TE, HeaderValue::from_static("trailers"));
    h.insert(header::UPGRADE, HeaderValue::from_static("h2c"));
    h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer t"));
    strip_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1, "{h:?}");
    assert!(h.contains_key(header::AUTHORIZATION));
}

#[test]
fn forwarded_for_is_appended_to_an_existing_list() {
    let mut h = HeaderMap::new();
    h.append(&X_FORWARDED_FOR, HeaderValue::from_static("1.1.1.1"));
    h.append(&X_FORWARDED_FOR, HeaderValue::from_static("2.2.2.2"));
    append_list(&mut h, &X_FORWARDED_FOR, "127.0.0.1");
    assert_eq!(h.get_all(&X_FORWARDED_FOR).iter().count(), 1);
    assert_eq!(h[&X_FORWARDED_FOR], "1.1.1.1, 2.2.2.2, 127.0.0.1");
}

#[test]
fn sane_request_ids_are_kept_and_others_replaced() {
    let mut h = HeaderMap::new();
    h.insert(&X_REQUEST_ID, HeaderValue::from_static("okta-123"));
    assert_eq!(settle_request_id(&mut h), "okta-123");
    let mut h = HeaderMap::new();
    h.insert(&X_REQUEST_ID, HeaderValue::from_static("has space"));
    let id = settle_request_id(&mut h);
    assert_ne!(id, "has space");
    assert_eq!(h[&X_REQUEST_ID], id.as_str());
    let mut h = HeaderMap::new();
    let id = settle_request_id(&mut h);
    assert_eq!(h[&X_REQUEST_ID], id.as_str());
}

#[test]
fn scim_writes_are_the_methods_that_change_identities_but_not_search() {
    assert!(is_scim_write(&Method::POST, "/scim/v2/Users"));
    assert!(is_scim_write(&Method::POST, "/scim/v2/Bulk"));
    assert!(is_scim_write(&Method::PATCH, "/Users/1"));
    assert!(is_scim_write(&Method::DELETE, "/Groups/1"));
    assert!(is_scim_write(&Method::PUT, "/Users/1"));
    assert!(!is_scim_write(&Method::POST, "/scim/v2/Users/.search"));
    assert!(!is_scim_write(&Method::POST, "/.search"));
    assert!(!is_scim_write(&Method::GET, "/Users"));
}

#[test]
fn connect_and_absolute_form_are_refused() {
    let abs: Uri = "http://evil.example/x".parse().unwrap();
    assert!(refuse_target(
        &Method::CONNECT,
        &"evil:443".parse().unwrap(),
        Version::HTTP_11
    )
    .is_some());
    assert!(refuse_target(&Method::GET, &abs, Version::HTTP_11).is_some());
    // HTTP/2 requests always carry an authority; that is not absolute-form.
    let h2: Uri = "https://proxy.example/scim/v2/Users".parse().unwrap();
    assert!(refuse_target(&Method::GET, &h2, Version::HTTP_2).is_none());
    assert!(refuse_target(&Method::GET, &"/Users".parse().unwrap(), Version::HTTP_11).is_none());
}

#[test]
fn the_route_prefix_is_removed_and_the_upstream_base_path_put_in_its_place() {
    let config = crate::config::Config::from_toml_str(
        "[listen]\naddress = \"127.0.0.1:1\"\n[[routes]]\nname = \"crm\"\npath_prefix = \"/crm\"\nupstream = { url = \"http://127.0.0.1:9/scim/v2\" }\n[[routes]]\nname = \"root\"\nupstream = { url = \"http://127.0.0.1:9\" }\n[[sinks]]\ntype = \"stdout\"\n",
        std::path::Path::new("t.toml"),
    )
    .expect("valid");
    let (crm, root) = (&config.routes[0].upstream, &config.routes[1].upstream);
    let uri = |s: &str| s.parse::<Uri>().unwrap();
    let up = upstream_uri(crm, 4, &uri("/crm/Users?filter=a")).unwrap();
    assert_eq!(up.to_string(), "http://127.0.0.1:9/scim/v2/Users?filter=a");
    let up = upstream_uri(crm, 4, &uri("/crm")).unwrap();
    assert_eq!(up.to_string(), "http://127.0.0.1:9/scim/v2");
    // A prefix route to an upstream without a base path: the root, never an empty path.
    let up = upstream_uri(root, 4, &uri("/crm?x=1")).unwrap();
    assert_eq!(up.to_string(), "http://127.0.0.1:9/?x=1");
    let up = upstream_uri(root, 0, &uri("/Users/1")).unwrap();
    assert_eq!(up.to_string(), "http://127.0.0.1:9/Users/1");
}

#[test]
fn the_request_host_is_read_without_its_port_in_lower_case() {
    let parts = |uri: &str, host: Option<&str>| {
        let mut req = Request::builder().uri(uri);
        if let Some(h) = host {
            req = req.header(header::HOST, h);
        }
        req.body(()).unwrap().into_parts().0
    };
    assert_eq!(
        request_host(&parts("/Users", Some("CRM.example.com:8443"))).as_deref(),
        Some("crm.example.com")
    );
    assert_eq!(
        request_host(&parts("/Users", Some("[::1]:8080"))).as_deref(),
        Some("[::1]")
    );
    // HTTP/2: the authority of the request target, not a Host header.
    assert_eq!(
        request_host(&parts("https://hr.example.com/Users", None)).as_deref(),
        Some("hr.example.com")
    );
    assert_eq!(request_host(&parts("/Users", None)), None);
}

#[test]
fn paths_an_upstream_could_read_as_another_are_ambiguous() {
    for path in [
        "/%61dmin/Users",
        "/crm/%55sers",
        "//crm/Users",
        "/x/../crm/Users",
        "/crm/./Users",
        "/crm//Users",
    ] {
        assert!(ambiguous_path(path).is_some(), "{path}");
    }
    for path in [
        "/crm/Users",
        "/crm/Users/",
        "/",
        "/crm/Users/a%20b",
        "/crm/Users/a%2Fb",
        "/crm/Users/.well",
    ] {
        assert_eq!(ambiguous_path(path), None, "{path}");
    }
}
