//! [`redact`]: passwords out of any text; [`strip_controls`]: terminal control sequences out
//! of text that came from a database.

/// Removes the password from anything that may hold a connection string: URLs
/// (`scheme://user:password@host`), `password=` parameters and keywords, quoted or not.
///
/// A password may hold characters that end a URL's authority early when they are not
/// percent-encoded (`#`, `/`, `?`, `@`, a space), so the user information is taken to run up
/// to the **last** `@` of the line (before the next URL): it may redact more than the
/// password, never less.
pub fn redact(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("://") {
        let (head, tail) = rest.split_at(pos + 3);
        out.push_str(head);
        let line_end = tail.find('\n').unwrap_or(tail.len());
        let end = next_url(&tail[..line_end]).unwrap_or(line_end);
        let segment = &tail[..end];
        match segment.rfind('@') {
            Some(at) => {
                let userinfo = &segment[..at];
                match userinfo.find(':') {
                    Some(colon) => {
                        out.push_str(&userinfo[..colon]);
                        out.push_str(":***");
                    }
                    None => out.push_str(userinfo),
                }
                out.push_str(&segment[at..]);
            }
            None => out.push_str(segment),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    redact_password_params(&out)
}

/// Where the next URL of `text` starts (its scheme): a `scheme://` that follows a space, a
/// quote or a bracket. A `://` inside a password (`user:// pass@`) is not one.
fn next_url(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(found) = text[from..].find("://") {
        let at = from + found;
        let start = text[..at]
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '+' || c == '.' || c == '-'))
            .map_or(0, |i| i + 1);
        let before = text[..start].chars().next_back();
        if start < at && before.is_some_and(|c| c.is_whitespace() || "\"'(<[,;=".contains(c)) {
            return Some(start);
        }
        from = at + 3;
    }
    None
}

/// `password=…` (any case, also `PGPASSWORD=…`): the value up to `&`, whitespace or a quote
/// that closes it, `'…'` and `"…"` values (with backslash escapes) whole.
fn redact_password_params(text: &str) -> String {
    const KEY: &str = "password=";
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.to_ascii_lowercase().find(KEY) {
        let (head, tail) = rest.split_at(pos + KEY.len());
        out.push_str(head);
        let end = match tail.chars().next() {
            Some(quote @ ('\'' | '"')) => {
                let mut escaped = false;
                tail.char_indices()
                    .skip(1)
                    .find(|&(_, c)| {
                        let closes = c == quote && !escaped;
                        escaped = c == '\\' && !escaped;
                        closes
                    })
                    .map_or(tail.len(), |(i, c)| i + c.len_utf8())
            }
            _ => tail.find(|c: char| c == '&' || c.is_whitespace() || c == '"' || c == ',').unwrap_or(tail.len()),
        };
        if end > 0 {
            out.push_str("***");
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// Text from a database (names, messages, log lines) made safe for a terminal: control
/// characters other than newline and tab, and the bidirectional overrides that reorder what
/// a reader sees, are shown escaped (`\u{1b}`) instead of acting on the terminal.
pub fn strip_controls(text: &str) -> std::borrow::Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t') || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.push_str(&c.escape_unicode().to_string());
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every character a password may hold that ends a URL part or quotes a value.
    const NASTY: &[&str] =
        &["se#cr3t", "se/cr3t", "se?cr3t", "se@cr3t", "se cr3t", "se\"cr3t", "se\\cr3t", "se'cr3t", "se:cr3t"];

    #[test]
    fn unencoded_special_characters_never_slip_through() {
        for pw in NASTY {
            for text in [
                format!("error: invalid source URL postgresql://postgres:{pw}@db.example.com:5432/app: invalid port"),
                format!("postgres://u:{pw}@h/db"),
                format!("{{\"msg\":\"connect postgres://u:{pw}@h/db failed\"}}"),
            ] {
                let out = redact(&text);
                assert!(!out.contains(pw), "{pw}: {out}");
                assert!(!out.contains("cr3t"), "{pw}: {out}");
            }
        }
    }

    #[test]
    fn keyword_forms_quoted_or_not() {
        assert_eq!(redact("host=h password=hunter2 user=u"), "host=h password=*** user=u");
        assert_eq!(redact("host=h password='hun ter\\'2' user=u"), "host=h password=*** user=u");
        assert_eq!(redact("PGPASSWORD=hunter2 pg_dump"), "PGPASSWORD=*** pg_dump");
        assert_eq!(
            redact("postgres://h/db?password=x&sslmode=require"),
            "postgres://h/db?password=***&sslmode=require"
        );
        assert_eq!(redact("no url here"), "no url here");
    }

    #[test]
    fn two_urls_on_a_line_are_both_redacted() {
        let out = redact("from postgres://a:one@h1/db to postgresql://b:two@h2/db");
        assert_eq!(out, "from postgres://a:***@h1/db to postgresql://b:***@h2/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        // A `://` inside a password does not start a URL.
        assert_eq!(redact("postgres://a:// x@h/db: boom"), "postgres://a:***@h/db: boom");
    }

    #[test]
    fn controls_and_bidi_overrides_are_escaped() {
        assert_eq!(strip_controls("plain\ttext\n"), "plain\ttext\n");
        assert_eq!(strip_controls("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(strip_controls("x\u{202e}y\u{9b}z\r"), "x\\u{202e}y\\u{9b}z\\u{d}");
    }

    proptest::proptest! {
        #[test]
        fn a_password_in_a_url_never_survives(pw in "[ -~]{4,16}", user in "[a-z]{1,8}") {
            let template = "failed: postgres://USER:PW@host.example/db: boom";
            // A password that holds " x://" reads as a second URL: not covered.
            proptest::prop_assume!(!pw.contains("://") && !template.contains(pw.as_str()) && !pw.contains(user.as_str()));
            let text = template.replace("USER", &user).replace("PW", &pw);
            let out = redact(&text);
            proptest::prop_assert!(!out.contains(&pw), "{out}");
        }
    }
}
