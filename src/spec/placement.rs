//! Validation of the swarm placement options (issue 14): `placement.constraints` (Swarm's
//! `<attribute> == <value>` / `!=` grammar, checked here so a typo is a file:line:field
//! error rather than a service the engine refuses) and `placement.preferences` (`spread`
//! over a node attribute). Pure: problems go to the caller's `err`. `maxReplicasPerNode`
//! is a plain range, checked in `workload`.

use super::locate::{fpath, FieldPath};
use super::model::Placement;
use super::raw;

/// Most constraints or preferences in one spec.
const MAX_ITEMS: usize = 32;

/// A node attribute a constraint or preference may name, or why not.
fn attribute_problem(attr: &str) -> Option<String> {
    const PLAIN: [&str; 5] = [
        "node.id",
        "node.hostname",
        "node.role",
        "node.platform.os",
        "node.platform.arch",
    ];
    if PLAIN.contains(&attr) {
        return None;
    }
    for prefix in ["node.labels.", "engine.labels."] {
        if let Some(key) = attr.strip_prefix(prefix) {
            let ok = !key.is_empty()
                && key.len() <= 128
                && key
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
            return (!ok).then(|| {
                format!("`{prefix}` needs a label key of letters, digits, `.`, `-` or `_`")
            });
        }
    }
    Some(format!(
        "`{}` is not a node attribute: use node.id, node.hostname, node.role, \
         node.platform.os, node.platform.arch, node.labels.<key> or engine.labels.<key>",
        attr.escape_debug()
    ))
}

/// Why `constraint` is not `<attribute> == <value>` / `!=`, or None.
fn constraint_problem(constraint: &str) -> Option<String> {
    let (attr, value) = match (constraint.split_once("=="), constraint.split_once("!=")) {
        (Some(eq), None) => eq,
        (None, Some(ne)) => ne,
        _ => {
            return Some(format!(
                "`{}` is not a constraint: write `<attribute> == <value>` or `<attribute> != <value>`, e.g. `node.role == manager`",
                constraint.escape_debug()
            ))
        }
    };
    let (attr, value) = (attr.trim(), value.trim());
    if let Some(m) = attribute_problem(attr) {
        return Some(m);
    }
    if value.is_empty()
        || value.len() > 256
        || value
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || c == '=' || c == '!')
    {
        return Some(format!(
            "the value of `{attr}` must be 1 to 256 characters without spaces, `=` or `!`"
        ));
    }
    if attr == "node.role" && !matches!(value, "manager" | "worker") {
        return Some(format!(
            "node.role is `manager` or `worker`, not `{}`",
            value.escape_debug()
        ));
    }
    None
}

/// `placement` -> the model, pushing one problem per bad entry.
pub(super) fn check_placement(
    err: &mut impl FnMut(FieldPath, String),
    placement: Option<&raw::Placement>,
) -> Placement {
    let Some(p) = placement else {
        return Placement::default();
    };
    let mut out = Placement::default();
    let constraints = p.constraints.as_deref().unwrap_or_default();
    if constraints.len() > MAX_ITEMS {
        err(
            fpath!["spec", "placement", "constraints"],
            format!("at most {MAX_ITEMS} constraints"),
        );
    }
    for (i, c) in constraints.iter().enumerate().take(MAX_ITEMS) {
        match constraint_problem(c) {
            Some(m) => err(fpath!["spec", "placement", "constraints", i], m),
            None => out.constraints.push(normalize(c)),
        }
    }
    let preferences = p.preferences.as_deref().unwrap_or_default();
    if preferences.len() > MAX_ITEMS {
        err(
            fpath!["spec", "placement", "preferences"],
            format!("at most {MAX_ITEMS} preferences"),
        );
    }
    for (i, pref) in preferences.iter().enumerate().take(MAX_ITEMS) {
        match attribute_problem(pref.spread.trim()) {
            Some(m) => err(fpath!["spec", "placement", "preferences", i, "spread"], m),
            None => out.preferences.push(pref.spread.trim().to_string()),
        }
    }
    out
}

/// `node.role==manager` and `node.role == manager` are one constraint: spaces around the
/// operator are dropped, so the service spec (and the plan's comparison) sees one form.
fn normalize(constraint: &str) -> String {
    let op = if constraint.contains("==") {
        "=="
    } else {
        "!="
    };
    let (attr, value) = constraint.split_once(op).unwrap_or((constraint, ""));
    format!("{}{op}{}", attr.trim(), value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(constraints: &[&str], spreads: &[&str]) -> (Placement, Vec<String>) {
        let raw = raw::Placement {
            constraints: Some(constraints.iter().map(|c| c.to_string()).collect()),
            preferences: Some(
                spreads
                    .iter()
                    .map(|s| raw::PlacementPreference {
                        spread: s.to_string(),
                    })
                    .collect(),
            ),
        };
        let mut problems = Vec::new();
        let placement = check_placement(
            &mut |at: FieldPath, m: String| problems.push(format!("{at}: {m}")),
            Some(&raw),
        );
        (placement, problems)
    }

    #[test]
    fn good_constraints_are_normalized() {
        let (p, problems) = check(
            &[
                "node.role == manager",
                "node.labels.zone!=eu-1",
                "engine.labels.ssd==true",
            ],
            &["node.labels.zone"],
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            p.constraints,
            vec![
                "node.role==manager",
                "node.labels.zone!=eu-1",
                "engine.labels.ssd==true"
            ]
        );
        assert_eq!(p.preferences, vec!["node.labels.zone"]);
    }

    #[test]
    fn bad_constraints_name_the_field_and_the_fix() {
        let (p, problems) = check(
            &[
                "node.role = manager",
                "node.rol==manager",
                "node.role==boss",
                "node.labels.==x",
                "node.hostname==",
            ],
            &["zone"],
        );
        assert!(p.constraints.is_empty() && p.preferences.is_empty());
        assert_eq!(problems.len(), 6, "{problems:?}");
        assert!(
            problems[0].contains("spec.placement.constraints[0]"),
            "{problems:?}"
        );
        assert!(problems[0].contains("is not a constraint"));
        assert!(problems[1].contains("is not a node attribute"));
        assert!(problems[2].contains("`manager` or `worker`"));
        assert!(problems[3].contains("label key"));
        assert!(problems[4].contains("1 to 256 characters"));
        assert!(problems[5].contains("spec.placement.preferences[0].spread"));
    }
}
