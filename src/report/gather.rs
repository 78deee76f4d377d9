//! Facts from the policy and the live database: the logical data model,
//! the view sets with their views as installed, roles and users, and the
//! drift between policy and database.

use std::collections::BTreeMap;

use tokio_postgres::Client;

use crate::policy::{kind_name, ColumnDef, MaskName, MaskSpec, Policy, ViewKind, ViewSetDef};
use crate::views::{self, Catalog};

use super::facts::{ColumnModel, DriftFacts, RoleFacts, TableModel, ViewSetFacts, VIEW_KINDS};
use super::ReportError;

/// The protected tables with each column's classification, kind and mask
/// per view kind.
pub fn data_model(policy: &Policy, catalog: &Catalog) -> Vec<TableModel> {
    policy
        .tables()
        .iter()
        .map(|(name, entry)| {
            let def = entry.get();
            let columns = match catalog.tables.get(name) {
                Some(table) => table
                    .columns
                    .iter()
                    .map(|c| {
                        let column_def = policy.column_def(name, &c.name).map(|(_, d, _)| d);
                        column_model(policy, name, &c.name, Some(&c.type_name), column_def)
                    })
                    .collect(),
                None => def
                    .columns
                    .iter()
                    .map(|(column, d)| column_model(policy, name, column, None, Some(&d.0)))
                    .collect(),
            };
            TableModel {
                name: name.clone(),
                exists: catalog.tables.contains_key(name),
                erase: def.erase.map(|e| e.name().to_owned()),
                retention: def
                    .retention
                    .as_ref()
                    .map(|r| format!("{} older than {}", r.column, r.after)),
                columns,
            }
        })
        .collect()
}

fn column_model(
    policy: &Policy,
    table: &str,
    column: &str,
    type_name: Option<&str>,
    def: Option<&ColumnDef>,
) -> ColumnModel {
    ColumnModel {
        name: column.to_owned(),
        type_name: type_name.map(str::to_owned),
        class: def.map(|d| d.class.name().to_owned()),
        kind: def.and_then(|d| d.kind).map(kind_name),
        masks: VIEW_KINDS
            .iter()
            .map(|&kind| describe_mask(&policy.mask_for(&kind_set(kind), table, column).spec))
            .collect(),
    }
}

/// A view set of `kind` with nothing else set: the masks every set of the
/// kind shares.
fn kind_set(kind: ViewKind) -> ViewSetDef {
    ViewSetDef {
        description: None,
        kind,
        min_group_size: None,
        quasi_identifiers: Vec::new(),
        purpose: None,
        disclosure: None,
        anonymize: Vec::new(),
        row_filters: BTreeMap::new(),
        write: BTreeMap::new(),
        delete: Vec::new(),
    }
}

/// A mask in a few words: `keep`, `hidden`, `partial (last 3)`, ...
fn describe_mask(spec: &MaskSpec) -> String {
    let number = |n: f64| format!("{n}");
    match spec.mask {
        MaskName::Keep => "keep".into(),
        MaskName::Hide => "hidden".into(),
        MaskName::Null => "null".into(),
        MaskName::Email => "email domain".into(),
        MaskName::Constant => format!("constant {}", spec.value.as_deref().unwrap_or("")),
        MaskName::Partial => {
            let mut kept = Vec::new();
            if let Some(n) = spec.keep_first {
                kept.push(format!("first {n}"));
            }
            if let Some(n) = spec.keep_last {
                kept.push(format!("last {n}"));
            }
            format!("partial ({})", kept.join(", "))
        }
        MaskName::Pseudonym => match &spec.domain {
            Some(domain) => format!("pseudonym ({domain})"),
            None => "pseudonym".into(),
        },
        MaskName::Generalize => match (spec.width, spec.unit, spec.prefix) {
            (Some(w), _, _) => format!("bands of {}", number(w)),
            (_, Some(unit), _) => format!("to the {}", format!("{unit:?}").to_lowercase()),
            (_, _, Some(n)) => format!("first {n} characters"),
            _ => "generalize".into(),
        },
        MaskName::Noise => match (spec.amount, spec.days) {
            (Some(a), _) => format!("noise ±{}%", number(a * 100.0)),
            (_, Some(d)) => format!("noise ±{d} days"),
            _ => "noise".into(),
        },
        MaskName::Sql => format!("sql {}", spec.name.as_deref().unwrap_or("")),
    }
}

