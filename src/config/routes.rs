//! `[[routes]]`: several SCIM services behind one scimtap. A request goes to the first route
//! whose `host` and `path_prefix` both match it (an omitted one matches anything); each route
//! has its own upstream, allow-list, redaction, shadow-state namespace, alert rules and sinks.
//! Without `[[routes]]`, `[upstream]` is one implicit route named [`DEFAULT_ROUTE`].

use serde::Deserialize;
use toml::Spanned;

use super::scim::RawRedact;
use super::upstream::{validate_upstream, RawUpstream, UpstreamConfig};
use super::validate::{is_label_name, Checker};
use super::{AlertRule, ScimConfig, SinkConfig};

/// The name of the implicit route of a configuration with `[upstream]` and no `[[routes]]`.
pub const DEFAULT_ROUTE: &str = "default";

/// The most routes one scimtap takes: the route is a metric label, so its values stay few.
pub const MAX_ROUTES: usize = 256;

/// `[[routes]]`: one SCIM service behind scimtap.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    /// Unique; names the route in events (`route`), metrics and logs.
    name: Spanned<String>,
    /// Only connections accepted on this `IP:PORT`: `listen.address` or one of
    /// `listen.extra_addresses`.
    listen: Option<Spanned<String>>,
    /// Only requests for this host (the Host header, or HTTP/2 `:authority`; any port, any
    /// case).
    host: Option<Spanned<String>>,
    /// Only requests whose path starts with this prefix, at a segment boundary (`/crm` takes
    /// `/crm` and `/crm/Users`, not `/crmx`). The prefix is removed before forwarding.
    path_prefix: Option<Spanned<String>>,
    /// The service this route's requests are forwarded to: the keys of `[upstream]`.
    upstream: Option<Spanned<RawUpstream>>,
    /// Only these `[[clients]]` (by name) may use this route; others get 401. Without it,
    /// the global rule applies (`required = true` on any client).
    clients: Option<Spanned<Vec<String>>>,
    /// Whose shadow state this route's traffic reads and writes; default the route's name.
    state_namespace: Option<Spanned<String>>,
    /// The `[[alerts]]` rules (by name) evaluated over this route's events; default all.
    alerts: Option<Spanned<Vec<String>>>,
    /// The sinks (by name) this route's events go to, besides the hash chain's sinks (native
    /// `file` and `stdout`), which take every event; default all.
    sinks: Option<Spanned<Vec<String>>>,
    /// Attribute names and query parameters redacted in this route's events, on top of
    /// `[redact]`.
    redact: Option<Spanned<RawRedact>>,
}

/// One resolved route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub name: String,
    /// `Some`: only connections accepted on this listener (its address, and its index in
    /// [`super::ListenConfig::addresses`]).
    pub listen: Option<(std::net::SocketAddr, usize)>,
    /// Lower case, without a port.
    pub host: Option<String>,
    /// Starts with `/`, no trailing `/`.
    pub path_prefix: Option<String>,
    pub upstream: UpstreamConfig,
    /// `Some`: only these clients (by name) may use the route.
    pub clients: Option<Vec<String>>,
    pub state_namespace: String,
    /// `Some`: only these rules (by name); `None`: every rule.
    pub alerts: Option<Vec<String>>,
    /// `Some`: only these sinks (by name) besides the chain's; `None`: every sink.
    pub sinks: Option<Vec<String>>,
    /// On top of `[redact]`.
    pub redact_attributes: Vec<String>,
    pub redact_query_params: Vec<String>,
}

impl RouteConfig {
    /// The implicit route of a configuration without `[[routes]]`. Its state namespace is the
    /// upstream's authority, where state was kept before routes existed.
    fn implicit(upstream: UpstreamConfig) -> RouteConfig {
        RouteConfig {
            name: DEFAULT_ROUTE.to_owned(),
            listen: None,
            host: None,
            path_prefix: None,
            state_namespace: upstream.authority.to_string(),
            upstream,
            clients: None,
            alerts: None,
            sinks: None,
            redact_attributes: Vec::new(),
            redact_query_params: Vec::new(),
        }
    }

