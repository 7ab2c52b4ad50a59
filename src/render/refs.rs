//! Static scan of a template's source for references into the context
//! (`secrets.X`, `secrets["X"]`, `meta.X.field`, `certs.X.field`), so that
//! `check` can reject an alias not declared in `[secrets]` before any vault
//! is contacted.
//!
//! Why a scan: tera 2 exposes only the *top-level* variable names of a
//! template (`Tera::get_template_variables`); its AST is private. The scan
//! follows tera's default delimiters: it looks only inside `{{ }}` and
//! `{% %}` tags, skips `{# #}` comments, `{% raw %}` blocks and string
//! literals, and ignores names reached through a `.` (e.g. `x.secrets`).
//! Dynamic subscripts (`secrets[name]`) cannot be checked statically; they
//! fail at render time as undefined. A template that shadows `secrets` with
//! `{% set %}` could produce a false positive; none of kvsync's own use cases
//! do that.

/// Context roots whose keys are secret aliases.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Root {
    Secrets,
    Meta,
    Certs,
    /// `selected.<selection alias>`
    Selected,
    /// `keys.<alias>`
    Keys,
}

impl Root {
    pub fn name(self) -> &'static str {
        match self {
            Root::Secrets => "secrets",
            Root::Meta => "meta",
            Root::Certs => "certs",
            Root::Selected => "selected",
            Root::Keys => "keys",
        }
    }

    fn from_ident(s: &str) -> Option<Root> {
        match s {
            "secrets" => Some(Root::Secrets),
            "meta" => Some(Root::Meta),
            "certs" => Some(Root::Certs),
            "selected" => Some(Root::Selected),
            "keys" => Some(Root::Keys),
            _ => None,
        }
    }
}

/// One static reference `root.alias[.field]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ref {
    pub root: Root,
    pub alias: String,
    pub field: Option<String>,
    /// 1-based line of the reference.
    pub line: usize,
}

/// Every static reference in `source`, in order.
pub fn scan(source: &str) -> Vec<Ref> {
    let mut s = Scanner {
        b: source.as_bytes(),
        i: 0,
        refs: Vec::new(),
    };
    s.text();
    s.refs
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    refs: Vec<Ref>,
}

