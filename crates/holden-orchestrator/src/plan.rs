//! Supervisor-level decisions that concern several services at once, as pure functions: what
//! a reload changes, and which services a shutdown stops next. The event loop only carries
//! them out.

use std::collections::BTreeMap;

use crate::config::Service;

/// What a reload changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReloadPlan {
    /// New services, to start.
    pub added: Vec<String>,
    /// Services no longer configured, to stop and drop.
    pub removed: Vec<String>,
    /// Services whose settings changed (or whose earlier change is still pending), to restart
    /// with the new settings.
    pub changed: Vec<String>,
}

/// Compares the running configuration with a new one. `pending(name)` says whether a service
/// still waits to apply a change from an earlier reload (it counts as changed again).
pub fn reload_plan(
    old: &BTreeMap<String, Service>,
    new: &BTreeMap<String, Service>,
    pending: impl Fn(&str) -> bool,
) -> ReloadPlan {
    let mut plan = ReloadPlan {
        removed: old.keys().filter(|n| !new.contains_key(*n)).cloned().collect(),
        ..ReloadPlan::default()
    };
    for (name, cfg) in new {
        match old.get(name) {
            None => plan.added.push(name.clone()),
            Some(was) if was != cfg || pending(name) => plan.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    plan
}

/// A service as a shutdown sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Down {
    /// Wanted down already, and stopping or stopped: nothing more to ask of it.
    pub asked: bool,
    /// No process and no spawn in flight, and wanted down.
    pub settled: bool,
}

/// Each service's dependents (the services that depend on it), from what each depends on.
pub fn dependents<'a>(services: impl IntoIterator<Item = (&'a String, &'a [String])>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, deps) in services {
        for d in deps {
            out.entry(d.clone()).or_default().push(name.clone());
        }
    }
    out
}

/// The services a shutdown stops now: in reverse start order, each not yet asked whose
/// dependents have all settled. `dependents` is [`dependents`]'s map. Linear in the services
/// and their dependencies.
pub fn shutdown_next(
    order: &[String],
    dependents: &BTreeMap<String, Vec<String>>,
    down: impl Fn(&str) -> Option<Down>,
) -> Vec<String> {
    let mut out = Vec::new();
    for name in order.iter().rev() {
        let Some(d) = down(name) else { continue };
        if d.asked {
            continue;
        }
        let dependents_settled =
            dependents.get(name).into_iter().flatten().all(|other| !matches!(down(other), Some(o) if !o.settled));
        if dependents_settled {
            out.push(name.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shutdown_stops_dependents_before_what_they_depend_on() {
        let order: Vec<String> = ["db", "cache", "web"].map(String::from).to_vec();
        let deps_table: BTreeMap<String, Vec<String>> = [
            ("db".to_string(), vec![]),
            ("cache".to_string(), vec![]),
            ("web".to_string(), vec!["db".to_string(), "cache".to_string()]),
        ]
        .into();
        let map = dependents(deps_table.iter().map(|(n, d)| (n, d.as_slice())));
        assert_eq!(map["db"], ["web"]);
        let deps = &map;
        let fresh = Down { asked: false, settled: false };
        assert_eq!(shutdown_next(&order, deps, |_| Some(fresh)), ["web"]);
        let web_stopping = |n: &str| Some(if n == "web" { Down { asked: true, settled: false } } else { fresh });
        assert!(shutdown_next(&order, deps, web_stopping).is_empty());
        let web_gone = |n: &str| Some(if n == "web" { Down { asked: true, settled: true } } else { fresh });
        assert_eq!(shutdown_next(&order, deps, web_gone), ["cache", "db"]);
    }

    #[test]
    fn reload_plan_names_added_removed_and_changed() {
        let cfg = crate::config::parse(
            std::path::Path::new("t.toml"),
            "[services.a]\ncommand = [\"true\"]\n[services.b]\ncommand = [\"true\"]\n[services.c]\ncommand = [\"true\"]\n",
        )
        .unwrap();
        let mut new = cfg.services.clone();
        new.remove("a");
        new.get_mut("b").unwrap().command = vec!["false".into()];
        new.insert("d".into(), cfg.services["c"].clone());
        let plan = reload_plan(&cfg.services, &new, |n| n == "c");
        assert_eq!(plan.added, ["d"]);
        assert_eq!(plan.removed, ["a"]);
        assert_eq!(plan.changed, ["b", "c"]);
        assert!(reload_plan(&cfg.services, &cfg.services, |_| false) == ReloadPlan::default());
    }
}