    /// Where the path's part after the route's prefix starts, when the route takes a request
    /// that arrived on listener `listener` for `host` (without its port, any case) and `path`.
    pub fn matches(&self, listener: usize, host: Option<&str>, path: &str) -> Option<usize> {
        if self.listen.is_some_and(|(_, index)| index != listener) {
            return None;
        }
        if let Some(want) = &self.host {
            if !host.is_some_and(|h| h.eq_ignore_ascii_case(want)) {
                return None;
            }
        }
        match &self.path_prefix {
            None => Some(0),
            Some(prefix) => {
                // Any case: `/CRM/Users` must not slip past the route meant for `/crm`.
                let head = path.get(..prefix.len())?;
                let rest = &path[prefix.len()..];
                (head.eq_ignore_ascii_case(prefix) && (rest.is_empty() || rest.starts_with('/')))
                    .then_some(prefix.len())
            }
        }
    }

    /// Whether requests are told apart by path (a route has a `path_prefix`).
    pub fn has_prefix(&self) -> bool {
        self.path_prefix.is_some()
    }

    /// Whether every request this route takes is taken by `earlier` first.
    fn shadowed_by(&self, earlier: &RouteConfig) -> bool {
        let listen = earlier.listen.is_none() || earlier.listen == self.listen;
        let host = earlier.host.is_none() || earlier.host == self.host;
        let prefix = match (&earlier.path_prefix, &self.path_prefix) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(e), Some(s)) => {
                let (e, s) = (e.to_ascii_lowercase(), s.to_ascii_lowercase());
                s == e
                    || s.strip_prefix(e.as_str())
                        .is_some_and(|r| r.starts_with('/'))
            }
        };
        listen && host && prefix
    }
}

/// Checks that every name in `list` is one of `known`.
fn check_names(
    c: &mut Checker<'_>,
    list: &Spanned<Vec<String>>,
    key: &str,
    what: &str,
    known: &[&str],
) {
    for name in list.get_ref() {
        if !known.contains(&name.as_str()) {
            let known = if known.is_empty() {
                "none is configured".to_owned()
            } else {
                format!("known: {}", known.join(", "))
            };
            c.at(
                list.span(),
                key,
                format!("no {what} is named `{name}` ({known})"),
            );
        }
    }
}

/// What routes refer to by name, resolved before them.
pub(super) struct Known<'a> {
    /// `None` when `[listen]` itself is broken (its problems are reported already).
    pub listen: Option<&'a super::ListenConfig>,
    pub scim: &'a ScimConfig,
    pub alerts: &'a [AlertRule],
    pub sinks: &'a [SinkConfig],
}

