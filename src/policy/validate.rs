//! Validation of a merged policy without a database: names, references,
//! mask parameters and row filter syntax. `views::check` adds the checks
//! against the live catalog.

use serde::de::IntoDeserializer;
use serde::Deserialize;
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::Token;

use super::error::{Location, Problem};
use super::model::{
    Class, EraseRule, Kind, MaskName, MaskSpec, Short, TableDef, ViewKind, ViewSetDef,
};
use super::session::user_placeholders;
use super::{Entry, Policy};

/// Every problem of the policy; empty when it is valid.
pub fn validate(policy: &Policy) -> Vec<Problem> {
    let mut v = Validator {
        policy,
        problems: Vec::new(),
    };
    v.settings();
    v.references();
    v.tables();
    v.mask_rules();
    v.admin();
    v.view_sets();
    v.roles();
    v.users();
    v.problems
}

struct Validator<'a> {
    policy: &'a Policy,
    problems: Vec<Problem>,
}

/// Whether `name` is a plain lower-case SQL identifier.
fn plain_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && name.len() <= 40
}

/// Parses `text` as one SQL expression; the error text if it is not one.
pub fn parse_expression(text: &str) -> Result<(), String> {
    let dialect = PostgreSqlDialect {};
    let mut parser = Parser::new(&dialect)
        .try_with_sql(text)
        .map_err(|e| e.to_string())?;
    parser.parse_expr().map_err(|e| e.to_string())?;
    match parser.peek_token().token {
        Token::EOF => Ok(()),
        other => Err(format!("unexpected `{other}` after the expression")),
    }
}