impl Scanner<'_> {
    fn at(&self, pat: &str) -> bool {
        self.b[self.i..].starts_with(pat.as_bytes())
    }

    fn line(&self, pos: usize) -> usize {
        1 + self.b[..pos.min(self.b.len())]
            .iter()
            .filter(|&&c| c == b'\n')
            .count()
    }

    /// Advance past the next occurrence of `pat` (or to the end).
    fn skip_past(&mut self, pat: &str) {
        while self.i < self.b.len() && !self.at(pat) {
            self.i += 1;
        }
        self.i = (self.i + pat.len()).min(self.b.len());
    }

    fn text(&mut self) {
        while self.i < self.b.len() {
            if self.at("{#") {
                self.skip_past("#}");
            } else if self.at("{{") {
                self.i += 2;
                self.tag("}}");
            } else if self.at("{%") {
                self.i += 2;
                if self.is_raw_tag() {
                    self.skip_past("%}");
                    self.skip_raw_body();
                } else {
                    self.tag("%}");
                }
            } else {
                self.i += 1;
            }
        }
    }

    fn is_raw_tag(&self) -> bool {
        let rest = &self.b[self.i..];
        let body: Vec<u8> = rest
            .iter()
            .copied()
            .skip_while(|c| *c == b'-' || c.is_ascii_whitespace())
            .take(4)
            .collect();
        body.starts_with(b"raw") && body.get(3).is_none_or(|c| !is_ident(*c))
    }

    fn skip_raw_body(&mut self) {
        while self.i < self.b.len() {
            if self.at("{%") {
                let start = self.i;
                self.i += 2;
                while self.i < self.b.len()
                    && (self.b[self.i] == b'-' || self.b[self.i].is_ascii_whitespace())
                {
                    self.i += 1;
                }
                if self.at("endraw") {
                    self.skip_past("%}");
                    return;
                }
                self.i = start + 1;
            } else {
                self.i += 1;
            }
        }
    }

    /// Scan one tag body up to `end`.
    fn tag(&mut self, end: &str) {
        let mut prev_dot = false;
        while self.i < self.b.len() {
            if self.at(end) {
                self.i += end.len();
                return;
            }
            let c = self.b[self.i];
            if is_quote(c) {
                self.string();
                prev_dot = false;
            } else if is_ident_start(c) {
                let start = self.i;
                let ident = self.ident();
                if !prev_dot && let Some(root) = Root::from_ident(ident) {
                    self.accessor(root, start);
                }
                prev_dot = false;
            } else if c.is_ascii_whitespace() {
                self.i += 1;
            } else {
                prev_dot = c == b'.';
                self.i += 1;
            }
        }
    }

    /// Skip a string literal starting at the current quote; return its body.
    fn string(&mut self) -> &str {
        let q = self.b[self.i];
        self.i += 1;
        let start = self.i;
        while self.i < self.b.len() && self.b[self.i] != q {
            self.i += 1;
        }
        let body = &self.b[start..self.i];
        self.i = (self.i + 1).min(self.b.len());
        std::str::from_utf8(body).unwrap_or("")
    }

    fn ident(&mut self) -> &str {
        let start = self.i;
        while self.i < self.b.len() && is_ident(self.b[self.i]) {
            self.i += 1;
        }
        std::str::from_utf8(&self.b[start..self.i]).unwrap_or("")
    }

    fn skip_ws(&mut self) {
        while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    /// `.name` or `["name"]` after a root or alias; `None` if dynamic/absent.
    fn key(&mut self) -> Option<String> {
        let save = self.i;
        self.skip_ws();
        match self.b.get(self.i) {
            Some(b'.') => {
                self.i += 1;
                self.skip_ws();
                if self.b.get(self.i).is_some_and(|c| is_ident_start(*c)) {
                    return Some(self.ident().to_string());
                }
            }
            Some(b'[') => {
                self.i += 1;
                self.skip_ws();
                if self.b.get(self.i).is_some_and(|c| is_quote(*c)) {
                    let key = self.string().to_string();
                    self.skip_ws();
                    if self.b.get(self.i) == Some(&b']') {
                        self.i += 1;
                        return Some(key);
                    }
                }
            }
            _ => {}
        }
        self.i = save;
        None
    }

    fn accessor(&mut self, root: Root, start: usize) {
        if let Some(alias) = self.key() {
            let field = self.key();
            let line = self.line(start);
            self.refs.push(Ref {
                root,
                alias,
                field,
                line,
            });
        }
    }
}

fn is_quote(c: u8) -> bool {
    matches!(c, b'"' | b'\'' | b'`')
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn names(src: &str) -> Vec<String> {
        scan(src)
            .into_iter()
            .map(|r| {
                format!(
                    "{}.{}{}@{}",
                    r.root.name(),
                    r.alias,
                    r.field.map(|f| format!(".{f}")).unwrap_or_default(),
                    r.line
                )
            })
            .collect()
    }

    #[test]
    fn finds_dotted_and_subscript_references() {
        let src = "a {{ secrets.db | pgpass_escape }}\n{% if meta[\"x\"].version %}{{ certs . site . key }}{% endif %}\n{{ secrets['y'] }}";
        assert_eq!(
            names(src),
            [
                "secrets.db@1",
                "meta.x.version@2",
                "certs.site.key@2",
                "secrets.y@3"
            ]
        );
    }

    #[test]
    fn ignores_text_comments_strings_raw_and_attributes() {
        let src = "secrets.a {# {{ secrets.b }} #}{{ \"secrets.c }}\" ~ x.secrets.d }}\
                   {% raw %}{{ secrets.e }}{% endraw %}{{ secrets[name] }}{% for k in secrets %}{% endfor %}";
        assert!(names(src).is_empty(), "{:?}", names(src));
    }

    #[test]
    fn whitespace_control_and_after_raw() {
        let src = "{%- raw -%}{{ secrets.a }}{%- endraw -%}\n{{- secrets.b -}}";
        assert_eq!(names(src), ["secrets.b@2"]);
    }
}
