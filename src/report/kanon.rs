//! k-anonymity of the anonymous view sets: how many rows share each
//! combination of quasi-identifier values, measured over the installed
//! views as each of the set's backend login roles reads them.
//!
//! The quasi-identifiers are the view set's `quasi_identifiers`, or by
//! default the subject table's personal columns of a generalizing or
//! categorical kind (date of birth, date, postal code, city, category) that
//! the set shows.

use std::collections::BTreeMap;

use tokio_postgres::{Client, NoTls};

use crate::policy::{Class, Kind, MaskName, Policy, ViewKind, ViewSetDef};
use crate::views::{ident, login_password, Catalog};

use super::facts::{Groups, KFacts};

/// Column kinds that are quasi-identifiers by default.
const DEFAULT_KINDS: [Kind; 5] = [
    Kind::DateOfBirth,
    Kind::Date,
    Kind::PostalCode,
    Kind::City,
    Kind::Category,
];

/// Upper bounds of the group-size bands of the histogram.
const BANDS: [(u64, &str); 7] = [
    (1, "1"),
    (4, "2–4"),
    (9, "5–9"),
    (19, "10–19"),
    (49, "20–49"),
    (99, "50–99"),
    (u64::MAX, "100+"),
];

/// How the report logs in as view-set login roles.
pub struct Logins {
    /// Host, port, database and timeouts; user and password are set per role.
    pub config: tokio_postgres::Config,
    /// The master secret the login passwords derive from.
    pub secret: Vec<u8>,
}

/// Measures every anonymous view set of `policy` over the views it installed.
pub async fn measure(logins: &Logins, policy: &Policy, catalog: &Catalog) -> Vec<KFacts> {
    let mut out = Vec::new();
    for (name, entry) in policy.view_sets() {
        let set = entry.get();
        if set.kind != ViewKind::Anonymous {
            continue;
        }
        let from_policy = !set.quasi_identifiers.is_empty();
        let by_table = quasi_identifiers(policy, set, catalog);
        for role in policy
            .login_roles()
            .into_iter()
            .filter(|r| &r.view_set == name)
        {
            let client = login(logins, &role.name).await;
            for (table, columns) in &by_table {
                let measured = match &client {
                    Ok(client) => {
                        let view = format!("{}.{}", ident(&policy.schema_of(name)), ident(table));
                        groups(client, &view, columns, set.min_group_size).await
                    }
                    Err(e) => Err(e.clone()),
                };
                out.push(KFacts {
                    view_set: name.clone(),
                    configured_k: set.min_group_size,
                    login_role: role.name.clone(),
                    table: table.clone(),
                    quasi_identifiers: columns.clone(),
                    from_policy,
                    measured,
                });
            }
        }
    }
    out
}

/// The quasi-identifier columns of `set`, per table.
fn quasi_identifiers(
    policy: &Policy,
    set: &ViewSetDef,
    catalog: &Catalog,
) -> BTreeMap<String, Vec<String>> {
    let mut by_table: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if !set.quasi_identifiers.is_empty() {
        for field in &set.quasi_identifiers {
            if let Some((table, column)) = field.split_once('.') {
                by_table
                    .entry(table.to_owned())
                    .or_default()
                    .push(column.to_owned());
            }
        }
        return by_table;
    }
    let Some(subject) = policy.subject() else {
        return by_table;
    };
    let Some(table) = catalog.tables.get(&subject.table) else {
        return by_table;
    };
    let columns: Vec<String> = table
        .columns
        .iter()
        .filter(|c| {
            let def = policy
                .column_def(&subject.table, &c.name)
                .map(|(_, d, _)| d);
            let quasi = def.is_some_and(|d| {
                d.class == Class::Personal && d.kind.is_some_and(|k| DEFAULT_KINDS.contains(&k))
            });
            quasi && policy.mask_for(set, &subject.table, &c.name).spec.mask != MaskName::Hide
        })
        .map(|c| c.name.clone())
        .collect();
    if !columns.is_empty() {
        by_table.insert(subject.table.clone(), columns);
    }
    by_table
}

async fn login(logins: &Logins, role: &str) -> Result<Client, String> {
    let mut config = logins.config.clone();
    config
        .user(role)
        .password(login_password(&logins.secret, role));
    let (client, connection) = config
        .connect(NoTls)
        .await
        .map_err(|e| format!("cannot log in as {role}: {e}"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "report connection failed");
        }
    });
    Ok(client)
}

/// Group sizes of `view` over `columns`, with `k` the configured minimum.
async fn groups(
    client: &Client,
    view: &str,
    columns: &[String],
    k: Option<u32>,
) -> Result<Groups, String> {
    let keys: Vec<String> = columns.iter().map(|c| ident(c)).collect();
    let sql = format!(
        "SELECT n, count(*) FROM (SELECT count(*) AS n FROM {view} GROUP BY {}) g \
         GROUP BY n ORDER BY n",
        keys.join(", ")
    );
    let rows = client
        .query(&sql, &[])
        .await
        .map_err(|e| format!("{view}: {e}"))?;
    let sizes: Vec<(u64, u64)> = rows
        .iter()
        .map(|r| (count(r.get(0)), count(r.get(1))))
        .collect();
    Ok(summarize(&sizes, u64::from(k.unwrap_or(0))))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// The measurement from (group size, number of groups) pairs, smallest
/// size first.
fn summarize(sizes: &[(u64, u64)], k: u64) -> Groups {
    let below: Vec<&(u64, u64)> = sizes.iter().filter(|(n, _)| *n < k).collect();
    let mut histogram: Vec<(String, u64)> = BANDS.iter().map(|(_, l)| (l.to_string(), 0)).collect();
    for (n, groups) in sizes {
        if let Some(band) = BANDS.iter().position(|(upper, _)| n <= upper) {
            histogram[band].1 += groups;
        }
    }
    Groups {
        rows: sizes.iter().map(|(n, g)| n * g).sum(),
        groups: sizes.iter().map(|(_, g)| g).sum(),
        min: sizes.first().map(|(n, _)| *n),
        groups_below_k: below.iter().map(|(_, g)| g).sum(),
        rows_below_k: below.iter().map(|(n, g)| n * g).sum(),
        histogram,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_become_k_and_bands() {
        let g = summarize(&[(1, 2), (3, 1), (5, 4), (120, 1)], 5);
        assert_eq!(g.rows, 2 + 3 + 20 + 120);
        assert_eq!(g.groups, 8);
        assert_eq!(g.min, Some(1));
        assert_eq!(g.groups_below_k, 3);
        assert_eq!(g.rows_below_k, 5);
        let bands: Vec<u64> = g.histogram.iter().map(|(_, n)| *n).collect();
        assert_eq!(bands, vec![2, 1, 4, 0, 0, 0, 1]);
        assert_eq!(summarize(&[], 5).min, None);
    }
}
