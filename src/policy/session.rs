//! From a user to the view set, schema and backend login role of a session.

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use super::error::PolicyError;
use super::model::{ViewKind, ViewSetDef};
use super::Policy;

/// Name of the pseudo view set of the top administrator.
pub const ADMIN_VIEW_SET: &str = "admin";

/// What a session may do: decided once at connect from the user and the
/// view set the client asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionGrant {
    /// The view set's name (`admin` for the administrator).
    pub view_set: String,
    /// Its kind.
    pub kind: ViewKind,
    /// The schema holding its views; None for the administrator (base tables).
    pub schema: Option<String>,
    /// The backend login role; None means the admin/owner credentials.
    pub login_role: Option<String>,
    /// Whether the view set allows no writes at all.
    pub read_only: bool,
    /// Smallest group an aggregate may report (anonymous view sets).
    pub min_group_size: Option<u32>,
    /// The purpose of an opt-out or selective view set.
    pub purpose: Option<String>,
}

/// One backend LOGIN role that `apply` creates.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct LoginRole {
    /// The role name.
    pub name: String,
    /// The view set it reads.
    pub view_set: String,
    /// The attribute values its row filters see.
    pub attributes: BTreeMap<String, String>,
}

/// The `$user.<attribute>` placeholders in a row filter: byte range and name.
pub fn user_placeholders(text: &str) -> Vec<(std::ops::Range<usize>, String)> {
    const MARK: &str = "$user.";
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(MARK) {
        let start = from + i;
        let name_start = start + MARK.len();
        let len = text[name_start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(text.len() - name_start);
        found.push((
            start..name_start + len,
            text[name_start..name_start + len].to_string(),
        ));
        from = name_start + len;
    }
    found
}

impl Policy {
    /// The user attributes the row filters of view set `set` read.
    pub fn filter_attributes(&self, set: &ViewSetDef) -> BTreeSet<String> {
        set.row_filters
            .values()
            .flat_map(|f| user_placeholders(f))
            .map(|(_, name)| name)
            .collect()
    }

    /// The schema of view set `name`.
    pub fn schema_of(&self, name: &str) -> String {
        format!("{}{}", self.settings().prefix, name)
    }

    /// The login role for view set `name` with the attributes its filters use.
    pub fn login_role_name(&self, name: &str, attributes: &BTreeMap<String, String>) -> String {
        let base = self.schema_of(name);
        if attributes.is_empty() {
            return base;
        }
        let readable: String = attributes
            .iter()
            .map(|(k, v)| format!("__{k}_{v}"))
            .collect();
        let plain = readable
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if plain && base.len() + readable.len() <= 63 {
            return format!("{base}{readable}");
        }
        let mut h = Sha256::new();
        for (k, v) in attributes {
            h.update(format!("{k}={v}\n"));
        }
        let hex: String = h.finalize()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("{base}__{hex}")
    }

    /// The attribute values user `user` brings to view set `set`.
    fn attributes_for(&self, user: &str, set: &ViewSetDef) -> BTreeMap<String, String> {
        let Some(def) = self.users.get(user) else {
            return BTreeMap::new();
        };
        self.filter_attributes(set)
            .into_iter()
            .filter_map(|a| def.get().attributes.get(&a).map(|v| (a, v.clone())))
            .collect()
    }

    /// Every login role `apply` must create: one per view set and distinct
    /// attribute values of the users whose roles may use it.
    pub fn login_roles(&self) -> Vec<LoginRole> {
        let mut roles = BTreeSet::new();
        for (set_name, set) in &self.view_sets {
            let filtered = !set.get().row_filters.is_empty();
            if !filtered {
                roles.insert(self.login_role(set_name, BTreeMap::new()));
                continue;
            }
            for (user, def) in &self.users {
                let allowed = self
                    .roles
                    .get(&def.get().role)
                    .is_some_and(|r| r.get().view_sets.contains(set_name));
                if allowed {
                    let attrs = self.attributes_for(user, set.get());
                    roles.insert(self.login_role(set_name, attrs));
                }
            }
        }
        roles.into_iter().collect()
    }

    fn login_role(&self, set: &str, attributes: BTreeMap<String, String>) -> LoginRole {
        LoginRole {
            name: self.login_role_name(set, &attributes),
            view_set: set.to_string(),
            attributes,
        }
    }

    /// Decides the view set and backend role of a session of `user`.
    pub fn resolve_session(
        &self,
        user: &str,
        requested_view_set: Option<&str>,
    ) -> Result<SessionGrant, PolicyError> {
        let def = self
            .users
            .get(user)
            .ok_or_else(|| PolicyError::UnknownUser(user.to_string()))?;
        let role_name = &def.get().role;
        let role = self
            .roles
            .get(role_name)
            .ok_or_else(|| PolicyError::UnknownUser(user.to_string()))?
            .get();
        let mut allowed: Vec<&str> = role.view_sets.iter().map(String::as_str).collect();
        if role.admin {
            allowed.insert(0, ADMIN_VIEW_SET);
        }
        let name = match requested_view_set {
            Some(r) => r,
            None if role.admin => ADMIN_VIEW_SET,
            None => role
                .default
                .as_deref()
                .or(allowed.first().copied())
                .unwrap_or(ADMIN_VIEW_SET),
        };
        let allowed_text = allowed.join(", ");
        if !allowed.contains(&name) {
            if name != ADMIN_VIEW_SET && !self.view_sets.contains_key(name) {
                return Err(PolicyError::UnknownViewSet {
                    requested: name.to_string(),
                    allowed: allowed_text,
                });
            }
            return Err(PolicyError::ForbiddenViewSet {
                role: role_name.clone(),
                requested: name.to_string(),
                allowed: allowed_text,
            });
        }
        if name == ADMIN_VIEW_SET {
            return Ok(SessionGrant {
                view_set: ADMIN_VIEW_SET.into(),
                kind: ViewKind::Admin,
                schema: None,
                login_role: None,
                read_only: false,
                min_group_size: None,
                purpose: None,
            });
        }
        let set = self
            .view_sets
            .get(name)
            .ok_or_else(|| PolicyError::UnknownViewSet {
                requested: name.to_string(),
                allowed: allowed_text.clone(),
            })?
            .get();
        let attributes = self.attributes_for(user, set);
        Ok(SessionGrant {
            view_set: name.to_string(),
            kind: set.kind,
            schema: Some(self.schema_of(name)),
            login_role: Some(self.login_role_name(name, &attributes)),
            read_only: set.write.is_empty() && set.delete.is_empty(),
            min_group_size: set.min_group_size,
            purpose: set.purpose.clone(),
        })
    }
}
