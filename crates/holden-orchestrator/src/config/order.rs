//! The order of services: dependency cycles found, and the start order.

use std::collections::BTreeMap;

use super::Service;

/// A dependency cycle as `[a, b, ..., a]`, if there is one.
pub(super) fn find_cycle(services: &BTreeMap<String, Service>) -> Option<Vec<String>> {
    fn visit<'a>(
        n: &'a str,
        services: &'a BTreeMap<String, Service>,
        path: &mut Vec<&'a str>,
        done: &mut Vec<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| *p == n) {
            let mut c: Vec<String> = path[i..].iter().map(|s| s.to_string()).collect();
            c.push(n.to_string());
            return Some(c);
        }
        if done.contains(&n) {
            return None;
        }
        path.push(n);
        for d in &services[n].depends_on {
            if let Some(c) = visit(d, services, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.push(n);
        None
    }
    let mut done = Vec::new();
    services.keys().find_map(|n| visit(n, services, &mut Vec::new(), &mut done))
}

/// Service names in an order where each comes after everything it depends on (start order;
/// reversed, the stop order). The configuration must be free of cycles, as [`super::parse`] ensures.
pub fn start_order(services: &BTreeMap<String, Service>) -> Vec<String> {
    fn visit(n: &str, services: &BTreeMap<String, Service>, out: &mut Vec<String>) {
        if out.iter().any(|o| o == n) {
            return;
        }
        for d in &services[n].depends_on {
            visit(d, services, out);
        }
        out.push(n.to_string());
    }
    let mut out = Vec::new();
    for n in services.keys() {
        visit(n, services, &mut out);
    }
    out
}
