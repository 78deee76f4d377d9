//! Which mask a column gets in a view set: column override, then the
//! policy's `[masks]` rules, then the built-in defaults.

use super::error::Location;
use super::model::{Class, DateUnit, Kind, MaskName, MaskSpec, ViewKind, ViewSetDef};
use super::Policy;

/// The mask chosen for one column of one view set, and where it was chosen.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedMask {
    /// The mask and its parameters.
    pub spec: MaskSpec,
    /// The policy line that chose it (None: built-in default or unclassified).
    pub location: Option<Location>,
    /// The column's classification (None: not in the policy).
    pub class: Option<Class>,
}

/// The policy-file name of a column kind (`date_of_birth`).
pub fn kind_name(kind: Kind) -> String {
    match toml::Value::try_from(kind) {
        Ok(toml::Value::String(s)) => s,
        _ => String::new(),
    }
}

impl Policy {
    /// The mask of `table.column` in view set `set`.
    pub fn mask_for(&self, set: &ViewSetDef, table: &str, column: &str) -> ResolvedMask {
        let Some((entry_name, def, file)) = self.column_def(table, column) else {
            let mask = if set.kind == ViewKind::Personal {
                MaskName::Keep
            } else {
                MaskName::Hide
            };
            return ResolvedMask {
                spec: MaskSpec::named(mask),
                location: None,
                class: None,
            };
        };
        let field = format!("{table}.{column}");
        let kind = if set.kind == ViewKind::Selective && set.anonymize.contains(&field) {
            ViewKind::Anonymous
        } else {
            set.kind
        };
        if let Some(spec) = def.override_for(kind) {
            return ResolvedMask {
                spec: spec.0.clone(),
                location: self.locate(file, &["tables", table, "columns", entry_name, kind.name()]),
                class: Some(def.class),
            };
        }
        if let Some(rules) = self.masks.get(&kind) {
            if let Some(by_kind) = rules.get().get(&def.class) {
                let key = def.kind.map(kind_name);
                let rule = key
                    .and_then(|k| by_kind.get_key_value(&k))
                    .or_else(|| by_kind.get_key_value("default"));
                if let Some((key, rule)) = rule {
                    let path = ["masks", kind.name(), def.class.name(), key.as_str()];
                    return ResolvedMask {
                        spec: rule.0.clone(),
                        location: self.locate(rules.file, &path),
                        class: Some(def.class),
                    };
                }
            }
        }
        ResolvedMask {
            spec: builtin(kind, def.class, def.kind),
            location: None,
            class: Some(def.class),
        }
    }
}

/// The built-in default mask of a column kind and classification in a view kind.
pub fn builtin(view: ViewKind, class: Class, kind: Option<Kind>) -> MaskSpec {
    use MaskName::*;
    match (view, class) {
        (ViewKind::Personal | ViewKind::Admin, _) => MaskSpec::named(Keep),
        (_, Class::NonPersonal) => MaskSpec::named(Keep),
        (_, Class::Sensitive) => MaskSpec::named(Hide),
        (ViewKind::OptOut | ViewKind::Selective, _) => MaskSpec::named(Keep),
        (ViewKind::Standard, Class::Identity) => MaskSpec::named(Keep),
        (ViewKind::Standard, Class::Personal) => standard_personal(kind),
        (ViewKind::Anonymous, Class::Identity) => match kind {
            Some(Kind::Id) => MaskSpec::named(Pseudonym),
            _ => MaskSpec::named(Hide),
        },
        (ViewKind::Anonymous, Class::Personal) => anonymous_personal(kind),
    }
}

fn standard_personal(kind: Option<Kind>) -> MaskSpec {
    match kind {
        Some(Kind::Email) => MaskSpec::named(MaskName::Email),
        Some(Kind::Phone) => MaskSpec {
            keep_last: Some(3),
            ..MaskSpec::named(MaskName::Partial)
        },
        Some(Kind::DateOfBirth) => year(),
        Some(Kind::PostalCode) => prefix(2),
        Some(Kind::City | Kind::Category) => MaskSpec::named(MaskName::Keep),
        _ => MaskSpec::named(MaskName::Null),
    }
}

fn anonymous_personal(kind: Option<Kind>) -> MaskSpec {
    match kind {
        Some(Kind::DateOfBirth | Kind::Date) => year(),
        Some(Kind::PostalCode) => prefix(2),
        Some(Kind::City | Kind::Category) => MaskSpec::named(MaskName::Keep),
        _ => MaskSpec::named(MaskName::Hide),
    }
}

fn year() -> MaskSpec {
    MaskSpec {
        unit: Some(DateUnit::Year),
        ..MaskSpec::named(MaskName::Generalize)
    }
}

fn prefix(n: u32) -> MaskSpec {
    MaskSpec {
        prefix: Some(n),
        ..MaskSpec::named(MaskName::Generalize)
    }
}
