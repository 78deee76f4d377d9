//! Validating a policy against the live catalog, with file:line for each finding.

use tokio_postgres::Client;

use crate::policy::{glob_match, Location, MaskName, Policy, ViewKind, ViewSetDef};

use super::catalog::{read_catalog, Catalog};
use super::ddl::plan;
use super::{fingerprint, CheckFinding, Severity, ViewsError};

/// Checks `policy` against the database behind `client`.
pub async fn check(client: &Client, policy: &Policy) -> Result<Vec<CheckFinding>, ViewsError> {
    let catalog = read_catalog(client, &policy.settings().base_schema).await?;
    Ok(findings(policy, &catalog))
}

/// Every finding of `policy` against `catalog` (pure).
pub fn findings(policy: &Policy, catalog: &Catalog) -> Vec<CheckFinding> {
    let mut out = Vec::new();
    tables(policy, catalog, &mut out);
    unlisted_tables(policy, catalog, &mut out);
    writes(policy, catalog, &mut out);
    // Mask/type fit: generating the DDL reports every mask that does not fit.
    if let Err(problems) = plan(policy, catalog, b"check", &fingerprint(policy)) {
        for p in problems {
            if !out.iter().any(|f| f.message == p.message) {
                out.push(finding(Severity::Error, p.location, p.message));
            }
        }
    }
    out.sort_by(|a, b| (a.severity, &a.location).cmp(&(b.severity, &b.location)));
    out
}

fn finding(severity: Severity, location: Option<Location>, message: String) -> CheckFinding {
    CheckFinding {
        severity,
        location,
        message,
    }
}

fn tables(policy: &Policy, catalog: &Catalog, out: &mut Vec<CheckFinding>) {
    let schema = policy.settings().base_schema;
    for (table, entry) in policy.tables() {
        let Some(base) = catalog.tables.get(table) else {
            out.push(finding(
                Severity::Error,
                policy.locate(entry.file, &["tables", table]),
                format!("table {schema}.{table} does not exist (fix: correct the name or remove the table)"),
            ));
            continue;
        };
        if base.public_grants {
            out.push(finding(
                Severity::Error,
                policy.locate(entry.file, &["tables", table]),
                format!("table {schema}.{table} grants privileges to PUBLIC, so view-set roles can read it directly (fix: REVOKE ALL ON {schema}.{table} FROM PUBLIC)"),
            ));
        }
        for name in entry.get().columns.keys() {
            let loc = policy.locate(entry.file, &["tables", table, "columns", name]);
            let matched = base
                .columns
                .iter()
                .any(|c| c.name == *name || (name.contains('*') && glob_match(name, &c.name)));
            if !matched && !name.contains('*') {
                out.push(finding(
                    Severity::Error,
                    loc,
                    format!("column {table}.{name} does not exist (fix: correct the name; columns are: {})", column_names(base)),
                ));
            } else if !matched {
                out.push(finding(
                    Severity::Warning,
                    loc,
                    format!("pattern {table}.{name} matches no column"),
                ));
            }
        }
        for column in &base.columns {
            if policy.column_def(table, &column.name).is_none() {
                out.push(finding(
                    Severity::Warning,
                    policy.locate(entry.file, &["tables", table, "columns"]),
                    format!("column {table}.{} is not classified: hidden from every view set except personal (fix: classify it under [tables.{table}.columns])", column.name),
                ));
            }
        }
    }
}

fn column_names(table: &super::catalog::CatalogTable) -> String {
    table
        .columns
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn unlisted_tables(policy: &Policy, catalog: &Catalog, out: &mut Vec<CheckFinding>) {
    for table in catalog.tables.keys() {
        if !policy.tables().contains_key(table) {
            out.push(finding(
                Severity::Info,
                None,
                format!("table {table} is not in the policy: no view set can read it"),
            ));
        }
    }
}

fn writes(policy: &Policy, catalog: &Catalog, out: &mut Vec<CheckFinding>) {
    for (name, entry) in policy.view_sets() {
        let set = entry.get();
        for (table, classes) in &set.write {
            let Some(base) = catalog.tables.get(table) else {
                continue;
            };
            for column in &base.columns {
                let resolved = policy.mask_for(set, table, &column.name);
                let wanted = resolved.class.is_some_and(|c| classes.contains(&c));
                if wanted && resolved.spec.mask != MaskName::Keep {
                    out.push(finding(
                        Severity::Info,
                        policy.locate(entry.file, &["view_sets", name, "write", table]),
                        format!(
                            "view set {name}: {table}.{} is masked ({}), so it is read-only",
                            column.name,
                            mask_name(set, resolved.spec.mask)
                        ),
                    ));
                }
            }
        }
    }
}

fn mask_name(set: &ViewSetDef, mask: MaskName) -> String {
    let kind = if set.kind == ViewKind::Selective {
        "selective"
    } else {
        set.kind.name()
    };
    format!("{kind} mask {}", format!("{mask:?}").to_lowercase())
}