/// `[[routes]]`, or the implicit route of `[upstream]`. Exactly one of the two must be
/// there. `None` when no route could be resolved (the problems say why).
pub(super) fn validate_routes(
    c: &mut Checker<'_>,
    upstream: Option<&Spanned<RawUpstream>>,
    raw: &[Spanned<RawRoute>],
    known: &Known<'_>,
) -> Option<Vec<RouteConfig>> {
    match (upstream, raw.is_empty()) {
        (None, true) => {
            c.line(
                None,
                "upstream",
                "missing section [upstream] (with `url`), or [[routes]] (each with its own upstream)",
            );
            return None;
        }
        (Some(upstream), true) => {
            return validate_upstream(c, upstream, "upstream")
                .map(|u| vec![RouteConfig::implicit(u)]);
        }
        (Some(upstream), false) => {
            c.at(
                upstream.span(),
                "upstream",
                "[upstream] and [[routes]] cannot both be set: give each route its own `upstream`",
            );
            return None;
        }
        (None, false) => {}
    }
    if raw.len() > MAX_ROUTES {
        c.line(
            None,
            "routes",
            format!("{} routes; at most {MAX_ROUTES}", raw.len()),
        );
    }
    let clients: Vec<&str> = known.scim.clients.iter().map(|c| c.name.as_str()).collect();
    let rules: Vec<&str> = known.alerts.iter().map(|r| r.name.as_str()).collect();
    let sinks: Vec<&str> = known.sinks.iter().map(|s| s.name.as_str()).collect();
    let mut routes: Vec<RouteConfig> = Vec::new();
    let mut ok = true;
    for (i, entry) in raw.iter().enumerate() {
        let key = |field: &str| format!("routes[{i}].{field}");
        let r = entry.get_ref();
        let name = r.name.get_ref().clone();
        if !is_label_name(&name) {
            c.at(
                r.name.span(),
                &key("name"),
                "must be 1 to 64 letters, digits, `_`, `-` or `.` (it labels metrics)",
            );
        } else if routes.iter().any(|o| o.name == name) {
            c.at(
                r.name.span(),
                &key("name"),
                format!("duplicate route name `{name}`"),
            );
        }
        let listen = r.listen.as_ref().and_then(|l| {
            let addr = c.socket_addr(l, &key("listen"))?;
            let index = known.listen?.addresses().position(|a| a == addr);
            if index.is_none() {
                c.at(
                    l.span(),
                    &key("listen"),
                    format!("{addr} is not listen.address or one of listen.extra_addresses"),
                );
            }
            index.map(|i| (addr, i))
        });
        let host = r.host.as_ref().and_then(|h| {
            let text = h.get_ref().trim().to_ascii_lowercase();
            let valid = !text.is_empty()
                && text
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | '_'));
            if !valid {
                c.at(
                    h.span(),
                    &key("host"),
                    "must be a host name without scheme, port or path (e.g. \"crm.scim.example.com\")",
                );
            }
            valid.then_some(text)
        });
        let path_prefix = r.path_prefix.as_ref().and_then(|p| {
            let text = p.get_ref().trim_end_matches('/');
            let valid = p.get_ref().starts_with('/')
                && !text.contains(['?', '#', '%', ' '])
                && !text.split('/').any(|seg| seg == "." || seg == "..");
            if !valid {
                c.at(
                    p.span(),
                    &key("path_prefix"),
                    "must be a path starting with `/`, without query, `%`, `.` or `..` segments (e.g. \"/crm\")",
                );
            }
            // "/" alone matches every path: the same as no prefix.
            (valid && !text.is_empty()).then(|| text.to_owned())
        });
        let upstream = match &r.upstream {
            Some(u) => validate_upstream(c, u, &format!("routes[{i}].upstream")),
            None => {
                c.at(
                    entry.span(),
                    &key("upstream"),
                    format!("route `{name}` needs an `upstream` table with a `url`"),
                );
                None
            }
        };
        if let Some(list) = &r.clients {
            check_names(c, list, &key("clients"), "[[clients]] entry", &clients);
            if list.get_ref().is_empty() {
                c.at(
                    list.span(),
                    &key("clients"),
                    "an empty list would refuse every request; leave `clients` out to use the global rule",
                );
            }
        }
        if let Some(list) = &r.alerts {
            check_names(c, list, &key("alerts"), "[[alerts]] rule", &rules);
        }
        if let Some(list) = &r.sinks {
            check_names(c, list, &key("sinks"), "sink", &sinks);
        }
        let state_namespace = match &r.state_namespace {
            Some(ns) if ns.get_ref().trim().is_empty() || ns.get_ref().len() > 255 => {
                c.at(
                    ns.span(),
                    &key("state_namespace"),
                    "must be 1 to 255 characters",
                );
                name.clone()
            }
            Some(ns) => ns.get_ref().clone(),
            None => name.clone(),
        };
        let (redact_attributes, redact_query_params) = r
            .redact
            .as_ref()
            .map(|red| {
                let red = red.get_ref();
                (red.attributes.clone(), red.query_params.clone())
            })
            .unwrap_or_default();
        let Some(upstream) = upstream else {
            ok = false;
            continue;
        };
        let route = RouteConfig {
            name,
            listen,
            host,
            path_prefix,
            upstream,
            clients: r.clients.as_ref().map(|l| l.get_ref().clone()),
            state_namespace,
            alerts: r.alerts.as_ref().map(|l| l.get_ref().clone()),
            sinks: r.sinks.as_ref().map(|l| l.get_ref().clone()),
            redact_attributes,
            redact_query_params,
        };
        if let Some(earlier) = routes.iter().find(|e| route.shadowed_by(e)) {
            c.at(
                entry.span(),
                &key("name"),
                format!(
                    "route `{}` can never match: route `{}` before it takes every request it would",
                    route.name, earlier.name
                ),
            );
        }
        routes.push(route);
    }
    ok.then_some(routes)
}