impl Validator<'_> {
    fn at(&self, file: usize, path: &[&str]) -> Option<Location> {
        self.policy.locate(file, path)
    }

    fn push(&mut self, location: Option<Location>, message: String, fix: &str) {
        self.problems.push(Problem {
            location,
            message,
            fix: fix.to_string(),
        });
    }

    fn entry_at<T>(&self, e: &Entry<T>, path: &[&str]) -> Option<Location> {
        self.policy.locate(e.file, path)
    }

    fn settings(&mut self) {
        let s = self.policy.settings();
        let loc = self
            .policy
            .settings
            .as_ref()
            .and_then(|e| self.entry_at(e, &["settings"]));
        for (what, name) in [
            ("base_schema", &s.base_schema),
            ("private_schema", &s.private_schema),
            ("prefix", &s.prefix),
        ] {
            if !plain_identifier(name) {
                self.push(
                    loc.clone(),
                    format!("settings.{what} \"{name}\" is not a plain lower-case identifier"),
                    "use lower-case letters, digits and _ (at most 40 characters)",
                );
            }
        }
    }

    fn has_table(&self, table: &str) -> bool {
        self.policy.tables.contains_key(table)
    }

    fn has_column(&self, field: &str) -> bool {
        field
            .split_once('.')
            .is_some_and(|(t, c)| self.policy.column_def(t, c).is_some())
    }

    fn references(&mut self) {
        if let Some(s) = &self.policy.subject {
            if !self.has_table(&s.get().table) {
                self.push(
                    self.entry_at(s, &["subject", "table"]),
                    format!("subject table \"{}\" is not in [tables]", s.get().table),
                    "add it under [tables] or correct the name",
                );
            }
        }
        if let Some(c) = &self.policy.consent {
            if !self.has_table(&c.get().table) {
                self.push(
                    self.entry_at(c, &["consent", "table"]),
                    format!("consent table \"{}\" is not in [tables]", c.get().table),
                    "add it under [tables] or correct the name",
                );
            }
        }
        for (name, p) in &self.policy.purposes {
            if let Some(col) = &p.get().column {
                if !self.has_column(col) {
                    self.push(
                        self.entry_at(p, &["purposes", name, "column"]),
                        format!(
                            "purpose {name}: column \"{col}\" is not a classified table.column"
                        ),
                        "write column = \"table.column\" naming a boolean column in [tables]",
                    );
                }
            }
        }
    }

    fn tables(&mut self) {
        for (table, entry) in &self.policy.tables {
            if !plain_identifier(table) {
                self.push(
                    self.entry_at(entry, &["tables", table]),
                    format!("table name \"{table}\" is not a plain lower-case identifier"),
                    "name the table as it is in the database (lower case)",
                );
            }
            self.retention(table, entry);
            for (column, def) in &entry.get().columns {
                let col = &def.0;
                for kind in [
                    ViewKind::Standard,
                    ViewKind::Personal,
                    ViewKind::Anonymous,
                    ViewKind::OptOut,
                    ViewKind::Selective,
                ] {
                    if let Some(spec) = col.override_for(kind) {
                        let what = format!("{table}.{column} ({})", kind.name());
                        let loc = self.at(
                            entry.file,
                            &["tables", table, "columns", column, kind.name()],
                        );
                        self.mask(loc, spec, &what, Some(col.class), kind);
                    }
                }
            }
        }
    }

    fn retention(&mut self, table: &str, entry: &Entry<TableDef>) {
        let def = entry.get();
        let Some(retention) = &def.retention else {
            return;
        };
        let loc = self.at(entry.file, &["tables", table, "retention"]);
        if retention.interval().is_none() {
            self.push(
                loc.clone(),
                format!(
                    "tables.{table}.retention: after = \"{}\" is not an age",
                    retention.after
                ),
                "write after = \"<n> days\", \"<n> months\" or \"<n> years\"",
            );
        }
        let is_subject = self.policy.subject().is_some_and(|s| s.table == table);
        match def.erase {
            None => self.push(
                loc,
                format!("tables.{table}: a retention rule needs an erase rule"),
                "add erase = \"delete\" or erase = \"anonymize\" to the table",
            ),
            Some(EraseRule::Anonymize) if !is_subject => self.push(
                loc,
                format!(
                    "tables.{table}: expired rows of a table other than the subject table can only be deleted"
                ),
                "set erase = \"delete\", or put the retention rule on the subject table",
            ),
            Some(_) => {}
        }
    }

    fn mask_rules(&mut self) {
        for (kind, rules) in &self.policy.masks {
            for (class, by_kind) in rules.get() {
                for (key, spec) in by_kind {
                    let what = format!("masks.{}.{}.{key}", kind.name(), class.name());
                    let loc = self.at(rules.file, &["masks", kind.name(), class.name(), key]);
                    if key != "default"
                        && Kind::deserialize(key.as_str().into_deserializer())
                            .map_err(|e: serde::de::value::Error| e)
                            .is_err()
                    {
                        self.push(
                            loc.clone(),
                            format!("{what}: \"{key}\" is not a column kind"),
                            "use `default` or a kind such as email, phone, name, date_of_birth, postal_code, money",
                        );
                    }
                    self.mask(loc, spec, &what, Some(*class), *kind);
                }
            }
        }
    }

    fn mask(
        &mut self,
        loc: Option<Location>,
        spec: &Short<MaskSpec>,
        what: &str,
        class: Option<Class>,
        view: ViewKind,
    ) {
        let spec = &spec.0;
        if let Err((message, fix)) = mask_parameters(spec) {
            self.push(loc.clone(), format!("{what}: {message}"), &fix);
        }
        if spec.mask == MaskName::Sql {
            let known = spec
                .name
                .as_deref()
                .is_some_and(|n| self.policy.admin_expression(n).is_some());
            if !known {
                self.push(
                    loc.clone(),
                    format!("{what}: sql mask names no expression of [admin.expressions]"),
                    "define the expression under [admin.expressions] and give its name",
                );
            }
        }
        let uniform = matches!(
            spec.mask,
            MaskName::Keep | MaskName::Hide | MaskName::Null | MaskName::Constant | MaskName::Sql
        );
        if class == Some(Class::Sensitive) && !uniform && view != ViewKind::Personal {
            self.push(
                loc,
                format!(
                    "{what}: mask `{:?}` on a sensitive column keeps NULLs as they are, which reveals who has a value (e.g. a date of death)",
                    spec.mask
                )
                .to_lowercase(),
                "use hide, null or constant for sensitive columns (or an admin sql expression)",
            );
        }
    }

    fn admin(&mut self) {
        let Some(admin) = &self.policy.admin else {
            return;
        };
        for (name, expr) in &admin.get().expressions {
            let loc = self.at(admin.file, &["admin", "expressions", name]);
            let text = expr;
            if !text.contains("{col}") {
                self.push(
                    loc.clone(),
                    format!("admin expression {name} does not use {{col}}"),
                    "write {col} where the column's value goes",
                );
            }
            if let Err(e) = parse_expression(&text.replace("{col}", "x")) {
                self.push(
                    loc,
                    format!("admin expression {name} is not one SQL expression: {e}"),
                    "write a single SQL expression (no ; or statements)",
                );
            }
        }
    }

    fn view_sets(&mut self) {
        for (name, entry) in &self.policy.view_sets {
            let loc = self.entry_at(entry, &["view_sets", name]);
            if !plain_identifier(name) {
                self.push(
                    loc.clone(),
                    format!("view set name \"{name}\" is not a plain lower-case identifier"),
                    "use lower-case letters, digits and _",
                );
            }
            self.view_set_kind(name, entry.get(), loc.clone());
            self.view_set_tables(name, entry);
        }
    }

    fn view_set_kind(&mut self, name: &str, set: &ViewSetDef, loc: Option<Location>) {
        let writes = !set.write.is_empty() || !set.delete.is_empty();
        match set.kind {
            ViewKind::Anonymous if set.min_group_size.is_none_or(|k| k < 2) => self.push(
                loc.clone(),
                format!("view set {name}: anonymous view sets need min_group_size of at least 2"),
                "add min_group_size = 5 (or another k)",
            ),
            ViewKind::OptOut if set.purpose.is_none() => self.push(
                loc.clone(),
                format!("view set {name}: opt_out view sets need a purpose"),
                "add purpose = \"direct_marketing\" (or another purpose)",
            ),
            ViewKind::Selective if set.disclosure.is_none() => self.push(
                loc.clone(),
                format!("view set {name}: selective view sets need the name of their disclosure"),
                "add disclosure = \"<who receives the data>\"",
            ),
            _ => {}
        }
        if writes && matches!(set.kind, ViewKind::Anonymous | ViewKind::Selective) {
            self.push(
                loc.clone(),
                format!(
                    "view set {name}: {} view sets are read-only",
                    set.kind.name()
                ),
                "remove write and delete",
            );
        }
        if set.kind != ViewKind::Anonymous && set.min_group_size.is_some() {
            self.push(
                loc.clone(),
                format!("view set {name}: min_group_size only applies to anonymous view sets"),
                "remove min_group_size or make the kind anonymous",
            );
        }
        if set.kind != ViewKind::Selective && !set.anonymize.is_empty() {
            self.push(
                loc.clone(),
                format!("view set {name}: anonymize only applies to selective view sets"),
                "remove anonymize or make the kind selective",
            );
        }
        self.quasi_identifiers(name, set, loc.clone());
        if let Some(purpose) = &set.purpose {
            self.purpose_usable(name, purpose, loc);
        }
    }

    fn quasi_identifiers(&mut self, name: &str, set: &ViewSetDef, loc: Option<Location>) {
        if set.kind != ViewKind::Anonymous && !set.quasi_identifiers.is_empty() {
            self.push(
                loc.clone(),
                format!("view set {name}: quasi_identifiers only apply to anonymous view sets"),
                "remove quasi_identifiers or make the kind anonymous",
            );
        }
        for field in &set.quasi_identifiers {
            let shown = field.split_once('.').is_some_and(|(table, column)| {
                self.policy.mask_for(set, table, column).spec.mask != MaskName::Hide
            });
            if !self.has_column(field) || !shown {
                self.push(
                    loc.clone(),
                    format!("view set {name}: quasi-identifier \"{field}\" is not a classified table.column that the view set shows"),
                    "name columns as \"table.column\" that the view set does not hide",
                );
            }
        }
    }

    fn purpose_usable(&mut self, name: &str, purpose: &str, loc: Option<Location>) {
        let Some(def) = self.policy.purpose(purpose) else {
            self.push(
                loc,
                format!("view set {name}: unknown purpose \"{purpose}\""),
                "use a built-in purpose (direct_marketing, third_party_disclosure, automated_decision, sensitive_data) or define it under [purposes]",
            );
            return;
        };
        if self.policy.subject.is_none() {
            self.push(
                loc.clone(),
                format!("view set {name}: purpose filtering needs a [subject] table"),
                "add [subject] with table and key",
            );
        }
        if def.column.is_none() && self.policy.consent.is_none() {
            self.push(
                loc,
                format!("view set {name}: purpose {purpose} has no consent source"),
                "add a [consent] table or give the purpose a boolean column",
            );
        }
    }

    fn view_set_tables(&mut self, name: &str, entry: &Entry<ViewSetDef>) {
        let set = entry.get();
        let loc = self.entry_at(entry, &["view_sets", name]);
        for field in &set.anonymize {
            if !self.has_column(field) {
                self.push(
                    loc.clone(),
                    format!("view set {name}: anonymize entry \"{field}\" is not a classified table.column"),
                    "write \"table.column\" with a column listed under [tables]",
                );
            }
        }
        for table in set.write.keys().chain(set.delete.iter()) {
            if !self.has_table(table) {
                self.push(
                    loc.clone(),
                    format!("view set {name}: write/delete names unknown table \"{table}\""),
                    "use a table listed under [tables]",
                );
            }
        }
        for (table, filter) in &set.row_filters {
            let floc = self.at(entry.file, &["view_sets", name, "row_filters", table]);
            if !self.has_table(table) {
                self.push(
                    floc.clone(),
                    format!("view set {name}: row filter for unknown table \"{table}\""),
                    "use a table listed under [tables]",
                );
            }
            let mut text = filter.clone();
            for (range, _) in user_placeholders(filter).into_iter().rev() {
                text.replace_range(range, "'x'");
            }
            if let Err(e) = parse_expression(&text) {
                self.push(
                    floc,
                    format!(
                        "view set {name}: row filter for {table} is not one SQL condition: {e}"
                    ),
                    "write one SQL condition, e.g. region = $user.region",
                );
            }
        }
    }

    fn roles(&mut self) {
        for (name, entry) in &self.policy.roles {
            let role = entry.get();
            let loc = self.entry_at(entry, &["roles", name]);
            for set in role.view_sets.iter().chain(role.default.iter()) {
                if !self.policy.view_sets.contains_key(set) {
                    self.push(
                        self.entry_at(entry, &["roles", name, "view_sets"]),
                        format!("role {name}: unknown view set \"{set}\""),
                        "use a view set defined under [view_sets]",
                    );
                }
            }
            if let Some(d) = &role.default {
                if !role.view_sets.contains(d) {
                    self.push(
                        loc.clone(),
                        format!("role {name}: default view set \"{d}\" is not in its view_sets"),
                        "add it to view_sets",
                    );
                }
            }
            if !role.admin && role.view_sets.is_empty() {
                self.push(
                    loc,
                    format!("role {name} has no view sets"),
                    "list the view sets it may use, or set admin = true for the administrator",
                );
            }
        }
    }

    fn users(&mut self) {
        for (name, entry) in &self.policy.users {
            let user = entry.get();
            let loc = self.entry_at(entry, &["users", name]);
            let Some(role) = self.policy.roles.get(&user.role) else {
                self.push(
                    loc,
                    format!("user {name}: unknown role \"{}\"", user.role),
                    "use a role defined under [roles]",
                );
                continue;
            };
            for set_name in &role.get().view_sets {
                let Some(set) = self.policy.view_sets.get(set_name) else {
                    continue;
                };
                for attr in self.policy.filter_attributes(set.get()) {
                    if !user.attributes.contains_key(&attr) {
                        self.push(
                            loc.clone(),
                            format!("user {name}: view set {set_name} filters rows by $user.{attr}, but the user has no {attr}"),
                            "add attributes = { ... } with that attribute",
                        );
                    }
                }
            }
        }
    }
}

