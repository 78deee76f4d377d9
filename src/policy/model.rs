//! The policy file format: what one `policies/*.toml` file may hold.
//!
//! Every struct denies unknown keys, so a misspelt key is an error with its
//! file and line. See `policies/README.md` for the documented format.

use std::collections::BTreeMap;

use serde::de::{self, value::MapAccessDeserializer, IntoDeserializer, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

/// How sensitive a column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// Identifies a person directly (name, email, account number).
    Identity,
    /// Personal data that does not identify alone (birth date, income).
    Personal,
    /// Special-category data (health, religion, ethnicity, death).
    Sensitive,
    /// Not about a person.
    NonPersonal,
}

impl Class {
    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            Class::Identity => "identity",
            Class::Personal => "personal",
            Class::Sensitive => "sensitive",
            Class::NonPersonal => "non_personal",
        }
    }
}

/// The kind of a view set; decides the default masks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ViewKind {
    /// Personal data restricted, sensitive data hidden.
    Standard,
    /// Everything, unmasked.
    Personal,
    /// Pseudonymized and generalized, with a minimum group size.
    Anonymous,
    /// Rows of data subjects who opted out of a purpose removed.
    OptOut,
    /// A named disclosure with listed fields anonymized.
    Selective,
    /// The top administrator: base tables unchanged (never a view set).
    #[serde(skip_deserializing)]
    Admin,
}

impl ViewKind {
    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            ViewKind::Standard => "standard",
            ViewKind::Personal => "personal",
            ViewKind::Anonymous => "anonymous",
            ViewKind::OptOut => "opt_out",
            ViewKind::Selective => "selective",
            ViewKind::Admin => "admin",
        }
    }
}

/// What a column holds, used to pick a fitting default mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A key that identifies a row or a person (pseudonymized in anonymous views).
    Id,
    /// A person's name.
    Name,
    /// An email address.
    Email,
    /// A phone number.
    Phone,
    /// A street address.
    Address,
    /// A city.
    City,
    /// A postal code.
    PostalCode,
    /// A date of birth.
    DateOfBirth,
    /// Any other date or timestamp.
    Date,
    /// A national identity number.
    NationalId,
    /// An amount of money.
    Money,
    /// Any other number.
    Number,
    /// Free text.
    FreeText,
    /// A category out of a small set of values.
    Category,
}

/// The masks of the mask library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MaskName {
    /// The value unchanged.
    Keep,
    /// The column is left out of the view.
    Hide,
    /// NULL for every row.
    Null,
    /// One constant (`value`) for every row.
    Constant,
    /// Keep the first `keep_first` and last `keep_last` characters.
    Partial,
    /// Keep only the domain of an email address.
    Email,
    /// Keyed HMAC-SHA-256 pseudonym (same value, same pseudonym in one view set).
    Pseudonym,
    /// Number band (`width`), date truncation (`unit`) or text prefix (`prefix`).
    Generalize,
    /// Deterministic bounded noise: numbers by `amount` (fraction), dates by `days`.
    Noise,
    /// A named SQL expression from the `[admin.expressions]` section.
    Sql,
}

/// The precision a date is generalized to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DateUnit {
    /// First day of the year.
    Year,
    /// First day of the month.
    Month,
}

/// A mask as written in a policy: a name (`"email"`) or a table with parameters.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MaskSpec {
    /// Which mask.
    pub mask: MaskName,
    /// `constant`: the value, as SQL text literal cast to the column type.
    pub value: Option<String>,
    /// `partial`: characters kept at the start.
    pub keep_first: Option<u32>,
    /// `partial`: characters kept at the end.
    pub keep_last: Option<u32>,
    /// `generalize`: band width for numbers.
    pub width: Option<f64>,
    /// `generalize`: unit for dates.
    pub unit: Option<DateUnit>,
    /// `generalize`: characters kept of a text (e.g. postal code).
    pub prefix: Option<u32>,
    /// `noise`: largest relative change of a number (0.1 = ±10 %).
    pub amount: Option<f64>,
    /// `noise`: largest change of a date in days.
    pub days: Option<u32>,
    /// `pseudonym`: values with the same domain get the same pseudonym
    /// (default: the column name), so keys join across tables.
    pub domain: Option<String>,
    /// `sql`: the name of an expression in `[admin.expressions]`.
    pub name: Option<String>,
}

impl MaskSpec {
    /// A mask without parameters.
    pub fn named(mask: MaskName) -> MaskSpec {
        MaskSpec {
            mask,
            value: None,
            keep_first: None,
            keep_last: None,
            width: None,
            unit: None,
            prefix: None,
            amount: None,
            days: None,
            domain: None,
            name: None,
        }
    }
}

