//! Policy + catalog → the DDL that installs the view sets, their login
//! roles and pgveil's private tables. Pure: no database access.

use crate::policy::model::TableDef;
use crate::policy::{Basis, Class, Location, LoginRole, MaskName, Policy, ViewKind, ViewSetDef};

use super::catalog::{Catalog, CatalogTable};
use super::mask_sql::{ident, literal, mask_expression, MaskContext, BASE_ALIAS};
use super::masked_index::{self, MaskedColumn};
use super::secret::{hmac_pads, mask_key, scram_verifier};

/// Comment that marks a schema as a pgveil view set.
pub const SCHEMA_MARK: &str = "pgveil view set";
/// Comment that marks a role as a pgveil login role.
pub const ROLE_MARK: &str = "pgveil login role";

/// One row of the private key table (kept out of printed DDL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// The view set.
    pub view_set: String,
    /// `pseudonym` or `noise`.
    pub purpose: String,
    /// HMAC inner padded key.
    pub ipad: Vec<u8>,
    /// HMAC outer padded key.
    pub opad: Vec<u8>,
}

/// One step of an installation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// An SQL statement.
    Sql(String),
    /// Key rows, inserted with bind parameters so they never appear in SQL text.
    Keys(Vec<KeyRow>),
}

/// Why the DDL could not be generated: a mask or table that does not fit the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DdlProblem {
    /// The policy line at fault, if known.
    pub location: Option<Location>,
    /// What does not fit.
    pub message: String,
}

/// All steps that install `policy` over the tables of `catalog`.
pub fn plan(
    policy: &Policy,
    catalog: &Catalog,
    secret: &[u8],
    fingerprint: &str,
) -> Result<Vec<Step>, Vec<DdlProblem>> {
    let mut b = Builder {
        policy,
        catalog,
        private: policy.settings().private_schema,
        steps: Vec::new(),
        problems: Vec::new(),
        masked: Vec::new(),
    };
    let roles = policy.login_roles();
    b.private_tables();
    b.cleanup(&roles);
    for role in &roles {
        b.login_role(role, secret);
    }
    b.keys(secret);
    b.attributes(&roles);
    for (name, set) in policy.view_sets() {
        let set_roles: Vec<&LoginRole> = roles.iter().filter(|r| &r.view_set == name).collect();
        b.view_set(name, set.get(), &set_roles);
    }
    let base_schema = policy.settings().base_schema;
    for sql in masked_index::statements(&base_schema, catalog, &b.masked) {
        b.sql(sql);
    }
    b.sql(format!(
        "DELETE FROM {p}.installed; INSERT INTO {p}.installed (fingerprint) VALUES ({})",
        literal(fingerprint),
        p = ident(&b.private)
    ));
    if b.problems.is_empty() {
        Ok(b.steps)
    } else {
        Err(b.problems)
    }
}

/// Renders steps as SQL text; key material is replaced by a comment.
pub fn render(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|s| match s {
            Step::Sql(sql) => sql.clone(),
            Step::Keys(rows) => {
                let sets: Vec<String> = rows
                    .iter()
                    .map(|r| format!("{}/{}", r.view_set, r.purpose))
                    .collect();
                format!(
                    "-- mask keys for {} are inserted with bind parameters (not shown)",
                    sets.join(", ")
                )
            }
        })
        .collect()
}

struct Builder<'a> {
    policy: &'a Policy,
    catalog: &'a Catalog,
    private: String,
    steps: Vec<Step>,
    problems: Vec<DdlProblem>,
    /// Every masked column of every view, for [`masked_index`].
    masked: Vec<MaskedColumn>,
}