/// Checks that a mask has exactly the parameters it needs.
fn mask_parameters(spec: &MaskSpec) -> Result<(), (String, String)> {
    let given: Vec<&str> = [
        ("value", spec.value.is_some()),
        ("keep_first", spec.keep_first.is_some()),
        ("keep_last", spec.keep_last.is_some()),
        ("width", spec.width.is_some()),
        ("unit", spec.unit.is_some()),
        ("prefix", spec.prefix.is_some()),
        ("amount", spec.amount.is_some()),
        ("days", spec.days.is_some()),
        ("domain", spec.domain.is_some()),
        ("name", spec.name.is_some()),
    ]
    .into_iter()
    .filter_map(|(n, set)| set.then_some(n))
    .collect();
    let (allowed, one_of): (&[&str], &[&str]) = match spec.mask {
        MaskName::Keep | MaskName::Hide | MaskName::Null | MaskName::Email => (&[], &[]),
        MaskName::Constant => (&["value"], &["value"]),
        MaskName::Partial => (&["keep_first", "keep_last"], &[]),
        MaskName::Pseudonym => (&["domain"], &[]),
        MaskName::Generalize => (&["width", "unit", "prefix"], &["width", "unit", "prefix"]),
        MaskName::Noise => (&["amount", "days"], &["amount", "days"]),
        MaskName::Sql => (&["name"], &["name"]),
    };
    let mask = format!("{:?}", spec.mask).to_lowercase();
    if let Some(extra) = given.iter().find(|g| !allowed.contains(g)) {
        return Err((
            format!("parameter `{extra}` does not apply to mask `{mask}`"),
            format!("remove it; `{mask}` takes: {}", list_or_none(allowed)),
        ));
    }
    let chosen = one_of.iter().filter(|p| given.contains(p)).count();
    if !one_of.is_empty() && chosen != 1 {
        return Err((
            format!("mask `{mask}` needs exactly one of: {}", one_of.join(", ")),
            format!("give one of {}", one_of.join(", ")),
        ));
    }
    ranges(spec)
}

fn ranges(spec: &MaskSpec) -> Result<(), (String, String)> {
    let bad = |m: &str, f: &str| Err((m.to_string(), f.to_string()));
    if spec.mask == MaskName::Partial && spec.keep_first.is_none() && spec.keep_last.is_none() {
        return bad(
            "mask `partial` keeps nothing",
            "give keep_first and/or keep_last",
        );
    }
    if spec.width.is_some_and(|w| w.is_nan() || w <= 0.0) {
        return bad(
            "generalize width must be positive",
            "use e.g. width = 10000",
        );
    }
    if spec.prefix == Some(0) {
        return bad(
            "generalize prefix must be at least 1",
            "use e.g. prefix = 2",
        );
    }
    if spec
        .amount
        .is_some_and(|a| a.is_nan() || a <= 0.0 || a >= 1.0)
    {
        return bad(
            "noise amount must be between 0 and 1",
            "use e.g. amount = 0.05 for ±5 %",
        );
    }
    if spec.days == Some(0) {
        return bad("noise days must be at least 1", "use e.g. days = 15");
    }
    Ok(())
}

fn list_or_none(items: &[&str]) -> String {
    if items.is_empty() {
        "no parameters".into()
    } else {
        items.join(", ")
    }
}