/// A column's entry in a table: a classification or a table with details.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnDef {
    /// The classification.
    pub class: Class,
    /// What the column holds.
    pub kind: Option<Kind>,
    /// Mask override for `standard` view sets.
    pub standard: Option<Short<MaskSpec>>,
    /// Mask override for `personal` view sets.
    pub personal: Option<Short<MaskSpec>>,
    /// Mask override for `anonymous` view sets (and anonymized fields of `selective`).
    pub anonymous: Option<Short<MaskSpec>>,
    /// Mask override for `opt_out` view sets.
    pub opt_out: Option<Short<MaskSpec>>,
    /// Mask override for `selective` view sets (fields not anonymized).
    pub selective: Option<Short<MaskSpec>>,
}

impl ColumnDef {
    /// The column's own mask for view kind `kind`, if it overrides the rules.
    pub fn override_for(&self, kind: ViewKind) -> Option<&Short<MaskSpec>> {
        match kind {
            ViewKind::Standard => self.standard.as_ref(),
            ViewKind::Personal => self.personal.as_ref(),
            ViewKind::Anonymous => self.anonymous.as_ref(),
            ViewKind::OptOut => self.opt_out.as_ref(),
            ViewKind::Selective => self.selective.as_ref(),
            ViewKind::Admin => None,
        }
    }
}

/// Values that may be written as a bare string in a policy file.
pub trait FromShorthand: Sized {
    /// Builds the value from its string form.
    fn from_shorthand<E: de::Error>(s: &str) -> Result<Self, E>;
}

impl FromShorthand for MaskSpec {
    fn from_shorthand<E: de::Error>(s: &str) -> Result<Self, E> {
        MaskName::deserialize(s.into_deserializer()).map(MaskSpec::named)
    }
}

impl FromShorthand for ColumnDef {
    fn from_shorthand<E: de::Error>(s: &str) -> Result<Self, E> {
        Class::deserialize(s.into_deserializer()).map(|class| ColumnDef {
            class,
            kind: None,
            standard: None,
            personal: None,
            anonymous: None,
            opt_out: None,
            selective: None,
        })
    }
}

/// A value written either as a string shorthand or as a full table.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Short<T>(pub T);

impl<'de, T: Deserialize<'de> + FromShorthand> Deserialize<'de> for Short<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de> + FromShorthand> Visitor<'de> for V<T> {
            type Value = Short<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a name or a table")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Short<T>, E> {
                T::from_shorthand(s).map(Short)
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Short<T>, A::Error> {
                T::deserialize(MapAccessDeserializer::new(map)).map(Short)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `[settings]`: names pgveil uses in the database.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Schema of the base tables (default `public`).
    #[serde(default = "default_base_schema")]
    pub base_schema: String,
    /// Schema of pgveil's private tables (keys, user attributes); default `pgveil_private`.
    #[serde(default = "default_private_schema")]
    pub private_schema: String,
    /// Prefix of view set schemas and login roles (default `veil_`).
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            base_schema: default_base_schema(),
            private_schema: default_private_schema(),
            prefix: default_prefix(),
        }
    }
}

fn default_base_schema() -> String {
    "public".into()
}
fn default_private_schema() -> String {
    "pgveil_private".into()
}
fn default_prefix() -> String {
    "veil_".into()
}

/// `[subject]`: the table of data subjects (customers) and its key.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubjectDef {
    /// Table of data subjects.
    pub table: String,
    /// Its key column.
    pub key: String,
}

/// `[consent]`: the table that records consent per subject and purpose.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConsentDef {
    /// The consents table.
    pub table: String,
    /// Column with the subject key.
    pub subject_column: String,
    /// Column with the purpose name.
    pub purpose_column: String,
    /// Boolean column: consent granted (true) or refused (false).
    pub granted_column: String,
}

/// Whether a purpose needs consent or honours objections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Basis {
    /// Everyone except those who refused (granted = false).
    OptOut,
    /// Only those who granted consent (granted = true).
    OptIn,
}

/// `[purposes.<name>]`: a processing purpose.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PurposeDef {
    /// What the purpose is.
    pub description: Option<String>,
    /// Opt-out (default) or opt-in.
    #[serde(default = "default_basis")]
    pub basis: Basis,
    /// Consent as a boolean column `table.column` of a table keyed by the
    /// subject, instead of rows of the consents table.
    pub column: Option<String>,
}

fn default_basis() -> Basis {
    Basis::OptOut
}

/// `[tables.<name>]`: a table of the logical data model.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableDef {
    /// Row key for per-row noise (default: the primary key).
    pub key: Option<Vec<String>>,
    /// Column holding the data subject's key (default: found by foreign key).
    pub subject: Option<String>,
    /// Columns (names or patterns with `*`) and their classification.
    #[serde(default)]
    pub columns: BTreeMap<String, Short<ColumnDef>>,
    /// What erasing a data subject does to this table's rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub erase: Option<EraseRule>,
    /// When rows expire; expired rows are erased by the `erase` rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionDef>,
}

