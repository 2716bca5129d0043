//! Events the format tests encode: an Okta client with a configured name and token, and a
//! SCIM target with an id, a userName and a displayName.

use crate::event::{AuditEvent, ClientInfo, HttpInfo, Outcome, SCHEMA_VERSION};
use crate::scim::{Operation, ScimInfo, Target};

pub(crate) fn event(
    method: &'static str,
    scim: ScimInfo,
    status: Option<u16>,
) -> AuditEvent<'static> {
    AuditEvent {
        schema_version: SCHEMA_VERSION,
        event_id: "0190-event".into(),
        timestamp: crate::clock::Timestamp::from_unix_millis(1_700_000_000_123),
        duration_ms: 1.6,
        request_id: "req-1",
        outcome: if status.is_some_and(|s| s < 400) {
            Outcome::Success
        } else {
            Outcome::Failure
        },
        client: ClientInfo {
            address: "10.0.0.7".into(),
            port: 5555,
            tls: true,
            certificate_subject: None,
            user_agent: Some("Okta SCIM Client 1.0.0".into()),
            auth_scheme: Some("bearer".into()),
            token_fingerprint: Some("0123456789abcdef".into()),
            name: Some("okta-prod".into()),
            idp: Some("okta".into()),
        },
        http: HttpInfo {
            version: "HTTP/1.1",
            method,
            path: "/scim/v2/Users/u1",
            query: None,
            status,
            request_bytes: 10,
            response_bytes: 20,
            request_content_type: None,
            response_content_type: Some("application/scim+json".into()),
            request_body_truncated: false,
            response_body_truncated: false,
            response_generated: false,
            request_body: None,
            response_body: None,
        },
        scim,
        failure: None,
        retry_of: None,
        deprovision: None,
        alert: None,
        route: Some(std::sync::Arc::from("default")),
        upstream: None,
    }
}

pub(crate) fn scim(resource_type: &str, operation: Operation, actions: &[&str]) -> ScimInfo {
    ScimInfo {
        endpoint: Some(if resource_type == "Group" {
            "Groups"
        } else {
            "Users"
        }),
        operation: Some(operation),
        resource_type: Some(resource_type.into()),
        target: Target {
            id: Some("u1".into()),
            user_name: Some("bjensen".into()),
            display_name: Some("Babs".into()),
            ..Target::default()
        },
        actions: actions.iter().map(|a| (*a).to_owned()).collect(),
        ..ScimInfo::default()
    }
}
