//! Which versions of a certificate stay in a store: the `keep` newest (the
//! one just delivered always among them), plus any older one still bound in
//! http.sys (removing it would leave a site without its certificate). Pure.

use std::collections::BTreeSet;

/// One version of a certificate found in a store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    /// SHA-1 thumbprint, uppercase hex.
    pub thumbprint: String,
    /// notBefore, Unix seconds (newer versions start later).
    pub not_before: i64,
}

/// What to do with the versions beyond `keep`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Removal {
    /// Thumbprints to delete from the store, oldest last.
    pub remove: Vec<String>,
    /// Thumbprints beyond `keep` kept because http.sys still binds them.
    pub kept_bound: Vec<String>,
}

/// Decide which of `versions` go: `current` counts first, then the others
/// newest first (notBefore, then thumbprint for a stable order); everything
/// after the first `keep` is removed unless `bound` (uppercase thumbprints)
/// holds it.
pub fn removals(
    versions: &[Version],
    current: &str,
    keep: usize,
    bound: &BTreeSet<String>,
) -> Removal {
    let mut others: Vec<&Version> = versions
        .iter()
        .filter(|v| !v.thumbprint.eq_ignore_ascii_case(current))
        .collect();
    others.sort_by(|a, b| {
        b.not_before
            .cmp(&a.not_before)
            .then_with(|| a.thumbprint.cmp(&b.thumbprint))
    });
    let mut out = Removal::default();
    // The current version takes one of the `keep` places.
    for v in others.into_iter().skip(keep.saturating_sub(1)) {
        let thumb = v.thumbprint.to_ascii_uppercase();
        if bound.contains(&thumb) {
            out.kept_bound.push(thumb);
        } else {
            out.remove.push(thumb);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: &str, nb: i64) -> Version {
        Version {
            thumbprint: t.to_owned(),
            not_before: nb,
        }
    }

    #[test]
    fn keeps_the_newest_and_removes_the_rest_oldest_last() {
        let versions = [v("AA", 1), v("CC", 3), v("BB", 2), v("DD", 4)];
        let r = removals(&versions, "DD", 2, &BTreeSet::new());
        assert_eq!(r.remove, ["BB", "AA"]);
        assert!(r.kept_bound.is_empty());
    }

    #[test]
    fn current_counts_even_when_not_newest_and_keep_one_removes_all_others() {
        // A pinned older version is "current": it stays, the others go.
        let versions = [v("AA", 1), v("BB", 2), v("CC", 3)];
        let r = removals(&versions, "aa", 1, &BTreeSet::new());
        assert_eq!(r.remove, ["CC", "BB"]);
    }

    #[test]
    fn a_version_bound_in_http_sys_is_never_removed() {
        let versions = [v("AA", 1), v("BB", 2), v("CC", 3)];
        let bound: BTreeSet<String> = ["AA".to_owned()].into();
        let r = removals(&versions, "CC", 1, &bound);
        assert_eq!(r.remove, ["BB"]);
        assert_eq!(r.kept_bound, ["AA"]);
    }

    #[test]
    fn nothing_beyond_keep_nothing_removed() {
        let versions = [v("AA", 1), v("BB", 2)];
        assert_eq!(
            removals(&versions, "BB", 2, &BTreeSet::new()),
            Removal::default()
        );
        assert_eq!(removals(&[], "BB", 1, &BTreeSet::new()), Removal::default());
    }
}
