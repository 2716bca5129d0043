//! What the audit worker keeps per `[[routes]]` entry: how its events are described, which
//! sinks take them, and whose shadow state they read and write. Alerts keep their own windows
//! per route (`crate::alerts`), so nothing one route does counts toward another's.

use std::sync::Arc;

use crate::config::Config;
use crate::event::EventContext;
use crate::sinks::SinkHandle;

/// One route as the audit worker treats its exchanges.
pub struct RouteStage {
    /// `None` for the stage of requests no route took.
    pub name: Option<Arc<str>>,
    pub events: EventContext,
    /// The sinks (by name) the route's events go to besides the chain's (`None`: all).
    sink_names: Option<Vec<String>>,
    /// One flag per sink of the worker, in order: whether this route's events go to it.
    wanted: Vec<bool>,
    /// `[routes] state_namespace`: whose shadow state the route's exchanges use.
    pub state_namespace: String,
    /// `[routes] alerts`: the rules (by name) that watch this route (`None`: all).
    pub alert_rules: Option<Vec<String>>,
}

impl RouteStage {
    /// The stage of requests no route took: every sink, no state, no alerts.
    fn unrouted(events: EventContext) -> RouteStage {
        RouteStage {
            name: None,
            events,
            sink_names: None,
            wanted: Vec::new(),
            state_namespace: String::new(),
            alert_rules: None,
        }
    }
    /// Whether this route's events go to the sink at `index`.
    pub fn wants(&self, index: usize) -> bool {
        self.wanted.get(index).copied().unwrap_or(true)
    }

    /// Resolves the route's sink names against the worker's sinks. The sinks of the hash chain
    /// (native `file` and `stdout`) take every event, or the chain they verify would break.
    fn resolve(&mut self, sinks: &[SinkHandle]) {
        self.wanted = sinks
            .iter()
            .map(|sink| {
                sink.is_trail()
                    || self
                        .sink_names
                        .as_ref()
                        .is_none_or(|names| names.iter().any(|n| n == sink.name()))
            })
            .collect();
    }
}

/// Every route's stage, and the one for requests no route took.
pub struct RouteStages {
    pub routes: Vec<RouteStage>,
    pub unrouted: RouteStage,
}

impl RouteStages {
    pub fn from_config(config: &Config) -> RouteStages {
        RouteStages {
            routes: config
                .routes
                .iter()
                .map(|r| RouteStage {
                    name: Some(Arc::from(r.name.as_str())),
                    events: EventContext::for_route(config, Some(r)),
                    sink_names: r.sinks.clone(),
                    wanted: Vec::new(),
                    state_namespace: r.state_namespace.clone(),
                    alert_rules: r.alerts.clone(),
                })
                .collect(),
            unrouted: RouteStage::unrouted(EventContext::for_route(config, None)),
        }
    }

    /// No route: every exchange is described with `events` and goes to every sink (benches).
    pub fn with_events(events: EventContext) -> RouteStages {
        RouteStages {
            routes: Vec::new(),
            unrouted: RouteStage::unrouted(events),
        }
    }

    /// Fixes which sinks each route's events go to.
    pub(super) fn resolve(&mut self, sinks: &[SinkHandle]) {
        for stage in self.routes.iter_mut().chain([&mut self.unrouted]) {
            stage.resolve(sinks);
        }
    }

    /// The stage of the route named `route` (the unrouted stage for `None`, or for a route a
    /// reload removed while its exchange was in flight: described without its settings then).
    pub fn get(&self, route: Option<&str>) -> &RouteStage {
        route
            .and_then(|name| self.routes.iter().find(|s| s.name.as_deref() == Some(name)))
            .unwrap_or(&self.unrouted)
    }

    pub fn get_mut(&mut self, route: Option<&str>) -> &mut RouteStage {
        let at = route.and_then(|name| {
            self.routes
                .iter()
                .position(|s| s.name.as_deref() == Some(name))
        });
        match at {
            Some(at) => &mut self.routes[at],
            None => &mut self.unrouted,
        }
    }

    /// The routes and the alert rules each is watched by, for [`crate::alerts::Alerts`].
    pub fn alert_routes(&self) -> Vec<(Arc<str>, Option<Vec<String>>)> {
        self.routes
            .iter()
            .filter_map(|s| Some((s.name.clone()?, s.alert_rules.clone())))
            .collect()
    }

    /// The state namespaces in use, each once, with the first route using it.
    pub fn namespaces(&self) -> Vec<(&str, &RouteStage)> {
        let mut out: Vec<(&str, &RouteStage)> = Vec::new();
        for stage in &self.routes {
            if !out.iter().any(|(ns, _)| *ns == stage.state_namespace) {
                out.push((&stage.state_namespace, stage));
            }
        }
        out
    }
}