impl Builder<'_> {
    fn sql(&mut self, sql: String) {
        self.steps.push(Step::Sql(sql));
    }

    fn problem(&mut self, location: Option<Location>, message: String) {
        self.problems.push(DdlProblem { location, message });
    }

    fn private_tables(&mut self) {
        let p = ident(&self.private);
        let base = ident(&self.policy.settings().base_schema);
        self.sql(format!("CREATE SCHEMA IF NOT EXISTS {p}"));
        self.sql(format!("REVOKE ALL ON SCHEMA {p} FROM PUBLIC"));
        self.sql(format!(
            "CREATE TABLE IF NOT EXISTS {p}.keys (view_set text NOT NULL, purpose text NOT NULL, \
             ipad bytea NOT NULL, opad bytea NOT NULL, PRIMARY KEY (view_set, purpose))"
        ));
        self.sql(format!(
            "CREATE TABLE IF NOT EXISTS {p}.login_attributes (login_role text NOT NULL, \
             attribute text NOT NULL, value text NOT NULL, PRIMARY KEY (login_role, attribute))"
        ));
        self.sql(format!(
            "CREATE TABLE IF NOT EXISTS {p}.installed (fingerprint text NOT NULL)"
        ));
        self.sql(format!(
            "REVOKE ALL ON {p}.keys, {p}.login_attributes, {p}.installed FROM PUBLIC"
        ));
        self.sql(format!("REVOKE CREATE ON SCHEMA {base} FROM PUBLIC"));
    }

    fn cleanup(&mut self, roles: &[LoginRole]) {
        let schemas: Vec<String> = self
            .policy
            .view_sets()
            .keys()
            .map(|n| literal(&self.policy.schema_of(n)))
            .collect();
        let names: Vec<String> = roles.iter().map(|r| literal(&r.name)).collect();
        self.sql(format!(
            "DO $pgveil$ DECLARE r record; BEGIN \
             FOR r IN SELECT nspname FROM pg_namespace WHERE obj_description(oid, 'pg_namespace') LIKE '{SCHEMA_MARK}%' \
             AND nspname <> ALL (ARRAY[{}]::name[]) LOOP EXECUTE format('DROP SCHEMA %I CASCADE', r.nspname); END LOOP; \
             FOR r IN SELECT rolname FROM pg_roles WHERE shobj_description(oid, 'pg_authid') LIKE '{ROLE_MARK}%' \
             AND rolname <> ALL (ARRAY[{}]::name[]) LOOP EXECUTE format('DROP OWNED BY %I', r.rolname); \
             EXECUTE format('DROP ROLE %I', r.rolname); END LOOP; END $pgveil$",
            schemas.join(", "),
            names.join(", ")
        ));
    }

    fn login_role(&mut self, role: &LoginRole, secret: &[u8]) {
        let name = ident(&role.name);
        let lit = literal(&role.name);
        let schema = ident(&self.policy.schema_of(&role.view_set));
        let p = ident(&self.private);
        let base = ident(&self.policy.settings().base_schema);
        self.sql(format!(
            "DO $pgveil$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {lit}) \
             THEN CREATE ROLE {name}; END IF; END $pgveil$"
        ));
        self.sql(format!(
            "ALTER ROLE {name} WITH LOGIN NOINHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE \
             NOREPLICATION NOBYPASSRLS PASSWORD {}",
            literal(&scram_verifier(secret, &role.name))
        ));
        self.sql(format!(
            "ALTER ROLE {name} SET search_path = {schema}, pg_catalog"
        ));
        self.sql(format!(
            "COMMENT ON ROLE {name} IS {}",
            literal(&format!("{ROLE_MARK} of view set {}", role.view_set))
        ));
        self.sql(format!(
            "DO $pgveil$ DECLARE r record; BEGIN \
             FOR r IN SELECT m.roleid::regrole::text AS grp FROM pg_auth_members m \
             JOIN pg_roles u ON u.oid = m.member WHERE u.rolname = {lit} LOOP \
             EXECUTE format('REVOKE %s FROM %I', r.grp, {lit}); END LOOP; \
             EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), {lit}); END $pgveil$"
        ));
        self.sql(format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA {base} FROM {name}"
        ));
        self.sql(format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA {p} FROM {name}"
        ));
    }

    fn keys(&mut self, secret: &[u8]) {
        let mut rows = Vec::new();
        for name in self.policy.view_sets().keys() {
            for purpose in ["pseudonym", "noise"] {
                let (ipad, opad) = hmac_pads(&mask_key(secret, name, purpose));
                rows.push(KeyRow {
                    view_set: name.clone(),
                    purpose: purpose.into(),
                    ipad,
                    opad,
                });
            }
        }
        self.steps.push(Step::Keys(rows));
    }

    fn attributes(&mut self, roles: &[LoginRole]) {
        let p = ident(&self.private);
        let mut values = Vec::new();
        for role in roles {
            for (attr, value) in &role.attributes {
                values.push(format!(
                    "({}, {}, {})",
                    literal(&role.name),
                    literal(attr),
                    literal(value)
                ));
            }
        }
        let mut sql = format!("DELETE FROM {p}.login_attributes");
        if !values.is_empty() {
            sql.push_str(&format!(
                "; INSERT INTO {p}.login_attributes (login_role, attribute, value) VALUES {}",
                values.join(", ")
            ));
        }
        self.sql(sql);
    }

    fn view_set(&mut self, name: &str, set: &ViewSetDef, roles: &[&LoginRole]) {
        let policy = self.policy;
        let catalog = self.catalog;
        let schema = ident(&policy.schema_of(name));
        self.sql(format!("DROP SCHEMA IF EXISTS {schema} CASCADE"));
        self.sql(format!("CREATE SCHEMA {schema}"));
        self.sql(format!(
            "COMMENT ON SCHEMA {schema} IS {}",
            literal(&format!("{SCHEMA_MARK} {name} ({})", set.kind.name()))
        ));
        for role in roles {
            self.sql(format!(
                "GRANT USAGE ON SCHEMA {schema} TO {}",
                ident(&role.name)
            ));
        }
        for (table, entry) in policy.tables() {
            let Some(base) = catalog.tables.get(table) else {
                let loc = policy.locate(entry.file, &["tables", table]);
                self.problem(loc, format!("table {table} does not exist in the database"));
                continue;
            };
            let view = ViewBuilder {
                b: self,
                name,
                set,
                table,
                def: entry.get(),
                base,
            };
            if let Some((sql, writable)) = view.build() {
                self.sql(sql);
                self.grants(&schema, table, set, roles, &writable);
            }
        }
    }

    fn grants(
        &mut self,
        schema: &str,
        table: &str,
        set: &ViewSetDef,
        roles: &[&LoginRole],
        writable: &[String],
    ) {
        let view = format!("{schema}.{}", ident(table));
        for role in roles {
            let role = ident(&role.name);
            self.sql(format!("GRANT SELECT ON {view} TO {role}"));
            if !writable.is_empty() {
                let cols: Vec<String> = writable.iter().map(|c| ident(c)).collect();
                let cols = cols.join(", ");
                self.sql(format!(
                    "GRANT INSERT ({cols}), UPDATE ({cols}) ON {view} TO {role}"
                ));
            }
            if set.delete.iter().any(|t| t == table) {
                self.sql(format!("GRANT DELETE ON {view} TO {role}"));
            }
        }
    }
}