const VIEWS: &str = "
SELECT c.relname::text, pg_get_viewdef(c.oid, true)
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'v'
ORDER BY c.relname";

/// Every view set with its settings, login roles and installed views.
pub async fn view_sets(client: &Client, policy: &Policy) -> Result<Vec<ViewSetFacts>, ReportError> {
    let roles = policy.login_roles();
    let mut out = Vec::new();
    for (name, entry) in policy.view_sets() {
        let set = entry.get();
        let schema = policy.schema_of(name);
        let views = client
            .query(VIEWS, &[&schema])
            .await?
            .iter()
            .map(|row| (row.get(0), row.get(1)))
            .collect();
        out.push(ViewSetFacts {
            name: name.clone(),
            kind: set.kind.name().to_owned(),
            description: set.description.clone(),
            schema,
            settings: settings(set),
            row_filters: set
                .row_filters
                .iter()
                .map(|(t, f)| (t.clone(), f.clone()))
                .collect(),
            login_roles: roles
                .iter()
                .filter(|r| &r.view_set == name)
                .map(|r| r.name.clone())
                .collect(),
            views,
        });
    }
    Ok(out)
}

/// The kind-specific settings of a view set, in words.
fn settings(set: &ViewSetDef) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(k) = set.min_group_size {
        out.push(format!("aggregates only, groups of at least {k} rows"));
    }
    if let Some(purpose) = &set.purpose {
        out.push(format!("purpose: {purpose}"));
    }
    if let Some(disclosure) = &set.disclosure {
        out.push(format!("disclosure to: {disclosure}"));
    }
    if !set.anonymize.is_empty() {
        out.push(format!("anonymized: {}", set.anonymize.join(", ")));
    }
    if !set.quasi_identifiers.is_empty() {
        out.push(format!(
            "quasi-identifiers: {}",
            set.quasi_identifiers.join(", ")
        ));
    }
    for (table, classes) in &set.write {
        let names: Vec<&str> = classes.iter().map(|c| c.name()).collect();
        out.push(format!("may write {table} ({})", names.join(", ")));
    }
    if !set.delete.is_empty() {
        out.push(format!("may delete from {}", set.delete.join(", ")));
    }
    if set.write.is_empty() && set.delete.is_empty() {
        out.push("read-only".into());
    }
    out
}

/// Every role with the view sets it may use and its users.
pub fn roles(policy: &Policy) -> Vec<RoleFacts> {
    policy
        .roles()
        .iter()
        .map(|(name, entry)| {
            let role = entry.get();
            let users = policy
                .users()
                .iter()
                .filter(|(_, u)| &u.get().role == name)
                .map(|(user, u)| {
                    let attributes: Vec<String> = u
                        .get()
                        .attributes
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect();
                    (user.clone(), attributes.join(", "))
                })
                .collect();
            RoleFacts {
                name: name.clone(),
                description: role.description.clone(),
                admin: role.admin,
                view_sets: role.view_sets.clone(),
                default: role.default.clone(),
                users,
            }
        })
        .collect()
}

/// The drift between policy and database: fingerprints, `check` findings
/// and what `apply` would change (computed in a rolled-back transaction).
pub async fn drift(
    client: &Client,
    policy: &Policy,
    catalog: &Catalog,
    secret: &[u8],
) -> Result<DriftFacts, ReportError> {
    let (changes, changes_error) = match views::drift(client, policy, secret).await {
        Ok(changes) => (changes, None),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    Ok(DriftFacts {
        policy_fingerprint: views::fingerprint(policy),
        installed_fingerprint: views::installed_fingerprint(client, policy).await?,
        findings: views::findings(policy, catalog)
            .iter()
            .map(ToString::to_string)
            .collect(),
        changes,
        changes_error,
    })
}
