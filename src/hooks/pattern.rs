//! Table-name patterns used by hook options: `*` matches any run of
//! characters (including none); every other character matches itself.

/// Does `text` match `pattern`?
///
/// Works on bytes: since `*` is ASCII and every other pattern byte must match
/// exactly, this agrees with matching by characters for any UTF-8 input.
pub fn matches(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    if p == b"*" {
        return true;
    }
    // Greedy wildcard match, backtracking to the last `*`.
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Does `text` match any of `patterns`?
pub fn any(patterns: &[String], text: &str) -> bool {
    patterns.iter().any(|p| matches(p, text))
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn wildcards() {
        assert!(matches("*", ""));
        assert!(matches("*", "anything"));
        assert!(matches("public*", "public"));
        assert!(matches("public*", "public_users"));
        assert!(!matches("public*", "xpublic"));
        assert!(matches("*:log", "app:log"));
        assert!(matches("a*b*c", "aXXbYYc"));
        assert!(!matches("a*b*c", "aXXbYY"));
        assert!(matches("exact", "exact"));
        assert!(!matches("exact", "exact2"));
        assert!(matches("", ""));
        assert!(!matches("", "x"));
        assert!(matches("表*", "表格"));
    }
}
