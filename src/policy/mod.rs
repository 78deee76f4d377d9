//! The privacy policy: classification of columns, masks, view sets, roles,
//! users and purposes, loaded from `policies/*.toml` and validated.
//!
//! Nothing here does database I/O; `views` turns a [`Policy`] into DDL.

mod error;
mod load;
mod locate;
mod masks;
pub mod model;
mod session;
mod validate;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Serialize;

pub use error::{Location, PolicyError, Problem};
pub use masks::{kind_name, ResolvedMask};
pub use model::{
    Basis, Class, ColumnDef, DateUnit, EraseRule, Kind, MaskName, MaskSpec, PurposeDef,
    RetentionDef, ViewKind, ViewSetDef,
};
pub use session::{user_placeholders, LoginRole, SessionGrant, ADMIN_VIEW_SET};

use model::{AdminDef, ConsentDef, KindRules, RoleDef, Settings, SubjectDef, TableDef, UserDef};

/// The purposes every policy knows, with their legal basis.
pub const BUILTIN_PURPOSES: [(&str, Basis); 4] = [
    ("direct_marketing", Basis::OptOut),
    ("third_party_disclosure", Basis::OptIn),
    ("automated_decision", Basis::OptOut),
    ("sensitive_data", Basis::OptIn),
];

/// A policy item and the file it came from.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub struct Entry<T> {
    /// The item.
    pub value: T,
    /// Index of the file in [`Policy::sources`].
    #[serde(skip)]
    pub file: usize,
}

impl<T> Entry<T> {
    /// The item.
    pub fn get(&self) -> &T {
        &self.value
    }
}

/// One loaded policy file.
#[derive(Debug, Clone)]
pub struct Source {
    /// Its path.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

/// A loaded and validated privacy policy (possibly merged from several files).
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    #[serde(skip)]
    sources: Vec<Source>,
    settings: Option<Entry<Settings>>,
    subject: Option<Entry<SubjectDef>>,
    consent: Option<Entry<ConsentDef>>,
    purposes: BTreeMap<String, Entry<PurposeDef>>,
    tables: BTreeMap<String, Entry<TableDef>>,
    masks: BTreeMap<ViewKind, Entry<KindRules>>,
    admin: Option<Entry<AdminDef>>,
    view_sets: BTreeMap<String, Entry<ViewSetDef>>,
    roles: BTreeMap<String, Entry<RoleDef>>,
    users: BTreeMap<String, Entry<UserDef>>,
}

impl Policy {
    /// Loads and validates policy files; a directory stands for its `*.toml` files.
    pub fn load(paths: &[PathBuf]) -> Result<Policy, PolicyError> {
        let sources = load::read_sources(paths)?;
        Policy::from_sources(sources)
    }

    /// Parses, merges and validates already-read policy texts.
    pub fn from_sources(sources: Vec<Source>) -> Result<Policy, PolicyError> {
        let policy = load::merge(sources)?;
        let problems = validate::validate(&policy);
        if problems.is_empty() {
            Ok(policy)
        } else {
            Err(PolicyError::Invalid(problems))
        }
    }

    /// The files the policy was loaded from.
    pub fn sources(&self) -> &[Source] {
        &self.sources
    }

    /// Where key path `path` (e.g. `["tables", "customers"]`) is written
    /// in file number `file`; keys inside inline tables fall back to the
    /// line of the nearest enclosing key.
    pub fn locate(&self, file: usize, path: &[&str]) -> Option<Location> {
        let source = self.sources.get(file)?;
        let (line, column) = (1..=path.len())
            .rev()
            .find_map(|n| locate::locate(&source.text, &path[..n]))?;
        Some(Location {
            file: source.path.clone(),
            line,
            column,
        })
    }

    /// Database names pgveil uses.
    pub fn settings(&self) -> Settings {
        self.settings
            .as_ref()
            .map(|s| s.get().clone())
            .unwrap_or_default()
    }

    /// The tables the policy protects, as (schema, table).
    pub fn protected_tables(&self) -> Vec<(String, String)> {
        let schema = self.settings().base_schema;
        self.tables
            .keys()
            .map(|t| (schema.clone(), t.clone()))
            .collect()
    }

    /// The tables of the policy by name.
    pub fn tables(&self) -> &BTreeMap<String, Entry<TableDef>> {
        &self.tables
    }

    /// The view sets by name.
    pub fn view_sets(&self) -> &BTreeMap<String, Entry<ViewSetDef>> {
        &self.view_sets
    }

    /// The users by name.
    pub fn users(&self) -> &BTreeMap<String, Entry<UserDef>> {
        &self.users
    }

    /// The roles by name.
    pub fn roles(&self) -> &BTreeMap<String, Entry<RoleDef>> {
        &self.roles
    }

    /// The data subject table and key, if the policy names one.
    pub fn subject(&self) -> Option<&SubjectDef> {
        self.subject.as_ref().map(Entry::get)
    }

    /// Where consent is recorded, if the policy has a consents table.
    pub fn consent(&self) -> Option<&ConsentDef> {
        self.consent.as_ref().map(Entry::get)
    }

    /// A purpose by name: the policy's own definition or a built-in one.
    pub fn purpose(&self, name: &str) -> Option<PurposeDef> {
        if let Some(p) = self.purposes.get(name) {
            return Some(p.get().clone());
        }
        BUILTIN_PURPOSES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, basis)| PurposeDef {
                description: None,
                basis: *basis,
                column: None,
            })
    }

    /// The names of the purposes the policy defines (built-ins not included).
    pub fn purpose_names(&self) -> impl Iterator<Item = String> + '_ {
        self.purposes.keys().cloned()
    }

    /// A named SQL expression of the `[admin]` section.
    pub fn admin_expression(&self, name: &str) -> Option<&str> {
        let admin = self.admin.as_ref()?;
        admin.get().expressions.get(name).map(String::as_str)
    }

    /// The classification entry of `table.column`: an exact name first, then
    /// the longest matching `*` pattern. Returns the entry's name (the
    /// column or pattern), the definition and its file.
    pub fn column_def(&self, table: &str, column: &str) -> Option<(&str, &ColumnDef, usize)> {
        let entry = self.tables.get(table)?;
        let columns = &entry.get().columns;
        if let Some((name, def)) = columns.get_key_value(column) {
            return Some((name, &def.0, entry.file));
        }
        columns
            .iter()
            .filter(|(pattern, _)| pattern.contains('*') && glob_match(pattern, column))
            .max_by_key(|(pattern, _)| pattern.len())
            .map(|(name, def)| (name.as_str(), &def.0, entry.file))
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, rest) = match parts.split_first() {
        Some(split) => split,
        None => return pattern == name,
    };
    let Some(mut remaining) = name.strip_prefix(first) else {
        return false;
    };
    let Some((last, middle)) = rest.split_last() else {
        return remaining.is_empty();
    };
    for part in middle {
        match remaining.find(part) {
            Some(i) => remaining = &remaining[i + part.len()..],
            None => return false,
        }
    }
    remaining.len() >= last.len() && remaining.ends_with(last)
}

#[cfg(test)]
mod tests;