/// `security_barrier` for a view that hides rows. Such a view must keep the
/// caller's quals above its own, or a leaky function in a WHERE clause could
/// see the rows it hides. A view without conditions hides no rows: the
/// caller's quals only ever see its masked output columns, so PostgreSQL may
/// pull it up into the query and use the base table's indexes and statistics.
fn barrier_option(conditions: &[String]) -> &'static str {
    if conditions.is_empty() {
        ""
    } else {
        " WITH (security_barrier = true)"
    }
}

struct ViewBuilder<'a, 'b> {
    b: &'a mut Builder<'b>,
    name: &'a str,
    set: &'a ViewSetDef,
    table: &'a str,
    def: &'a TableDef,
    base: &'a CatalogTable,
}

impl ViewBuilder<'_, '_> {
    /// The CREATE VIEW statement and the columns the view set may write.
    fn build(self) -> Option<(String, Vec<String>)> {
        let policy = self.b.policy;
        let settings = policy.settings();
        let row_key = self.row_key();
        let write_classes: Vec<Class> = self.set.write.get(self.table).cloned().unwrap_or_default();
        let mut select = Vec::new();
        let mut writable = Vec::new();
        for column in &self.base.columns {
            let resolved = policy.mask_for(self.set, self.table, &column.name);
            let ctx = MaskContext {
                private_schema: &settings.private_schema,
                view_set: self.name,
                table: self.table,
                row_key: row_key.clone(),
                admin_expression: resolved
                    .spec
                    .name
                    .as_deref()
                    .and_then(|n| policy.admin_expression(n)),
            };
            match mask_expression(&ctx, column, &resolved.spec) {
                Ok(Some(expr)) => {
                    let alias = format!(" AS {}", ident(&column.name));
                    if let Some(expression) = expr.strip_suffix(&alias) {
                        self.b.masked.push(MaskedColumn {
                            table: self.table.to_string(),
                            column: column.name.clone(),
                            expression: expression.to_string(),
                        });
                    }
                    select.push(expr)
                }
                Ok(None) => continue,
                Err(e) => {
                    let msg = format!(
                        "view set {}: {}.{} ({}): {e}",
                        self.name, self.table, column.name, column.type_name
                    );
                    self.b.problem(resolved.location, msg);
                    continue;
                }
            }
            let keep = resolved.spec.mask == MaskName::Keep;
            if keep && resolved.class.is_some_and(|c| write_classes.contains(&c)) {
                writable.push(column.name.clone());
            }
        }
        let conditions = self.conditions();
        let mut sql = format!(
            "CREATE VIEW {}.{}{} AS SELECT {} FROM {}.{} {BASE_ALIAS}",
            ident(&policy.schema_of(self.name)),
            ident(self.table),
            barrier_option(&conditions),
            select.join(", "),
            ident(&settings.base_schema),
            ident(self.table),
        );
        if !conditions.is_empty() {
            sql.push_str(" WHERE ");
            sql.push_str(&conditions.join(" AND "));
        }
        let writes = !self.set.write.is_empty() || !self.set.delete.is_empty();
        if writes && !conditions.is_empty() {
            sql.push_str(" WITH CASCADED CHECK OPTION");
        }
        Some((sql, writable))
    }

