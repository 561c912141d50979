//! A typed, minimal model of a systemd/quadlet unit file: header comment
//! lines, then sections of `Key=Value` entries in insertion order (in the
//! spirit of containers/podlet). Values are stored already escaped (see
//! [`super::escape`]); [`UnitFile::to_text`] is deterministic.

/// One `[Section]` with its entries in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    /// Section name without brackets, e.g. `Unit`.
    pub name: String,
    /// `(key, escaped value)` pairs in order; repeated keys are allowed.
    pub entries: Vec<(String, String)>,
}

impl Section {
    /// Append `key=value` (value already escaped).
    pub fn add(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.entries.push((key.to_string(), value.into()));
        self
    }

    /// All values of `key`, in order.
    pub fn values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// A whole unit file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitFile {
    /// File name, e.g. `mcns.container`.
    pub name: String,
    /// Comment lines (without the leading `# `).
    pub header: Vec<String>,
    /// Sections in order.
    pub sections: Vec<Section>,
}

impl UnitFile {
    /// A new, empty unit file.
    pub fn new(name: impl Into<String>, header: Vec<String>) -> Self {
        UnitFile {
            name: name.into(),
            header,
            sections: Vec::new(),
        }
    }

    /// The section `name`, created at the end if missing.
    pub fn section(&mut self, name: &str) -> &mut Section {
        let idx = match self.sections.iter().position(|s| s.name == name) {
            Some(i) => i,
            None => {
                self.sections.push(Section {
                    name: name.to_string(),
                    entries: Vec::new(),
                });
                self.sections.len() - 1
            }
        };
        &mut self.sections[idx]
    }

    /// The section `name`, if present.
    pub fn get(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|s| s.name == name)
    }

    /// Serialise: header comments, then each non-empty section separated by a
    /// blank line; ends with exactly one newline.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for h in &self.header {
            out.push_str("# ");
            out.push_str(h);
            out.push('\n');
        }
        for s in self.sections.iter().filter(|s| !s.entries.is_empty()) {
            if !out.is_empty() {
                out.push('\n');
            }
            out.push('[');
            out.push_str(&s.name);
            out.push_str("]\n");
            for (k, v) in &s.entries {
                out.push_str(k);
                out.push('=');
                out.push_str(v);
                out.push('\n');
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_in_order() {
        let mut u = UnitFile::new("x.target", vec!["Generated".into()]);
        u.section("Unit")
            .add("Description", "X")
            .add("Wants", "a.service");
        u.section("Install");
        u.section("Unit").add("Wants", "b.service");
        assert_eq!(
            u.to_text(),
            "# Generated\n\n[Unit]\nDescription=X\nWants=a.service\nWants=b.service\n"
        );
        let wants: Vec<_> = u
            .get("Unit")
            .map(|s| s.values("Wants").collect())
            .unwrap_or_default();
        assert_eq!(wants, vec!["a.service", "b.service"]);
    }
}