/// What erasure (on request or by retention) does to a table's rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EraseRule {
    /// Delete the rows.
    Delete,
    /// Keep the rows; overwrite identity, personal, sensitive and
    /// unclassified columns (NULL, or a constant where NULL is not allowed)
    /// and re-key the link to the subject with a fresh random key.
    Anonymize,
}

impl EraseRule {
    /// The name used in policy files.
    pub fn name(self) -> &'static str {
        match self {
            EraseRule::Delete => "delete",
            EraseRule::Anonymize => "anonymize",
        }
    }
}

/// `[tables.<name>.retention]`: rows expire `after` a time past `column`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionDef {
    /// Date or timestamp column the age is measured from.
    pub column: String,
    /// Age at which a row expires: `"<n> days"`, `"<n> months"` or `"<n> years"`.
    pub after: String,
}

impl RetentionDef {
    /// `after` as a PostgreSQL interval literal, if it is well formed.
    pub fn interval(&self) -> Option<String> {
        let mut parts = self.after.split_whitespace();
        let n: u32 = parts.next()?.parse().ok()?;
        let unit = parts.next()?;
        if parts.next().is_some() || n == 0 {
            return None;
        }
        let unit = match unit.trim_end_matches('s') {
            "day" => "days",
            "month" => "months",
            "year" => "years",
            _ => return None,
        };
        Some(format!("{n} {unit}"))
    }
}

/// `[admin]`: the section where raw SQL is allowed.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdminDef {
    /// Named SQL expressions for `sql` masks; `{col}` stands for the column.
    #[serde(default)]
    pub expressions: BTreeMap<String, String>,
}

/// `[view_sets.<name>]`: one schema of views and its login roles.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ViewSetDef {
    /// What the view set is for.
    pub description: Option<String>,
    /// The kind of view set.
    pub kind: ViewKind,
    /// `anonymous`: smallest group an aggregate may report.
    pub min_group_size: Option<u32>,
    /// `anonymous`: the fields `table.column` over which `pgveil report`
    /// measures k-anonymity (default: the subject table's generalized and
    /// categorical personal columns the set shows). Not part of the views,
    /// so not part of the fingerprint either.
    #[serde(default, skip_serializing)]
    pub quasi_identifiers: Vec<String>,
    /// `opt_out` (required) and `selective` (optional): the purpose whose
    /// refusals remove rows.
    pub purpose: Option<String>,
    /// `selective`: the name of the disclosure.
    pub disclosure: Option<String>,
    /// `selective`: fields `table.column` that are anonymized.
    #[serde(default)]
    pub anonymize: Vec<String>,
    /// Row filters per table: SQL conditions that may use `$user.<attribute>`.
    #[serde(default)]
    pub row_filters: BTreeMap<String, String>,
    /// Write rules: per table, the classifications whose columns may be
    /// inserted and updated.
    #[serde(default)]
    pub write: BTreeMap<String, Vec<Class>>,
    /// Tables whose rows may be deleted.
    #[serde(default)]
    pub delete: Vec<String>,
}

/// `[roles.<name>]`: which view sets a role may use.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RoleDef {
    /// What the role is.
    pub description: Option<String>,
    /// View sets the role may use.
    #[serde(default)]
    pub view_sets: Vec<String>,
    /// The view set used when the client asks for none (default: the first).
    pub default: Option<String>,
    /// The top administrator: base tables unchanged, admin credentials.
    #[serde(default)]
    pub admin: bool,
}

/// `[users.<name>]`: a user's role and attributes.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UserDef {
    /// The role.
    pub role: String,
    /// Attributes used by row filters (`$user.<name>`).
    #[serde(default)]
    pub attributes: BTreeMap<String, String>,
}

/// Mask rules of one view kind: per classification, per column kind (or `default`).
pub type KindRules = BTreeMap<Class, BTreeMap<String, Short<MaskSpec>>>;

/// One policy file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// `[settings]`.
    pub settings: Option<Settings>,
    /// `[subject]`.
    pub subject: Option<SubjectDef>,
    /// `[consent]`.
    pub consent: Option<ConsentDef>,
    /// `[purposes.*]`.
    #[serde(default)]
    pub purposes: BTreeMap<String, PurposeDef>,
    /// `[tables.*]`.
    #[serde(default)]
    pub tables: BTreeMap<String, TableDef>,
    /// `[masks.<view kind>.<class>]`.
    #[serde(default)]
    pub masks: BTreeMap<ViewKind, KindRules>,
    /// `[admin]`.
    pub admin: Option<AdminDef>,
    /// `[view_sets.*]`.
    #[serde(default)]
    pub view_sets: BTreeMap<String, ViewSetDef>,
    /// `[roles.*]`.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleDef>,
    /// `[users.*]`.
    #[serde(default)]
    pub users: BTreeMap<String, UserDef>,
}