    fn row_key(&self) -> Option<String> {
        let key = self
            .def
            .key
            .clone()
            .unwrap_or_else(|| self.base.primary_key.clone());
        if key.is_empty() {
            return None;
        }
        let parts: Vec<String> = key
            .iter()
            .map(|k| format!("({BASE_ALIAS}.{})::text", ident(k)))
            .collect();
        Some(format!("concat_ws(',', {})", parts.join(", ")))
    }

    fn conditions(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(filter) = self.set.row_filters.get(self.table) {
            out.push(format!("({})", self.substitute(filter)));
        }
        let purpose = match self.set.kind {
            ViewKind::OptOut | ViewKind::Selective => self.set.purpose.as_deref(),
            _ => None,
        };
        if let Some(purpose) = purpose {
            if let Some(cond) = self.consent_condition(purpose) {
                out.push(cond);
            }
        }
        out
    }

    fn substitute(&self, filter: &str) -> String {
        let p = ident(&self.b.policy.settings().private_schema);
        let mut text = filter.to_string();
        for (range, attr) in crate::policy::user_placeholders(filter).into_iter().rev() {
            text.replace_range(
                range,
                &format!(
                    "(SELECT a.value FROM {p}.login_attributes a \
                     WHERE a.login_role = current_user::text AND a.attribute = {})",
                    literal(&attr)
                ),
            );
        }
        text
    }

    fn subject_column(&self) -> Option<String> {
        let subject = self.b.policy.subject()?;
        if self.table == subject.table {
            return Some(subject.key.clone());
        }
        if let Some(s) = &self.def.subject {
            return Some(s.clone());
        }
        if let Some(consent) = policy_consent_of(self.b.policy, self.table) {
            return Some(consent);
        }
        self.base
            .foreign_keys
            .iter()
            .find(|fk| fk.ref_table == subject.table && fk.ref_column == subject.key)
            .map(|fk| fk.column.clone())
    }

    fn consent_condition(&self, purpose: &str) -> Option<String> {
        let policy = self.b.policy;
        let subject_col = self.subject_column()?;
        let def = policy.purpose(purpose)?;
        let base = ident(&policy.settings().base_schema);
        let subject = format!("{BASE_ALIAS}.{}", ident(&subject_col));
        let (table, match_col, test) = match (&def.column, policy.consent()) {
            (Some(column), _) => {
                let (table, col) = column.split_once('.')?;
                let key = self.subject_key_of(table)?;
                let value = format!("c.{}", ident(col));
                (table.to_string(), key, value)
            }
            (None, Some(consent)) => {
                let test = format!(
                    "c.{} = {} AND c.{}",
                    ident(&consent.purpose_column),
                    literal(purpose),
                    ident(&consent.granted_column)
                );
                (consent.table.clone(), consent.subject_column.clone(), test)
            }
            (None, None) => return None,
        };
        let from = format!(
            "SELECT 1 FROM {base}.{} c WHERE c.{} = {subject} AND {test}",
            ident(&table),
            ident(&match_col)
        );
        Some(match def.basis {
            Basis::OptOut => format!("NOT EXISTS ({from} IS FALSE)"),
            Basis::OptIn => format!("EXISTS ({from} IS TRUE)"),
        })
    }

    fn subject_key_of(&self, table: &str) -> Option<String> {
        let policy = self.b.policy;
        let subject = policy.subject()?;
        if table == subject.table {
            return Some(subject.key.clone());
        }
        if let Some(s) = policy
            .tables()
            .get(table)
            .and_then(|t| t.get().subject.clone())
        {
            return Some(s);
        }
        self.b
            .catalog
            .tables
            .get(table)?
            .foreign_keys
            .iter()
            .find(|fk| fk.ref_table == subject.table)
            .map(|fk| fk.column.clone())
    }
}

/// The subject column of `table` if it is the consents table.
fn policy_consent_of(policy: &Policy, table: &str) -> Option<String> {
    policy
        .consent()
        .filter(|c| c.table == table)
        .map(|c| c.subject_column.clone())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::policy::Source;
    use crate::views::catalog::{CatalogColumn, ForeignKey, TypeCategory};
    use crate::views::secret::mask_key;

    fn col(name: &str, type_name: &str, category: TypeCategory) -> CatalogColumn {
        CatalogColumn {
            name: name.into(),
            type_name: type_name.into(),
            category,
        }
    }

    fn catalog() -> Catalog {
        let customers = CatalogTable {
            columns: vec![
                col("customer_id", "bigint", TypeCategory::Integer),
                col("email", "text", TypeCategory::Text),
                col("born", "date", TypeCategory::Date),
                col("region", "text", TypeCategory::Text),
                col("notes", "text", TypeCategory::Text),
            ],
            primary_key: vec!["customer_id".into()],
            ..CatalogTable::default()
        };
        let orders = CatalogTable {
            columns: vec![
                col("order_id", "bigint", TypeCategory::Integer),
                col("customer_id", "bigint", TypeCategory::Integer),
            ],
            primary_key: vec!["order_id".into()],
            foreign_keys: vec![ForeignKey {
                column: "customer_id".into(),
                ref_table: "customers".into(),
                ref_column: "customer_id".into(),
            }],
            ..CatalogTable::default()
        };
        let consents = CatalogTable {
            columns: vec![
                col("customer_id", "bigint", TypeCategory::Integer),
                col("purpose", "text", TypeCategory::Text),
                col("granted", "boolean", TypeCategory::Boolean),
            ],
            ..CatalogTable::default()
        };
        Catalog {
            tables: [
                ("customers".to_string(), customers),
                ("orders".to_string(), orders),
                ("consents".to_string(), consents),
            ]
            .into_iter()
            .collect(),
        }
    }

    const POLICY: &str = r#"
[subject]
table = "customers"
key = "customer_id"

[consent]
table = "consents"
subject_column = "customer_id"
purpose_column = "purpose"
granted_column = "granted"

[tables.customers.columns]
customer_id = { class = "identity", kind = "id" }
email = { class = "identity", kind = "email", standard = "email" }
born = { class = "personal", kind = "date_of_birth" }
region = "non_personal"

[tables.orders.columns]
order_id = "non_personal"
customer_id = { class = "identity", kind = "id" }

[tables.consents.columns]
customer_id = { class = "identity", kind = "id" }
purpose = "non_personal"
granted = "non_personal"

[view_sets.sales]
kind = "standard"
row_filters = { customers = "region = $user.region" }
write = { customers = ["identity", "non_personal"] }

[view_sets.anon]
kind = "anonymous"
min_group_size = 3

[view_sets.mkt]
kind = "opt_out"
purpose = "direct_marketing"

[roles.rep]
view_sets = ["sales"]

[roles.analyst]
view_sets = ["anon", "mkt"]

[users.alice]
role = "rep"
attributes = { region = "north" }

[users.ana]
role = "analyst"
"#;

    fn policy(text: &str) -> Policy {
        Policy::from_sources(vec![Source {
            path: PathBuf::from("p.toml"),
            text: text.into(),
        }])
        .unwrap()
    }

    fn ddl(text: &str) -> Vec<String> {
        render(&plan(&policy(text), &catalog(), b"secret", "fp").unwrap())
    }

    fn view<'a>(ddl: &'a [String], name: &str) -> &'a str {
        let prefix = format!("CREATE VIEW {name} ");
        ddl.iter()
            .find(|s| s.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no view {name}"))
    }

    #[test]
    fn standard_view_masks_filters_and_checks_writes() {
        let ddl = ddl(POLICY);
        let v = view(&ddl, "\"veil_sales\".\"customers\"");
        assert!(v.contains("WITH (security_barrier = true)"));
        assert!(v.contains("'***@'"), "{v}");
        assert!(
            v.contains("date_trunc('year', t.\"born\")::date AS \"born\""),
            "{v}"
        );
        assert!(!v.contains("notes"), "unclassified column leaked: {v}");
        assert!(v.contains("a.login_role = current_user::text AND a.attribute = 'region'"));
        assert!(v.ends_with("WITH CASCADED CHECK OPTION"), "{v}");
        assert!(ddl.contains(
            &"GRANT INSERT (\"customer_id\", \"region\"), UPDATE (\"customer_id\", \"region\") ON \"veil_sales\".\"customers\" TO \"veil_sales__region_north\"".to_string()
        ));
        assert!(!ddl.iter().any(|s| s.contains("TO \"veil_sales\"")));
    }

    #[test]
    fn only_views_that_hide_rows_are_security_barriers() {
        let ddl = ddl(POLICY);
        let opt_out = view(&ddl, "\"veil_mkt\".\"customers\"");
        assert!(
            opt_out.contains("WITH (security_barrier = true)"),
            "{opt_out}"
        );
        let anonymous = view(&ddl, "\"veil_anon\".\"customers\"");
        assert!(!anonymous.contains("security_barrier"), "{anonymous}");
        assert!(
            anonymous.ends_with("FROM \"public\".\"customers\" t"),
            "{anonymous}"
        );
    }

    #[test]
    fn anonymous_view_pseudonymizes_with_keyed_hash() {
        let ddl = ddl(POLICY);
        let v = view(&ddl, "\"veil_anon\".\"orders\"");
        assert!(
            v.contains("'customer_id:' || (t.\"customer_id\")::text"),
            "{v}"
        );
        assert!(
            v.contains("k.view_set = 'anon' AND k.purpose = 'pseudonym'"),
            "{v}"
        );
        assert!(v.contains("::bit(64)::bigint AS \"customer_id\""), "{v}");
        assert!(!v.contains("CHECK OPTION"));
        assert!(!ddl
            .iter()
            .any(|s| s.starts_with("GRANT INSERT") && s.contains("veil_anon")));
    }

    #[test]
    fn opt_out_view_filters_every_table_referencing_the_subject() {
        let ddl = ddl(POLICY);
        for table in ["customers", "orders", "consents"] {
            let v = view(&ddl, &format!("\"veil_mkt\".\"{table}\""));
            assert!(
                v.contains("NOT EXISTS (SELECT 1 FROM \"public\".\"consents\" c WHERE c.\"customer_id\" = t.\"customer_id\" AND c.\"purpose\" = 'direct_marketing' AND c.\"granted\" IS FALSE)"),
                "{v}"
            );
        }
    }

    #[test]
    fn key_material_is_never_printed() {
        let ddl = ddl(POLICY).join("\n");
        let (ipad, _) = hmac_pads(&mask_key(b"secret", "anon", "pseudonym"));
        let hex: String = ipad.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!ddl.contains(&hex));
        assert!(
            ddl.contains("-- mask keys for anon/pseudonym, anon/noise"),
            "{ddl}"
        );
    }

    #[test]
    fn masks_that_do_not_fit_the_type_are_reported_with_their_line() {
        let text = POLICY.replace(
            "born = { class = \"personal\", kind = \"date_of_birth\" }",
            "born = { class = \"personal\", standard = { mask = \"partial\", keep_last = 2 } }",
        );
        let problems = plan(&policy(&text), &catalog(), b"s", "fp").unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0]
            .message
            .contains("mask `partial` fits text columns, not date"));
        let line = text.lines().position(|l| l.starts_with("born")).unwrap() + 1;
        assert_eq!(problems[0].location.as_ref().unwrap().line, line);
    }

    #[test]
    fn missing_table_is_a_problem() {
        let text = format!("{POLICY}\n[tables.ghosts.columns]\nid = \"non_personal\"\n");
        let problems = plan(&policy(&text), &catalog(), b"s", "fp").unwrap_err();
        assert!(problems[0].message.contains("table ghosts does not exist"));
    }

    #[test]
    fn fingerprint_follows_meaning_not_formatting() {
        let a = crate::views::fingerprint(&policy(POLICY));
        let reformatted = format!("# a comment\n{POLICY}\n\n");
        assert_eq!(a, crate::views::fingerprint(&policy(&reformatted)));
        let changed = POLICY.replace("min_group_size = 3", "min_group_size = 4");
        assert_ne!(a, crate::views::fingerprint(&policy(&changed)));
    }
}
